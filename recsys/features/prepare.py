"""Dataset directory -> everything a model needs: the one path for training, evaluation and serving.

validate -> read -> split -> fit the feature map on train -> item table from cached encoder
vectors -> examples (behaviour sequences, indices) for every split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.config import ExperimentConfig
from recsys.data.dataset import dataset_paths
from recsys.data.validate import validate_dataset
from recsys.errors import DatasetError
from recsys.features.examples import Examples, build_examples
from recsys.features.feature_map import FeatureMap, fit_feature_map
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
    feature_map = fit_feature_map(train, items, users, config.features)
    vectors = load_item_vectors(data_dir, config.encoders, cache_dir=Path(cache_dir) if cache_dir else None)
    item_table = build_item_table(items, feature_map, vectors)
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


#: Files of a prepared-data directory (what Ray workers read).
PREPARED_FEATURE_MAP = "feature_map.json"
PREPARED_ITEM_TABLE = "item_table.pt"


def examples_frame(examples: Examples) -> pl.DataFrame:
    """Examples as one Parquet-ready frame: 2-D arrays become fixed-size list columns."""
    columns = {}
    for key, arr in examples.arrays.items():
        if arr.ndim == 2:
            dtype = {np.dtype(np.int64): pl.Int64, np.dtype(np.bool_): pl.Boolean, np.dtype(np.float32): pl.Float32}[
                arr.dtype
            ]
            columns[key] = (
                pl.Series(key, arr, dtype=pl.Array(dtype, max(arr.shape[1], 1)))
                if arr.shape[1]
                else pl.Series(key, np.zeros((len(arr), 1), dtype=arr.dtype), dtype=pl.Array(dtype, 1))
            )
        else:
            columns[key] = pl.Series(key, arr)
    meta = examples.meta.drop("split").rename({c: f"meta_{c}" for c in examples.meta.columns if c != "split"})
    return pl.DataFrame(columns).hstack(meta)


def write_prepared(prepared: PreparedData, out_dir: str | Path, rows_per_file: int = 100_000) -> dict[str, int]:
    """Write the feature map, item table and one directory of Parquet files per split.

    Returns the number of rows per split. Empty 2-D fields (e.g. no numeric context) are stored
    one column wide and ignored by the model, which knows their real width from the feature map.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared.feature_map.save(out / PREPARED_FEATURE_MAP)
    prepared.item_table.save(out / PREPARED_ITEM_TABLE)
    counts = {}
    for split in ("train", "valid", "test"):
        part = prepared.examples.split(split)
        counts[split] = len(part)
        split_dir = out / split
        split_dir.mkdir(exist_ok=True)
        frame = examples_frame(part)
        for i, start in enumerate(range(0, max(frame.height, 1), rows_per_file)):
            frame.slice(start, rows_per_file).write_parquet(split_dir / f"part-{i:05d}.parquet")
    return counts
