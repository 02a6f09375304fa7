"""The user state the service starts from: each user's clicks in the training data, and attributes."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.dataset import dataset_paths
from recsys.features.feature_map import FeatureMap
from serving.store import UserState


def initial_user_states(data_dir: str | Path, feature_map: FeatureMap) -> list[UserState]:
    """Per user: the newest ``max_history`` clicked items (oldest first) and the user attributes.

    The same rule as training's behaviour sequences (recsys.features.sequences), taken at the end of
    the data: clicks ordered by time, ties in file order.
    """
    paths = dataset_paths(Path(data_dir))
    length = feature_map.max_history
    clicks = (
        (
            pl.scan_parquet(paths.interactions)
            .select("user_id", "item_id", "timestamp", "label")
            .filter(pl.col("label") == 1)
            .with_row_index("_row")
            .sort(["user_id", "timestamp", "_row"])
            .group_by("user_id", maintain_order=True)
            .agg(pl.col("item_id").tail(length).alias("history"))
            .collect()
        )
        if length
        else pl.DataFrame({"user_id": [], "history": []}, schema={"user_id": pl.Int64, "history": pl.List(pl.Int64)})
    )
    histories = dict(zip(clicks["user_id"].to_list(), clicks["history"].to_list()))
    names = [f.name for f in feature_map.by("user", "categorical") if f.name != "user_id"]
    attributes: dict[int, dict] = {}
    if paths.users.is_file():
        users = pl.read_parquet(paths.users, columns=["user_id", *names])
        attributes = {row["user_id"]: {n: row[n] for n in names} for row in users.iter_rows(named=True)}
    return [
        UserState(int(u), [int(i) for i in histories.get(u, [])], attributes.get(u, {}))
        for u in sorted(set(histories) | set(attributes))
    ]
