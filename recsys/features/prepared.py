"""The prepared-features directory: the only code that knows its files.

A training run writes it once (``<run>/prepared``); Ray workers, evaluation, benchmarks and the
peer exporters read it::

    feature_map.json   vocabularies and normalisation fitted on train
    item_table.pt      every item's model inputs
    train/ valid/ test/  Parquet parts, one row per example: the batch fields (2-D fields as
                       fixed-size lists, at least one wide) and ``meta_*`` columns for evaluation
    counts.json        rows per split; written last, so its presence means the directory is complete
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.dataset import SPLITS
from recsys.errors import RecsysError
from recsys.features.batch import BATCH_FIELDS
from recsys.features.examples import Examples
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemTable
from recsys.features.prepare import PreparedData

_POLARS_DTYPES = {np.dtype(np.int64): pl.Int64, np.dtype(np.bool_): pl.Boolean, np.dtype(np.float32): pl.Float32}


def meta_column(name: str) -> str:
    """The prepared column of the examples' metadata column ``name`` (``user_id`` -> ``meta_user_id``)."""
    return f"meta_{name}"


#: Prepared columns evaluation and validation read besides the batch fields.
META_USER_ID, META_ITEM_ID = meta_column("user_id"), meta_column("item_id")
META_IS_COLD, META_IS_COLD_USER, META_TRUE_PROB = (
    meta_column("is_cold"),
    meta_column("is_cold_user"),
    meta_column("true_prob"),
)


def examples_frame(examples: Examples) -> pl.DataFrame:
    """Examples as one Parquet-ready frame: 2-D arrays become fixed-size list columns (at least one wide),
    metadata columns are prefixed ``meta_`` (the split column is dropped)."""
    columns = {}
    for key, arr in examples.arrays.items():
        if arr.ndim == 2:
            dtype = _POLARS_DTYPES[arr.dtype]
            stored = arr if arr.shape[1] else np.zeros((len(arr), 1), dtype=arr.dtype)
            columns[key] = pl.Series(key, stored, dtype=pl.Array(dtype, stored.shape[1]))
        else:
            columns[key] = pl.Series(key, arr)
    meta = examples.meta.drop("split").rename({c: meta_column(c) for c in examples.meta.columns if c != "split"})
    return pl.DataFrame(columns).hstack(meta)


