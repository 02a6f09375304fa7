"""Feature preparation as a distributed job on Ray Data, for interactions too big for one process.

The same examples as :func:`recsys.features.prepare.prepare_data`, built where the rows lie:

1. **Partition by user.** The interactions are read as a Ray Dataset, each row gets the partition of
   its user (a hash of ``user_id``), and ``groupby(partition).map_groups`` hands every partition, all
   of its users' rows together, to one task. It assigns the splits (a user's rows are all there, so
   a per-user time split is the one of the whole table), writes the partition's rows with their
   split to a scratch Parquet file and returns the training rows' :class:`TrainCounts`.
2. **Fit.** The driver merges the counts (vocabulary-sized, not row-sized) into the feature map and
   builds the item table from the catalogue and the encode cache, as the single-process path does.
3. **Examples.** One Ray Data task per partition builds the partition's examples (behaviour
   sequences need only the user's own rows) and writes them as that partition's Parquet part of
   every split; the driver writes the row counts last, which marks the directory complete.

No process holds the whole interactions table or all examples: the driver holds the catalogue, the
users table and the vocabularies; a task one partition. Rows are read row group by row group with
their index in the whole table, and a partition's rows are put back in that order: behaviour
sequences break ties in time by it, as the single-process path does, whatever order the shuffle
delivers them in.
"""

from __future__ import annotations

import math
import pickle
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recsys import cluster
from recsys.config import ExperimentConfig
from recsys.data.dataset import SPLITS, dataset_paths
from recsys.errors import DatasetError
from recsys.features.examples import build_examples
from recsys.features.feature_map import FeatureMap, TrainCounts, feature_map_from_counts
from recsys.features.item_table import ItemTable, build_item_table
from recsys.features.prepared import PreparedDir, examples_frame
from recsys.features.splits import assign_splits

#: The column of a row's user partition while the job runs (never written to the prepared directory).
PARTITION = "_partition"
#: The column of a row's index in the whole interactions table (ties in time keep the single-process order).
ROW = "_row"
#: Scratch directory (inside the prepared directory being written) of the partitions' rows with their split.
SCRATCH = ".partitions"


@dataclass
class PreparedOnRay:
    """What :func:`prepare_on_ray` wrote and where it ran."""

    counts: dict[str, int]  # rows per split
    partitions: int
    partitions_per_node: dict[str, int]  # Ray node id -> user partitions whose examples it built


def _parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a table stored as one file or as a directory of parts, in read order."""
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def interaction_rows(data_dir: str | Path) -> int:
    """Rows of a dataset's interactions, from the Parquet footers (nothing is read)."""
    files = _parquet_files(dataset_paths(Path(data_dir)).interactions)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def partitions_for(rows: int, rows_per_partition: int) -> int:
    """User partitions for ``rows`` interactions: about ``rows_per_partition`` rows each, at least 2."""
    return max(2, math.ceil(rows / rows_per_partition))


def _fragments(path: Path) -> list[dict[str, Any]]:
    """The interactions' Parquet row groups, in the order a single-process read sees the rows: (file, row
    group, index of its first row in the whole table)."""
    files = _parquet_files(path)
    out, offset = [], 0
    for file in files:
        meta = pq.ParquetFile(file).metadata
        for group in range(meta.num_row_groups):
            out.append({"path": str(file.resolve()), "row_group": group, "offset": offset})
            offset += meta.row_group(group).num_rows
    return out


def _read_fragment(fragment: pa.Table, partitions: int) -> pa.Table:
    """One row group's rows, with their row index in the whole table and their user partition."""
    (where,) = fragment.to_pylist()
    frame = pl.from_arrow(pq.ParquetFile(where["path"]).read_row_group(where["row_group"]))
    assert isinstance(frame, pl.DataFrame)
    part = (frame["user_id"].cast(pl.String).hash(seed=0) % partitions).cast(pl.Int32)
    return frame.with_columns(
        pl.int_range(where["offset"], where["offset"] + frame.height, dtype=pl.Int64).alias(ROW),
        part.alias(PARTITION),
    ).to_arrow()


def _split_partition(batch: pa.Table, config: ExperimentConfig, scratch: str) -> pa.Table:
    """One user partition: splits assigned, rows in a fixed order, written to ``scratch``; its TrainCounts back."""
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    partition = int(frame[PARTITION][0])
    frame = assign_splits(frame.sort(ROW).drop(PARTITION, ROW), config.data.split)  # the table's row order
    frame.write_parquet(Path(scratch) / f"partition-{partition:05d}.parquet")
    counts = TrainCounts.of(frame.filter(pl.col("split") == "train"), config.features)
    return pa.table({"partition": [partition], "counts": [pickle.dumps(counts)]})


