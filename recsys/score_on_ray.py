"""Scoring a prepared split on Ray Data, for splits too big for one process (``recsys evaluate``, ``compare``).

The split's Parquet parts (``<run>/prepared/<split>``, on storage every node sees) are read as a Ray
Dataset; ``map_batches`` runs :class:`ScoringActor` over a pool of ``evaluation.actors`` actors, each
loading the checkpoint once (verified, as everywhere) and turning blocks of examples into the scored
rows of :class:`recsys.features.predict.RowScorer`. The driver gathers only those rows (a few numbers each,
not the behaviour sequences) and computes the metrics from them, as for a split scored in process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from recsys import cluster
from recsys.config import EvaluationConfig

#: CPUs left beside the scoring pool for the tasks that read the split's Parquet parts (none: they wait forever).
READ_CPUS = 1


class ScoringActor:
    """The callable class of the scoring pool: one checkpoint loaded per actor, blocks in, scored rows out."""

    def __init__(self, checkpoint_dir: str, forward_rows: int, threads: int, use_gpu: bool) -> None:
        import ray
        import torch

        from recsys.checkpoint import load_checkpoint
        from recsys.features.predict import RowScorer

        torch.set_num_threads(threads)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.scorer = RowScorer(load_checkpoint(checkpoint_dir), forward_rows, "cuda" if use_gpu else "cpu")

    def __call__(self, batch: pa.Table) -> pa.Table:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)  # a table in, a frame out
        return cluster.with_node_column(self.scorer(frame).to_arrow(), self.node_id)


@dataclass
class ScoredSplit:
    """The scored rows of a split and how many of them each Ray node scored."""

    rows: pl.DataFrame
    rows_per_node: dict[str, int]


def score_split_on_ray(
    checkpoint_dir: str | Path, split_dir: str | Path, settings: EvaluationConfig, address: str | None = None
) -> ScoredSplit:
    """Score every row of a prepared split directory over a pool of ``settings.actors`` scoring actors.

    Uses the Ray this process is connected to, else the cluster at ``address``, else a new local Ray
    for the call. A pool the cluster cannot hold is a ConfigError naming the ``evaluation`` field;
    what an actor raised (a corrupt checkpoint) is re-raised here as one line.
    """
    import ray.data

    pool = (settings.actors, settings.cpus_per_actor, settings.gpus_per_actor)
    cpus = math.ceil(settings.actors * settings.cpus_per_actor) + READ_CPUS
    with cluster.ray_session(address, cpus, log_to_driver=False):  # an actor's error comes back as the exception
        cluster.check_actor_pool("evaluation", *pool, spare_cpus=READ_CPUS)
        ds = cluster.map_on_actor_pool(
            ray.data.read_parquet(str(Path(split_dir).resolve())),
            ScoringActor,
            *pool,
            batch_size=settings.batch_size,
            checkpoint_dir=str(Path(checkpoint_dir).resolve()),
            forward_rows=settings.batch_size,
        )
        batches = list(cluster.iter_tables(ds))
    tables = [t for t in batches if isinstance(t, pa.Table)]  # batch_format="pyarrow": tables only
    rows = [table.drop_columns([cluster.NODE_COLUMN]) for table in tables]
    frame = pl.from_arrow(pa.concat_tables(rows)) if rows else pl.DataFrame()
    assert isinstance(frame, pl.DataFrame)
    return ScoredSplit(frame, cluster.rows_per_node(tables))
