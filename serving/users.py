"""The user state the service starts from: each user's clicks in the training data, and attributes."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.dataset import dataset_paths
from recsys.features.examples import user_attribute_names
from recsys.features.feature_map import FeatureMap
from recsys.features.sequences import latest_clicks
from serving.store import UserState


def initial_user_states(data_dir: str | Path, feature_map: FeatureMap) -> list[UserState]:
    """Per user: the behaviour sequence at the end of the data (:func:`latest_clicks`, the rule training's
    sequences use) and the user attributes."""
    paths = dataset_paths(Path(data_dir))
    interactions = pl.read_parquet(paths.interactions, columns=["user_id", "item_id", "timestamp", "label"])
    histories = latest_clicks(interactions, feature_map.max_history)
    names = user_attribute_names(feature_map)
    attributes: dict[int, dict] = {}
    if paths.users.is_file():
        users = pl.read_parquet(paths.users, columns=["user_id", *names])
        attributes = {row["user_id"]: {n: row[n] for n in names} for row in users.iter_rows(named=True)}
    return [
        UserState(int(u), histories.get(u, []), attributes.get(u, {})) for u in sorted(set(histories) | set(attributes))
    ]
