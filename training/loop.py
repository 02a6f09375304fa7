"""``train_loop_per_worker``: the only code that runs inside Ray Train workers.

Each worker streams its shard of the training split from Ray Data, trains the model under DDP
(gloo on CPU, NCCL on GPUs; model, item inputs and batches on the worker's device), and every
epoch rank 0 evaluates on the full validation split, writes a
checkpoint directory (model + config + feature map + item table + train state) and all ranks
report it with ``ray.train.report``. A restarted worker group resumes from the latest
checkpoint (``ray.train.get_checkpoint()``), with optimizer, counters and RNG restored.

The loop in numbered steps (:func:`train_loop_per_worker`): 1. :func:`set_up`, 2. :func:`build`,
3. per epoch :func:`train_epoch` (one :func:`training.step.train_step` per batch),
:func:`validate`, :func:`checkpoint_and_report`, early stop.

Options (``run_training(loop_options=...)``, see :class:`LoopOptions`): ``threads_per_worker``
(torch intra-op threads per worker, default 1: one per CPU a worker reserves),
``prefetch_batches`` (Ray Data chunks prepared ahead in a background thread, default 1; see
:func:`epoch_batches`), ``progress_every_s`` (seconds between rank 0's progress events,
:mod:`training.progress`) and ``step_callback`` (a
picklable ``callback(rank, global_step)`` called after every optimizer step; the e2e tests inject
a worker crash with it).
Every epoch's report carries ``samples_per_s`` and where rank 0's epoch went: ``epoch_s``,
``data_wait_s`` (blocked on Ray Data), ``first_batch_s`` (of that, until the first batch), and
the CPU seconds of the training thread and of the whole worker process (``train_thread_cpu_s``,
``worker_cpu_s``: a training thread with less CPU than wall time was waiting for a core).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from recsys.checkpoint import SharedItemTable, save_checkpoint
from recsys.config import ExperimentConfig
from recsys.errors import ConfigError
from recsys.features.batch import Batch, FieldWidths, field_widths
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemInputs, ItemTable
from recsys.features.predict import OnDevice, predict
from recsys.features.prepared import META_USER_ID, PreparedDir
from recsys.metrics import compute_metrics
from recsys.models import build_model
from training import progress
from training.state import TrainState, load_train_state, rng_state, save_train_state
from training.step import build_optimizer, decay_on_plateau, train_step

T = TypeVar("T")

#: Called after every optimizer step with (this worker's rank, the run's global step).
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class LoopOptions:
    """How the loop runs, besides the experiment config (see the module docstring)."""

    threads_per_worker: int = 1
    prefetch_batches: int = 1
    progress_every_s: float = 1.0
    step_callback: StepCallback | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> LoopOptions:
        """Options from ``run_training(loop_options=...)``; an unknown name is a ConfigError."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"loop options: unknown {unknown}; valid names: {', '.join(names)}")
        numbers: dict[str, Any] = {
            k: (float(v) if k == "progress_every_s" else int(v)) for k, v in options.items() if k != "step_callback"
        }
        return cls(**numbers, step_callback=options.get("step_callback"))


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_dataset(
    model: nn.Module, items: ItemInputs, dataset: Any, widths: FieldWidths, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, labels and user ids over a whole Ray dataset (:func:`recsys.features.predict.predict`).

    ``model`` and ``items`` on the same device; batches are moved there when it is not the CPU.
    """
    device = next(model.parameters()).device
    if device.type != "cpu":
        model = OnDevice(model, device)
    users: list[np.ndarray] = []

    def batches() -> Iterator[Batch]:
        for columns in dataset.iter_torch_batches(batch_size=batch_size):
            users.append(columns[META_USER_ID].numpy())
            yield Batch.from_columns(columns, widths)

    predicted = predict(model, items, batches())
    return predicted.probs, predicted.labels, np.concatenate(users) if users else np.zeros(0, np.int64)


#: Rows Ray Data hands the loop at a time, in training batches: rows are shuffled within such a chunk.
SHUFFLE_CHUNK_BATCHES = 8


def epoch_batches(
    shard: Any,
    batch_size: int,
    seed: int,
    widths: FieldWidths,
    prefetch_batches: int = 1,
    chunk_batches: int = SHUFFLE_CHUNK_BATCHES,
) -> Generator[Batch, None, None]:
    """One epoch of shuffled training batches from a Ray Data shard or dataset.

    Ray Data hands over chunks of ``chunk_batches * batch_size`` rows, converted to tensors once
    per chunk (Ray Data's own cost is mostly per batch it yields, ~5 ms); the rows of each chunk
    are permuted with a torch generator seeded with ``seed`` and cut into batches of
    ``batch_size``: a local shuffle over a window of ``chunk_batches`` batches. Same seed, same
    data -> the same batches.
    """
    generator = torch.Generator().manual_seed(seed)
    for columns in shard.iter_torch_batches(batch_size=chunk_batches * batch_size, prefetch_batches=prefetch_batches):
        chunk = Batch.from_columns(columns, widths)
        order = torch.randperm(len(chunk), generator=generator)
        for start in range(0, len(order), batch_size):
            yield chunk.index_select(order[start : start + batch_size])


def epoch_seed(train_seed: int, epoch: int, rank: int) -> int:
    """The shuffle seed of one worker's epoch: every (epoch, rank) differs, the same run repeats."""
    return train_seed + epoch * 1000 + rank


@dataclass
class EpochStats:
    """Where one worker's epoch went: samples, loss, wall time, time blocked on the data, CPU time."""

    seen: int = 0
    loss_sum: float = 0.0
    n_batches: int = 0
    start: float = field(default_factory=time.perf_counter)
    data_wait: float = 0.0  # seconds blocked on the data source
    first_batch: float | None = None  # seconds until the first batch
    elapsed: float = 0.0
    ended_at: float = 0.0  # unix time
    thread_cpu: float = 0.0  # CPU seconds of this thread
    worker_cpu: float = 0.0  # CPU seconds of this whole process (all its threads)
    samples_per_s: float = 0.0  # every worker's samples together per wall second of this one
    _cpu_start: tuple[float, float] = field(default_factory=lambda: (time.thread_time(), time.process_time()))

    def timed(self, batches: Iterator[T]) -> Iterator[T]:
        """``batches``, counting the time spent waiting for each (and until the first one)."""
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)
            self.data_wait += time.perf_counter() - t_wait
            if batch is None:
                return
            if self.first_batch is None:
                self.first_batch = time.perf_counter() - self.start
            yield batch

    def finish(self) -> None:
        """Stop the clocks; ``samples_per_s`` counts every worker's samples (collective: all ranks call it)."""
        self.elapsed, self.ended_at = time.perf_counter() - self.start, time.time()
        self.thread_cpu = time.thread_time() - self._cpu_start[0]
        self.worker_cpu = time.process_time() - self._cpu_start[1]
        self.samples_per_s = sum(_gather(self.seen)) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def train_loss(self) -> float:
        return self.loss_sum / max(self.n_batches, 1)


def _broadcast(obj: T) -> T:
    """Rank 0's object on every rank (no-op without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- 1. set up


@dataclass
class Worker:
    """What step 1 sets up: the run's config and options, this worker's place in the group, the features."""

    config: ExperimentConfig
    options: LoopOptions
    rank: int
    world: int
    feature_map: FeatureMap
    item_table: ItemTable
    items: ItemInputs  # on ``device``
    widths: FieldWidths
    device: torch.device  # the worker's: its GPU with train.gpus_per_worker > 0, else the CPU
    item_table_file: SharedItemTable | None  # rank 0's: the prepared item table its checkpoints reference

    @property
    def batch_size(self) -> int:
        """This worker's share of the global batch."""
        return max(1, self.config.train.batch_size // self.world)


def set_up(loop_config: Mapping[str, Any]) -> Worker:
    """Step 1: read the loop config, size torch's threads, seed every RNG, load the prepared features
    (the item table from Ray's object store when the driver put it there: one copy per node, its arrays
    read-only views; the item inputs on the worker's device)."""
    config = ExperimentConfig.model_validate(loop_config["experiment"])
    options: LoopOptions = loop_config.get("options") or LoopOptions()
    prepared = PreparedDir(loop_config["prepared_dir"])
    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, options.threads_per_worker))
    seed_everything(config.train.seed)
    feature_map = prepared.load_feature_map()
    shared = loop_config.get("item_table")  # [ObjectRef]: the node's object-store copy, mapped, not loaded
    item_table = ray.get(shared[0]) if shared else prepared.load_item_table()
    device = ray.train.torch.get_device()  # the CPU unless the workers were given GPUs
    items = ItemInputs.from_table(item_table, device=device)
    rank = ctx.get_world_rank()
    return Worker(
        config,
        options,
        rank,
        ctx.get_world_size(),
        feature_map,
        item_table,
        items,
        field_widths(feature_map),
        device,
        SharedItemTable.of(prepared.item_table_path) if rank == 0 else None,
    )


