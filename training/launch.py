"""Launch a training run on Ray: the same code on a laptop's local Ray and on a cluster.

    check inputs (before any Ray worker starts) -> ray.init(address) -> prepare features in a
    Ray task (the driver never loads the table) -> TorchTrainer over Ray Data -> best + latest
    checkpoints under <storage_path>/<run_name>/

Resume: a run name that already exists in the storage path is continued with ``resume=True``
(Ray Train restores the latest reported checkpoint: model, optimizer, epoch/step, RNG).

How the splits reach the workers (see :func:`recsys.cluster.configure_data_context` and :func:`load_split`):

* Parquet is read with Ray Data's V1 Parquet datasource (the V2 one starts 32 footer-reader
  actors on every execution, i.e. every epoch).
* Only the columns the workers use are read (the ``meta_*`` columns stay on disk, except the
  user id that validation needs for GAUC).
* A split whose decoded size fits a budget (``MATERIALIZE_FRACTION`` of the cluster's object
  store, or ``RECSYS_TRAIN_MATERIALIZE_MAX_MB`` MB when set; 0 = always stream) is read from
  Parquet once and kept in Ray's object store for the run: every epoch then iterates blocks in
  memory instead of re-reading files. A larger split streams from Parquet every epoch, so memory
  stays bounded whatever the table size. ``run_training(materialize=True/False)`` forces either.
  The driver holds only object references either way; it never loads the table.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import cluster, console
from recsys.config import ExperimentConfig
from recsys.errors import ConfigError, RecsysError
from recsys.features.prepared import TRAIN_COLUMNS, VALID_COLUMNS, PreparedDir
from training import progress

if TYPE_CHECKING:
    import ray.data
    import ray.train

RUN_INFO = "run.json"
LOG_FILE = "recsys.log"  # Ray's and the libraries' output of the run (recsys.console)

#: Splits up to this fraction of the cluster's object-store memory (train and valid together) are
#: materialised once per run instead of re-read from Parquet every epoch.
MATERIALIZE_FRACTION = 0.25
MATERIALIZE_ENV = "RECSYS_TRAIN_MATERIALIZE_MAX_MB"


class TrainError(RecsysError):
    """A training run cannot start or did not finish."""


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    best_checkpoint: Path
    latest_checkpoint: Path
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    prepared_dir: Path
    splits: dict[str, Any] | None = None  # how the train/valid splits were loaded: materialised or streamed, decoded MB


# --------------------------------------------------------------------------- checks before Ray


def check_storage(storage_path: str) -> Path:
    """The storage path exists or can be created, and is writable (probed with a real file)."""
    if "://" in storage_path:
        return Path(storage_path)  # remote filesystems (s3://, gs://) are checked by Ray itself
    path = Path(storage_path).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"train.storage_path: cannot write to {path} ({exc.strerror or exc})") from None
    return path


def check_inputs(config: ExperimentConfig, data_dir: Path, cache_dir: Path | None, workers: int) -> None:
    """Everything that can be checked cheaply, before Ray starts any worker."""
    from recsys.data.validate import validate_dataset
    from recsys.encoders.pipeline import load_item_vectors

    if workers < 1:
        raise ConfigError(f"train.workers: must be >= 1, got {workers}")
    validate_dataset(data_dir, config).raise_for_errors()
    load_item_vectors(data_dir, config.encoders, cache_dir=cache_dir)  # raises if `recsys encode` is needed


# --------------------------------------------------------------------------- Ray


def init_ray(address: str | None, workers: int) -> None:
    """Connect to a cluster at ``address``, or start a local Ray sized for ``workers``."""
    import ray

    from training.ray_output import WORKER_RUNTIME_ENV, route_worker_output

    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if not ray.is_initialized():
        console.adopt_library_loggers()  # Ray's driver-side loggers: to the log file (training.ray_output)
        # Workers' output reaches the driver (log_to_driver) and goes to the log file, progress
        # events to the console (route_worker_output); WORKER_RUNTIME_ENV quiets the workers.
        # A local Ray gets logical CPUs above the physical count: training workers hold one CPU each
        # for the whole run, and Ray Data's read tasks must still find a CPU to stream the shards.
        cluster.connect(
            address, max(os.cpu_count() or 1, workers + 2), log_to_driver=True, runtime_env=WORKER_RUNTIME_ENV
        )
        route_worker_output(progress.consume)
    cluster.configure_data_context()


def check_gpus(gpus_per_worker: float, workers: int) -> float:
    """``train.gpus_per_worker`` when the connected cluster has that many GPUs for every worker (else a
    ConfigError naming the field: Ray Train would wait for them forever)."""
    import ray

    available = ray.cluster_resources().get("GPU", 0.0)
    if gpus_per_worker * workers > available:
        raise ConfigError(
            f"train.gpus_per_worker: {workers} worker(s) x {gpus_per_worker:g} GPU need "
            f"{gpus_per_worker * workers:g} GPU(s), the Ray cluster has {available:g}"
        )
    return gpus_per_worker


# --------------------------------------------------------------------------- datasets


def materialize_budget() -> int:
    """Bytes of decoded split data that may be pinned in the object store for a run."""
    import ray

    if os.environ.get(MATERIALIZE_ENV, "").strip():
        try:
            return int(float(os.environ[MATERIALIZE_ENV]) * 1024**2)
        except ValueError:
            raise ConfigError(
                f"{MATERIALIZE_ENV}: expected a number of MB, got {os.environ[MATERIALIZE_ENV]!r}"
            ) from None
    return int(MATERIALIZE_FRACTION * ray.cluster_resources().get("object_store_memory", 0))


def load_split(split_dir: Path, columns: list[str], materialize: bool) -> ray.data.Dataset:
    """A Ray dataset over a prepared split: only ``columns``, materialised once or streamed every epoch."""
    import ray

    ds = ray.data.read_parquet(str(split_dir)).select_columns(columns)
    return ds.materialize() if materialize else ds


def training_datasets(prepared_dir: Path, materialize: bool | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``train`` and ``valid`` Ray datasets for TorchTrainer, and how they were loaded (for the log)."""
    prepared = PreparedDir(prepared_dir)
    splits = {"train": list(TRAIN_COLUMNS), "valid": list(VALID_COLUMNS)}
    sizes = {name: prepared.split_nbytes(name) for name in splits}
    if materialize is None:
        known = all(n is not None for n in sizes.values())
        materialize = known and sum(n or 0 for n in sizes.values()) <= materialize_budget()
    datasets = {name: load_split(prepared.split_dir(name), cols, materialize) for name, cols in splits.items()}
    return datasets, {
        "materialized": materialize,
        "decoded_mb": {k: None if v is None else round(v / 1024**2, 1) for k, v in sizes.items()},
    }


