"""Train/valid/test splits of the interactions."""

from __future__ import annotations

import polars as pl

from recsys.config import SplitConfig
from recsys.data.dataset import SPLITS

#: Order of the splits in time: a row may only see behaviour from its own split or earlier ones.
SPLIT_RANK = {name: rank for rank, name in enumerate(SPLITS)}


def assign_splits(interactions: pl.DataFrame, config: SplitConfig) -> pl.DataFrame:
    """Return ``interactions`` with a ``split`` column (train/valid/test).

    ``method: column`` keeps the dataset's own column; ``time`` splits each user's rows by time
    (the newest ``test_fraction`` to test, the ``valid_fraction`` before them to valid, at least
    one training row per user); ``auto`` picks the column when present.
    """
    method = config.method
    if method == "auto":
        method = "column" if "split" in interactions.columns else "time"
    if method == "column":
        if "split" not in interactions.columns:
            from recsys.errors import DatasetError

            raise DatasetError("interactions.parquet[split]: missing column, needed by data.split.method: column")
        return interactions
    n = pl.len().over("user_id")
    rank = pl.int_range(pl.len()).over("user_id")  # 0 = oldest, after sorting by time
    n_test = (n * config.test_fraction).floor().cast(pl.Int64)
    n_valid = (n * config.valid_fraction).floor().cast(pl.Int64)
    # Users with very few rows keep them all in train rather than losing their only example.
    n_test = pl.when(n - n_test >= 1).then(n_test).otherwise(0)
    n_valid = pl.when(n - n_test - n_valid >= 1).then(n_valid).otherwise(0)
    split = (
        pl.when(rank >= n - n_test)
        .then(pl.lit("test"))
        .when(rank >= n - n_test - n_valid)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return (
        interactions.with_row_index("_row")
        .sort(["user_id", "timestamp", "item_id", "_row"])
        .with_columns(split.alias("split"))
        .sort("_row")
        .drop("_row")
    )