# --------------------------------------------------------------------------- 2. model, optimizer, restore


@dataclass
class Training:
    """What step 2 builds: the model, what the steps call, the optimizer and where the run is."""

    model: nn.Module  # validated and checkpointed
    ddp_model: nn.Module  # the model itself, or wrapped in DDP with several workers
    optimizer: torch.optim.Optimizer
    state: TrainState


def build(worker: Worker) -> Training:
    """Step 2: the model and its optimizer, restored from the latest checkpoint of a restarted or resumed run."""
    model = build_model(worker.config.model, worker.feature_map, worker.item_table.dims()).to(worker.device)
    optimizer = build_optimizer(model, worker.config.train)
    state = restore(model, optimizer, worker.rank)
    ddp_model = ray.train.torch.prepare_model(model) if worker.world > 1 else model
    return Training(model, ddp_model, optimizer, state)


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> TrainState:
    """Weights, optimizer, counters and this rank's RNG from Ray's latest checkpoint; a fresh state without one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as ckpt_dir:
        weights = torch.load(Path(ckpt_dir) / "model.pt", weights_only=True, map_location="cpu")
        model.load_state_dict(weights)
        state = load_train_state(Path(ckpt_dir), optimizer, rank)
    if rank == 0:
        progress.emit("resumed", path=str(checkpoint.path), epoch=state.epoch, step=state.global_step)
    return state


# --------------------------------------------------------------------------- 3. every epoch


def train_epoch(worker: Worker, training: Training, shard: Any, epoch: int) -> EpochStats:
    """Step 3a: one pass over this worker's shard, one :func:`training.step.train_step` per batch."""
    config, options, state = worker.config, worker.options, training.state
    training.ddp_model.train()
    stats = EpochStats()
    if worker.rank == 0:
        progress.emit("epoch", epoch=epoch + 1, epochs=config.train.epochs)
    last_event = stats.start
    batches = epoch_batches(
        shard,
        worker.batch_size,
        seed=epoch_seed(config.train.seed, epoch, worker.rank),
        widths=worker.widths,
        prefetch_batches=options.prefetch_batches,
    )
    for batch in stats.timed(batches):
        batch = batch.to(worker.device) if worker.device.type != "cpu" else batch
        parts = train_step(training.ddp_model, batch, worker.items, training.optimizer, config.model)
        state.global_step += 1
        stats.seen += len(batch)
        stats.loss_sum += parts["click"]
        stats.n_batches += 1
        if options.step_callback is not None:
            options.step_callback(worker.rank, state.global_step)
        if worker.rank == 0 and time.perf_counter() - last_event >= options.progress_every_s:
            last_event = time.perf_counter()
            progress.emit(
                "step",
                epoch=epoch + 1,
                done=stats.n_batches,
                samples_per_s=stats.seen * worker.world / (last_event - stats.start),
                loss=stats.loss_sum / stats.n_batches,
            )
    batches.close()  # the finished iterator's buffers are not kept through validation
    stats.finish()
    return stats