class _ExamplesWriter:
    """Builds one partition's examples and writes them as its part of every split."""

    def __init__(self, inputs: list[Any], out_dir: str) -> None:
        import ray

        self.users, self.feature_map, self.item_table = ray.get(inputs[0])  # one object-store copy per node
        self.prepared = PreparedDir(out_dir)
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        path = Path(row["path"])
        interactions = pl.read_parquet(path)
        examples = build_examples(interactions, self.users, self.feature_map, self.item_table)
        rows = {}
        for split in SPLITS:
            part = examples.split(split)
            rows[split] = len(part)
            if len(part):
                self.prepared.write_part(split, examples_frame(part), path.stem)
        return {"path": row["path"], "node_id": self.node_id, **rows}


def prepare_on_ray(
    config: ExperimentConfig,
    data_dir: str | Path,
    cache_dir: str | Path | None,
    out_dir: str | Path,
    partitions: int,
) -> PreparedOnRay:
    """Write the prepared-features directory ``out_dir`` of a dataset with Ray Data, ``partitions`` user
    partitions at a time; returns rows per split and where the partitions ran. Runs on the Ray this
    process is connected to.

    ``out_dir`` must be on storage every node sees. The dataset is assumed validated.
    """
    import ray
    import ray.data

    from recsys.encoders.pipeline import load_item_vectors

    cluster.configure_data_context()
    data_dir, prepared = Path(data_dir), PreparedDir(out_dir)
    paths = dataset_paths(data_dir)
    scratch = prepared.path / SCRATCH
    shutil.rmtree(prepared.path, ignore_errors=True)  # an unfinished earlier attempt
    scratch.mkdir(parents=True)

    fragments = _fragments(paths.interactions)
    rows = ray.data.from_items(fragments, override_num_blocks=len(fragments)).map_batches(
        partial(_read_fragment, partitions=partitions), batch_size=1, batch_format="pyarrow"
    )
    split_job = rows.groupby(PARTITION, num_partitions=partitions).map_groups(
        partial(_split_partition, config=config, scratch=str(scratch)), batch_format="pyarrow"
    )
    parts = [pickle.loads(row["counts"]) for row in split_job.iter_rows()]  # one small row per partition
    if not parts:
        raise DatasetError(f"{paths.interactions}: no rows to prepare")
    counts = TrainCounts.merge(parts)
    if counts.values["user_id"].height == 0:
        raise DatasetError(f"{paths.interactions}: no training rows after splitting (data.split)")

    items = pl.read_parquet(paths.items)
    users = pl.read_parquet(paths.users) if paths.users.is_file() else None
    feature_map = feature_map_from_counts(counts, items, users, config.features)
    vectors = load_item_vectors(data_dir, config.encoders, cache_dir=Path(cache_dir) if cache_dir else None)
    item_table = build_item_table(
        items,
        feature_map,
        vectors,
        content_dim=config.features.content_dim,
        train_rows=counts.rows_per_value("item_id"),
    )
    prepared.write_tables(feature_map, item_table)
    written, nodes = _write_examples(scratch, users, feature_map, item_table, prepared)
    shutil.rmtree(scratch)
    prepared.write_counts(written)
    return PreparedOnRay(written, partitions, nodes)


def _write_examples(
    scratch: Path, users: pl.DataFrame | None, feature_map: FeatureMap, item_table: ItemTable, prepared: PreparedDir
) -> tuple[dict[str, int], dict[str, int]]:
    """Every partition's examples written as its part of each split (one Ray Data task per partition);
    returns rows per split and partitions per Ray node."""
    import ray
    import ray.data

    files = sorted(str(p) for p in scratch.glob("partition-*.parquet"))
    inputs = ray.put((users, feature_map, item_table))
    job = ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files)).map(
        _ExamplesWriter,  # type: ignore[arg-type]  # a callable class: Ray's stubs name only functions
        fn_constructor_kwargs={"inputs": [inputs], "out_dir": str(prepared.path)},  # a list: not resolved by Ray
        # a fixed pool, one actor per CPU up to one per partition, spread over the nodes, a partition at a time
        compute=cluster.one_block_per_actor(max(1, min(len(files), int(ray.cluster_resources().get("CPU", 1))))),
    )
    totals, nodes = dict.fromkeys(SPLITS, 0), dict[str, int]()
    for row in job.iter_rows():
        for split in SPLITS:
            totals[split] += int(row[split])
        nodes[row["node_id"]] = nodes.get(row["node_id"], 0) + 1
    for split in SPLITS:  # a split no partition has rows of: one empty part, as the single-process writer leaves
        if not prepared.has_split(split):
            template = next(p for s in SPLITS for p in sorted(prepared.split_dir(s).glob("*.parquet")))
            prepared.write_part(split, pl.read_parquet(template).head(0), "part-00000")
    return totals, nodes
