"""Dataset directory -> everything a model needs, for training and offline evaluation.

validate -> read -> split -> fit the feature map on train -> item table from cached encoder
vectors -> examples (behaviour sequences, indices) for every split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from recsys.config import ExperimentConfig
from recsys.data.dataset import dataset_paths
from recsys.data.validate import validate_dataset
from recsys.errors import DatasetError
from recsys.features.examples import Examples, build_examples
from recsys.features.feature_map import FeatureMap, TrainCounts, feature_map_from_counts
from recsys.features.item_table import ItemTable, build_item_table
from recsys.features.splits import assign_splits

if TYPE_CHECKING:
    from recsys.checkpoint import Checkpoint


@dataclass
class PreparedData:
    """A dataset turned into model inputs under one experiment config."""

    config: ExperimentConfig
    feature_map: FeatureMap
    item_table: ItemTable
    examples: Examples  # every split; use .split("train") etc.
    users: pl.DataFrame | None


def read_interactions(data_dir: Path, config: ExperimentConfig) -> pl.DataFrame:
    """interactions.parquet with a ``split`` column, rows in a stable (user, time) order."""
    paths = dataset_paths(data_dir)
    frame = pl.read_parquet(paths.interactions)
    frame = assign_splits(frame, config.data.split)
    if frame.filter(pl.col("split") == "train").height == 0:
        raise DatasetError(f"{paths.interactions}: no training rows after splitting (data.split)")
    return frame


def prepare_data(
    config: ExperimentConfig,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    validate: bool = True,
) -> PreparedData:
    """Read, validate and featurise a dataset; item vectors come from the encode cache.

    Run ``recsys encode`` first (or :func:`recsys.encoders.pipeline.encode_items`).
    """
    from recsys.encoders.pipeline import load_item_vectors

    data_dir = Path(data_dir or config.data.path)
    if validate:
        validate_dataset(data_dir, config).raise_for_errors()
    paths = dataset_paths(data_dir)
    items = pl.read_parquet(paths.items)
    users = pl.read_parquet(paths.users) if paths.users.is_file() else None
    interactions = read_interactions(data_dir, config)
    train = interactions.filter(pl.col("split") == "train")
    counts = TrainCounts.of(train, config.features)  # what the distributed job merges across partitions
    feature_map = feature_map_from_counts(counts, items, users, config.features)
    vectors = load_item_vectors(data_dir, config.encoders, cache_dir=Path(cache_dir) if cache_dir else None)
    item_table = build_item_table(
        items,
        feature_map,
        vectors,
        content_dim=config.features.content_dim,
        train_rows=counts.rows_per_value("item_id"),
    )
    examples = build_examples(interactions, users, feature_map, item_table)
    return PreparedData(config, feature_map, item_table, examples, users)


def prepare_with(checkpoint: Checkpoint, data_dir: str | Path, validate: bool = True) -> Examples:
    """Featurise a dataset directory with a checkpoint's feature map and item table (nothing is refitted).

    Every split of the interactions is built (a test row's history may hold earlier splits' clicks);
    pick one with ``.split(name)``. Item content comes from the checkpoint's item table, so every
    item id of the interactions must be in it: unknown ids raise a DatasetError naming them.
    """
    data_dir = Path(data_dir)
    if validate:
        validate_dataset(data_dir, checkpoint.config).raise_for_errors()
    paths = dataset_paths(data_dir)
    interactions = assign_splits(pl.read_parquet(paths.interactions), checkpoint.config.data.split)
    known = pl.Series(checkpoint.item_table.item_ids)
    unknown = interactions.filter(~pl.col("item_id").is_in(known.implode()))["item_id"].unique().sort()
    if len(unknown):
        raise DatasetError(
            f"{paths.interactions}: {len(unknown)} item id(s) unknown to the checkpoint's item table "
            f"({checkpoint.path / 'item_table.pt'}): {unknown.head(10).to_list()}"
            f"{' ...' if len(unknown) > 10 else ''}; a checkpoint scores only the items it was trained with "
            "(their content vectors live in its item table)"
        )
    users = pl.read_parquet(paths.users) if paths.users.is_file() else None
    return build_examples(interactions, users, checkpoint.feature_map, checkpoint.item_table)
