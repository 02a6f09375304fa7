"""``train_loop_per_worker``: the only code that runs inside Ray Train workers.

Each worker streams its shard of the training split from Ray Data, trains the model under DDP
(gloo on CPU), and every epoch rank 0 evaluates on the full validation split, writes a
checkpoint directory (model + config + feature map + item table + train state) and all ranks
report it with ``ray.train.report``. A restarted worker group resumes from the latest
checkpoint (``ray.train.get_checkpoint()``), with optimizer, counters and RNG restored.

Options in ``train_loop_config`` besides the config (``run_training(loop_options=...)``):
``threads_per_worker`` (torch intra-op threads per worker, default 1: one per CPU a worker
reserves), ``prefetch_batches`` (Ray Data chunks prepared ahead in a background thread, default
1; see :func:`epoch_batches`), ``log_every`` (steps between progress lines) and the
fault-injection keys the tests use.
Every epoch's report carries ``samples_per_s`` and where rank 0's epoch went: ``epoch_s``,
``data_wait_s`` (blocked on Ray Data), ``first_batch_s`` (of that, until the first batch), and
the CPU seconds of the training thread and of the whole worker process (``train_thread_cpu_s``,
``worker_cpu_s``: a training thread with less CPU than wall time was waiting for a core).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
import torch.distributed as dist

from recsys.checkpoint import save_checkpoint
from recsys.config import ExperimentConfig
from recsys.features.examples import field_widths, model_batch
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemTable
from recsys.features.prepare import PREPARED_FEATURE_MAP, PREPARED_ITEM_TABLE
from recsys.losses import total_loss
from recsys.metrics import compute_metrics
from recsys.models import ItemInputs, build_model
from training.state import TrainState, load_train_state, rng_state, save_train_state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_dataset(model: torch.nn.Module, items: ItemInputs, dataset, widths: dict[str, int], batch_size: int):
    """Probabilities, labels and user ids over a whole Ray dataset (eval mode, no grad)."""
    model.eval()
    probs, labels, users = [], [], []
    with torch.no_grad():
        for batch in dataset.iter_torch_batches(batch_size=batch_size):
            b = model_batch(batch, widths)
            probs.append(torch.sigmoid(model(b, items).logits).numpy())
            labels.append(b["label"].numpy())
            users.append(batch["meta_user_id"].numpy())
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(users)


#: Rows Ray Data hands the loop at a time, in training batches: rows are shuffled within such a chunk.
SHUFFLE_CHUNK_BATCHES = 8


def epoch_batches(
    shard, batch_size: int, seed: int, prefetch_batches: int = 1, chunk_batches: int = SHUFFLE_CHUNK_BATCHES
):
    """One epoch of shuffled training batches (dicts of tensors) from a Ray Data shard or dataset.

    Ray Data hands over chunks of ``chunk_batches * batch_size`` rows, converted to tensors once
    per chunk (Ray Data's own cost is mostly per batch it yields, ~5 ms); the rows of each chunk
    are permuted with a torch generator seeded with ``seed`` and cut into batches of
    ``batch_size``: a local shuffle over a window of ``chunk_batches`` batches. Same seed, same
    data -> the same batches.
    """
    generator = torch.Generator().manual_seed(seed)
    for chunk in shard.iter_torch_batches(batch_size=chunk_batches * batch_size, prefetch_batches=prefetch_batches):
        order = torch.randperm(len(chunk["label"]), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield {key: column.index_select(0, rows) for key, column in chunk.items()}


def _broadcast(obj: object) -> object:
    """Rank 0's object on every rank (no-op without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _gather(obj: object) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config``: experiment config dict, prepared dir, options."""
    config = ExperimentConfig.model_validate(loop_config["experiment"])
    prepared = Path(loop_config["prepared_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))
    seed_everything(config.train.seed)

    feature_map = FeatureMap.load(prepared / PREPARED_FEATURE_MAP)
    item_table = ItemTable.load(prepared / PREPARED_ITEM_TABLE)
    items = ItemInputs.from_table(item_table)
    widths = field_widths(feature_map)
    model = build_model(config.model, feature_map, item_table.dims())
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )

    state = TrainState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            weights = torch.load(Path(ckpt_dir) / "model.pt", weights_only=True, map_location="cpu")
            model.load_state_dict(weights)
            state = load_train_state(Path(ckpt_dir), optimizer, rank)
        if rank == 0:
            print(f"[recsys] resumed from {checkpoint.path}: epoch {state.epoch}, step {state.global_step}", flush=True)
    ddp_model = ray.train.torch.prepare_model(model) if world > 1 else model

    node_ids = ",".join(sorted(set(_gather(ray.get_runtime_context().get_node_id()))))
    train_shard = ray.train.get_dataset_shard("train")
    valid = ray.train.get_dataset_shard("valid")
    per_worker_batch = max(1, config.train.batch_size // world)
    crash_at = loop_config.get("crash_after_steps")  # fault injection for tests (see tests/e2e)

    prefetch = int(loop_config.get("prefetch_batches", 1))

    for epoch in range(state.epoch, config.train.epochs):
        ddp_model.train()
        start, seen, loss_sum, n_batches = time.perf_counter(), 0, 0.0, 0
        data_wait, first_batch = 0.0, None  # seconds blocked on Ray Data; until the first batch
        cpu_start = time.thread_time(), time.process_time()  # this thread's CPU; the whole worker's
        batches = epoch_batches(
            train_shard, per_worker_batch, seed=config.train.seed + epoch * 1000 + rank, prefetch_batches=prefetch
        )
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)
            data_wait += time.perf_counter() - t_wait
            if batch is None:
                break
            if first_batch is None:
                first_batch = time.perf_counter() - start
            b = model_batch(batch, widths)
            loss, parts = total_loss(ddp_model(b, items), b["label"], config.model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state.global_step += 1
            seen += len(b["label"])
            loss_sum += parts["click"]
            n_batches += 1
            if (
                crash_at is not None
                and state.global_step == crash_at
                and rank == int(loop_config.get("crash_rank", 0))
                and not Path(loop_config["crash_marker"]).exists()
            ):
                Path(loop_config["crash_marker"]).write_text(str(os.getpid()))
                os._exit(1)  # a worker process dies mid-epoch
            if rank == 0 and state.global_step % int(loop_config.get("log_every", 50)) == 0:
                rate = seen * world / (time.perf_counter() - start)
                print(
                    f"[recsys] epoch {epoch + 1}/{config.train.epochs} step {state.global_step} "
                    f"samples/s {rate:,.0f} loss {loss_sum / n_batches:.4f}",
                    flush=True,
                )
        batches.close()  # the finished iterator's buffers are not kept through validation
        elapsed, ended_at = time.perf_counter() - start, time.time()
        thread_cpu, worker_cpu = time.thread_time() - cpu_start[0], time.process_time() - cpu_start[1]
        samples_per_s = sum(_gather(seen)) / elapsed if elapsed > 0 else 0.0

        metrics = None
        if rank == 0:
            # Batches of the training size: a 4096-row MARN forward pass held ~300 MB more at its peak.
            probs, labels, users = predict_dataset(model, items, valid, widths, batch_size=config.train.batch_size)
            m = compute_metrics(users, labels, probs)
            metrics = {f"val_{k}": float(v) for k, v in m.items()}
        metrics = _broadcast(metrics)
        state.epoch = epoch + 1
        improved = metrics["val_auc"] > state.best_auc
        if improved:
            state.best_auc, state.best_epoch, state.epochs_without_improvement = metrics["val_auc"], epoch + 1, 0
        else:
            state.epochs_without_improvement += 1
        report = {
            **metrics,
            "epoch": epoch + 1,
            "step": state.global_step,
            "train_loss": loss_sum / max(n_batches, 1),
            "samples_per_s": samples_per_s,
            # where rank 0's epoch went: total, blocked on Ray Data (of which until the first batch), CPU
            # time of the training thread and of the whole worker process (all its threads)
            "epoch_s": elapsed,
            "data_wait_s": data_wait,
            "first_batch_s": first_batch or 0.0,
            "train_thread_cpu_s": thread_cpu,
            "worker_cpu_s": worker_cpu,
            "epoch_end_unix": ended_at,
            "world_size": world,
            "node_ids": node_ids,
            "best_val_auc": state.best_auc,
        }
        state.history.append(report)
        stop = state.epochs_without_improvement >= config.train.early_stopping_patience
        rngs = _gather(rng_state())  # every rank's, collective: all ranks take part
        if rank == 0:
            print(
                f"[recsys] epoch {epoch + 1} done: val AUC {metrics['val_auc']:.4f} GAUC {metrics['val_gauc']:.4f} "
                f"logloss {metrics['val_logloss']:.4f}, {samples_per_s:,.0f} samples/s"
                + (" (best)" if improved else ""),
                flush=True,
            )
            with tempfile.TemporaryDirectory() as tmp:
                ckpt_dir = save_checkpoint(
                    Path(tmp) / "checkpoint",
                    model,
                    config,
                    feature_map,
                    item_table,
                    metrics=report,
                    extra={"epoch": epoch + 1, "step": state.global_step},
                )
                save_train_state(ckpt_dir, state, optimizer, rngs)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)))
        else:
            ray.train.report(report)
        if stop:
            if rank == 0:
                print(
                    f"[recsys] early stop: no val AUC gain for {state.epochs_without_improvement} epoch(s)", flush=True
                )
            break