def _prepare_remote(config_dict: dict[str, Any], data_dir: str, cache_dir: str | None, out_dir: str) -> dict[str, int]:
    """Runs as a Ray task: featurise the dataset and write Parquet shards for the workers."""
    from recsys.features.prepare import prepare_data

    config = ExperimentConfig.model_validate(config_dict)
    return PreparedDir(out_dir).write(prepare_data(config, data_dir, cache_dir, validate=False))


def prepare_features(config: ExperimentConfig, data_dir: Path, cache_dir: Path | None, out_dir: Path) -> dict[str, int]:
    """Prepare features on the cluster unless they are already there: interactions of at least
    ``prepare.ray_min_rows`` rows by the distributed Ray Data job, smaller ones in one Ray task."""
    import ray

    from recsys.features.prepare_on_ray import interaction_rows, partitions_for, prepare_on_ray

    prepared = PreparedDir(out_dir)
    if prepared.is_complete():
        return prepared.counts()
    rows = interaction_rows(data_dir)
    if rows >= config.prepare.ray_min_rows:
        partitions = partitions_for(rows, config.prepare.rows_per_partition)
        print(f"preparing features on Ray Data: {rows:,} interactions in {partitions} user partitions", flush=True)
        done = prepare_on_ray(config, data_dir, cache_dir, out_dir, partitions)
        where = ", ".join(f"{node[:8]} {n}" for node, n in sorted(done.partitions_per_node.items()))
        print(
            f"features prepared on {len(done.partitions_per_node)} node(s) (partitions per node: {where})", flush=True
        )
        return done.counts
    task = ray.remote(num_cpus=1)(_prepare_remote)
    counts = ray.get(
        task.remote(
            config.model_dump(mode="json"),
            str(data_dir.resolve()),
            str(cache_dir.resolve()) if cache_dir else None,
            str(out_dir),
        )
    )
    return counts