def validate(worker: Worker, model: nn.Module, valid: Any) -> dict[str, float]:
    """Step 3b: rank 0 scores the whole validation split; every rank gets its ``val_*`` metrics."""
    metrics: dict[str, float] | None = None
    if worker.rank == 0:
        # Batches of the training size: a 4096-row MARN forward pass held ~300 MB more at its peak.
        probs, labels, users = predict_dataset(
            model, worker.items, valid, worker.widths, batch_size=worker.config.train.batch_size
        )
        metrics = {f"val_{k}": float(v) for k, v in compute_metrics(users, labels, probs).items()}
    metrics = _broadcast(metrics)
    assert metrics is not None  # rank 0 computed them
    return metrics


def epoch_report(
    worker: Worker, state: TrainState, stats: EpochStats, metrics: dict[str, float], node_ids: str
) -> dict[str, Any]:
    """What every rank reports for the epoch ``state`` has just counted (and what the history keeps)."""
    return {
        **metrics,
        "epoch": state.epoch,
        "step": state.global_step,
        "train_loss": stats.train_loss,
        "samples_per_s": stats.samples_per_s,
        # where rank 0's epoch went: total, blocked on Ray Data (of which until the first batch), CPU
        # time of the training thread and of the whole worker process (all its threads)
        "epoch_s": stats.elapsed,
        "data_wait_s": stats.data_wait,
        "first_batch_s": stats.first_batch or 0.0,
        "train_thread_cpu_s": stats.thread_cpu,
        "worker_cpu_s": stats.worker_cpu,
        "epoch_end_unix": stats.ended_at,
        "world_size": worker.world,
        "node_ids": node_ids,
        "best_val_auc": state.best_auc,
    }