class PreparedDir:
    """A prepared-features directory (see the module docstring)."""

    FEATURE_MAP = "feature_map.json"
    ITEM_TABLE = "item_table.pt"
    COUNTS = "counts.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"PreparedDir({str(self.path)!r})"

    @classmethod
    def of_run(cls, run_dir: str | Path) -> PreparedDir:
        """The prepared features of a training run directory: ``<run>/prepared``."""
        return cls(Path(run_dir) / "prepared")

    @classmethod
    def beside_checkpoint(cls, checkpoint_dir: str | Path) -> PreparedDir:
        """The prepared features of the run a checkpoint belongs to (``<run>/best`` -> ``<run>/prepared``)."""
        return cls.of_run(Path(checkpoint_dir).resolve().parent)

    # ---------------------------------------------------------------- paths
    @property
    def feature_map_path(self) -> Path:
        return self.path / self.FEATURE_MAP

    @property
    def item_table_path(self) -> Path:
        return self.path / self.ITEM_TABLE

    def split_dir(self, split: str) -> Path:
        """The directory of one split's Parquet parts."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
        return self.path / split

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has Parquet parts."""
        directory = self.split_dir(split)
        return directory.is_dir() and any(directory.glob("*.parquet"))

    # ---------------------------------------------------------------- writing
    def is_complete(self) -> bool:
        """Whether a writer finished this directory (:meth:`write` writes the counts last)."""
        return (self.path / self.COUNTS).is_file()

    def write(self, prepared: PreparedData, rows_per_file: int = 100_000) -> dict[str, int]:
        """Write the feature map, item table and every split's Parquet parts; returns rows per split.

        Empty 2-D fields (e.g. no numeric context) are stored one column wide and ignored by the model,
        which knows their real width from the feature map (:func:`recsys.features.batch.field_widths`).
        """
        self.write_tables(prepared.feature_map, prepared.item_table)
        counts = {}
        for split in SPLITS:
            part = prepared.examples.split(split)
            counts[split] = len(part)
            frame = examples_frame(part)
            for i, start in enumerate(range(0, max(frame.height, 1), rows_per_file)):
                self.write_part(split, frame.slice(start, rows_per_file), f"part-{i:05d}")
        self.write_counts(counts)
        return counts

    def write_tables(self, feature_map: FeatureMap, item_table: ItemTable) -> None:
        """The feature map and the item table (the first files of a directory being written)."""
        self.path.mkdir(parents=True, exist_ok=True)
        feature_map.save(self.feature_map_path)
        item_table.save(self.item_table_path)

    def write_part(self, split: str, frame: pl.DataFrame, name: str) -> Path:
        """One Parquet part of a split (an :func:`examples_frame`), atomically: a reader never sees half."""
        directory = self.split_dir(split)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.parquet"
        tmp = directory / f".{name}.parquet.tmp"
        frame.write_parquet(tmp)
        tmp.replace(path)
        return path

    def write_counts(self, counts: dict[str, int]) -> None:
        """Rows per split: written last, it marks the directory complete (:meth:`is_complete`)."""
        (self.path / self.COUNTS).write_text(json.dumps(counts), encoding="utf-8")

    def link_copy(self, destination: str | Path, train_repeats: int = 1) -> PreparedDir:
        """A copy at ``destination`` made of hard links (no data copied), with the train split's Parquet
        parts linked ``train_repeats`` times: ``train_repeats`` x the training rows, the same file and
        row-group sizes (valid and test unchanged). For benchmarks that scale the data."""
        import os
        import shutil

        copy = PreparedDir(destination)
        copy.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.path, copy.path, copy_function=os.link)
        if train_repeats > 1:
            parts = sorted(self.split_dir("train").glob("*.parquet"))
            for k in range(1, train_repeats):
                for part in parts:
                    os.link(part, copy.split_dir("train") / f"rep{k:02d}-{part.name}")
            counts = self.counts()
            (copy.path / self.COUNTS).unlink()  # a link to ours: replaced, not written through
            (copy.path / self.COUNTS).write_text(json.dumps({**counts, "train": counts["train"] * train_repeats}))
        return copy

    # ---------------------------------------------------------------- reading
    def counts(self) -> dict[str, int]:
        """Rows per split, as written."""
        try:
            return {k: int(v) for k, v in json.loads((self.path / self.COUNTS).read_text(encoding="utf-8")).items()}
        except (OSError, ValueError) as exc:
            raise RecsysError(
                f"{self.path / self.COUNTS}: prepared features incomplete or unreadable ({exc})"
            ) from None

    def load_feature_map(self) -> FeatureMap:
        return FeatureMap.load(self.feature_map_path)

    def load_item_table(self) -> ItemTable:
        return ItemTable.load(self.item_table_path)

    def read_split(self, split: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """One split as a frame (all columns, or ``columns``); a missing split is a RecsysError naming it."""
        if not self.has_split(split):
            raise RecsysError(
                f"{self.split_dir(split)}: no prepared {split!r} split (Parquet files) found; it is written by "
                "`recsys train` (<run>/prepared/<split>)"
            )
        return pl.read_parquet(self.split_dir(split), columns=list(columns) if columns is not None else None)

    def split_nbytes(self, split: str) -> int | None:
        """Decoded (uncompressed) size of a split from its Parquet footers; None if unknown."""
        try:
            import pyarrow.parquet as pq

            total = 0
            for path in sorted(self.split_dir(split).glob("*.parquet")):
                meta = pq.ParquetFile(path).metadata
                total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            return total
        except (OSError, ValueError, ImportError):
            return None


#: Columns training reads from a split: the batch fields (and the user id validation needs for GAUC).
TRAIN_COLUMNS: tuple[str, ...] = tuple(BATCH_FIELDS)
VALID_COLUMNS: tuple[str, ...] = (*BATCH_FIELDS, META_USER_ID)