def run_training(
    config: ExperimentConfig,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    address: str | None = None,
    workers: int | None = None,
    run_name: str | None = None,
    resume: bool = False,
    loop_options: Mapping[str, Any] | None = None,
    materialize: bool | None = None,
    prepared: PreparedDir | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train ``config.model`` with Ray Train; see the module docstring.

    ``prepared``: features already prepared from this config and dataset (e.g. shared by several
    runs, as the benchmarks do): the workers read them where they are, instead of ``<run>/prepared``.

    ``loop_options``: how the training loop runs (:class:`training.loop.LoopOptions`: threads per
    worker, prefetching, progress lines, a per-step callback). ``materialize``: keep the
    train/valid splits in Ray's object store for the whole run (True), stream them from Parquet
    every epoch (False), or decide by their size (None, the default). ``show_progress``: a progress
    bar per epoch and one line per validated epoch on the console (:mod:`training.progress`).

    Ray's and the libraries' output goes to ``<run>/recsys.log`` unless the command already keeps a
    log file (:func:`recsys.console.attach_log_file`).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from training.loop import LoopOptions, train_loop_per_worker

    options = LoopOptions.from_mapping(loop_options or {})
    workers = config.train.workers if workers is None else workers
    address = address or config.train.address
    data_dir = Path(data_dir or config.data.path)
    cache_dir = (
        Path(cache_dir) if cache_dir else (Path(config.encoders.cache_dir) if config.encoders.cache_dir else None)
    )
    storage = check_storage(config.train.storage_path)
    run_name = run_name or f"{config.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = storage / run_name
    if run_dir.exists() and not resume:
        raise TrainError(
            f"run '{run_name}' already exists in {storage}: pass --resume to continue it, or another --run-name"
        )
    if resume and not (run_dir / RUN_INFO).is_file():
        raise TrainError(f"--resume: no run '{run_name}' in {storage} (nothing to resume)")
    check_inputs(config, data_dir, cache_dir, workers)

    init_ray(address, workers)
    gpus = check_gpus(config.train.gpus_per_worker, workers)
    run_dir.mkdir(parents=True, exist_ok=True)
    console.attach_log_file(run_dir / LOG_FILE)
    (run_dir / RUN_INFO).write_text(
        json.dumps(
            {
                "run_name": run_name,
                "config": config.model_dump(mode="json"),
                "data_dir": str(data_dir.resolve()),
                "workers": workers,
            },
            indent=1,
        )
    )
    if prepared is not None:
        if not prepared.is_complete():
            raise TrainError(f"{prepared.path}: not a complete prepared-features directory")
        prepared_dir, counts = prepared.path, prepared.counts()
    else:
        prepared_dir = PreparedDir.of_run(run_dir).path
        counts = prepare_features(config, data_dir, cache_dir, prepared_dir)
    if counts["valid"] == 0:
        raise TrainError("the validation split is empty: early stopping and model selection need it (data.split)")

    t = time.perf_counter()
    datasets, how = training_datasets(prepared_dir, materialize)
    sizes = ", ".join(f"{k} {'?' if v is None else v} MB" for k, v in how["decoded_mb"].items())
    print(
        f"features: {counts['train']:,} train / {counts['valid']:,} valid / {counts['test']:,} test rows in "
        f"{prepared_dir}; train/valid ({sizes} decoded) "
        + ("materialised in the object store" if how["materialized"] else "streamed from Parquet every epoch")
        + f" ({time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "experiment": config.model_dump(mode="json"),
            "prepared_dir": str(prepared_dir),
            # one copy per node: the workers of a node map the object store's copy (zero-copy numpy)
            "item_table": [ray.put(PreparedDir(prepared_dir).load_item_table())],
            "options": options,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": 1, **({"GPU": gpus} if gpus > 0 else {})},
            placement_strategy=config.train.placement_strategy,
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(
            name=f"{run_name}",
            storage_path=str(storage / run_name / "ray"),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_auc", checkpoint_score_order="max"
            ),
            failure_config=ray.train.FailureConfig(max_failures=config.train.max_failures),
        ),
    )
    steps = progress.steps_per_epoch(counts["train"], workers, config.train.batch_size)
    try:
        with progress.TrainProgress(steps, enabled=show_progress):
            result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors in several exception types
        raise TrainError(f"training run '{run_name}' failed: {type(exc).__name__}: {exc}") from exc
    if result.error is not None:
        raise TrainError(f"training run '{run_name}' failed: {result.error}")
    return _finish(run_dir, result, prepared_dir, how)


def _finish(run_dir: Path, result: ray.train.Result, prepared_dir: Path, splits: dict[str, Any]) -> TrainResult:
    """Copy the best and the latest checkpoint to stable names: <run>/best and <run>/latest."""
    from recsys.checkpoint import store_item_table

    latest = result.checkpoint
    if not result.best_checkpoints or latest is None:
        raise TrainError(f"training run '{run_dir.name}' finished without reporting a checkpoint")
    ranked = sorted(result.best_checkpoints, key=lambda cm: cm[1].get("val_auc", float("-inf")))
    best_ckpt, best_metrics = ranked[-1]
    for name, ckpt in (("best", best_ckpt), ("latest", latest)):
        target = run_dir / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ckpt.path, target)
        store_item_table(target)  # self-contained: the run's one item table, hard-linked where possible
    import torch

    from training.state import STATE_FILE

    history = torch.load(run_dir / "latest" / STATE_FILE, weights_only=True)["state"]["history"]
    return TrainResult(run_dir, run_dir / "best", run_dir / "latest", dict(best_metrics), history, prepared_dir, splits)