def checkpoint_and_report(worker: Worker, training: Training, report: dict[str, Any], improved: bool) -> None:
    """Step 3c: rank 0 prints the epoch, writes a checkpoint and reports it; the other ranks report the metrics."""
    rngs = _gather(rng_state())  # every rank's, collective: all ranks take part
    if worker.rank != 0:
        ray.train.report(report)
        return
    progress.emit(
        "validated",
        epochs=worker.config.train.epochs,
        best=improved,
        **{k: report[k] for k in ("epoch", "train_loss", "val_auc", "val_gauc", "val_logloss", "samples_per_s")},
    )
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_dir = save_checkpoint(
            Path(tmp) / "checkpoint",
            training.model,
            worker.config,
            worker.feature_map,
            worker.item_table,
            metrics=report,
            extra={"epoch": report["epoch"], "step": report["step"]},
            shared_item_table=worker.item_table_file,  # stored once per run, not in every epoch's checkpoint
        )
        save_train_state(ckpt_dir, training.state, training.optimizer, rngs)
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. ``loop_config``: ``experiment`` (the config as a dict), ``prepared_dir``,
    ``item_table`` (optional: ``[ObjectRef]`` of the prepared item table), ``options`` (:class:`LoopOptions`)."""
    # 1. set up: config and options, this worker's rank, torch threads, seeds, the prepared features
    worker = set_up(loop_config)
    # 2. the model and its optimizer, restored from the latest checkpoint of a restarted or resumed run
    training = build(worker)
    node_ids = ",".join(sorted(set(_gather(ray.get_runtime_context().get_node_id()))))
    train_shard = ray.train.get_dataset_shard("train")
    valid = ray.train.get_dataset_shard("valid")
    patience = worker.config.train.early_stopping_patience
    # 3. every epoch: train on this worker's shard, validate, checkpoint and report, stop early
    for epoch in range(training.state.epoch, worker.config.train.epochs):
        stats = train_epoch(worker, training, train_shard, epoch)
        metrics = validate(worker, training.model, valid)
        improved = training.state.end_epoch(epoch + 1, metrics["val_auc"], worker.config.train.early_stopping_min_delta)
        if not improved and worker.config.train.lr_plateau_factor < 1.0:
            decay_on_plateau(training.optimizer, worker.config.train)
        report = epoch_report(worker, training.state, stats, metrics, node_ids)
        training.state.history.append(report)
        checkpoint_and_report(worker, training, report, improved)
        if training.state.epochs_without_improvement >= patience:
            if worker.rank == 0:
                progress.emit("early_stop", epochs_without_improvement=training.state.epochs_without_improvement)
            break
