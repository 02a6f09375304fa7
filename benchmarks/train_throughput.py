"""Training throughput of the full Ray pipeline vs a bare PyTorch loop, and memory at 10x the data.

Measures, in one run, on the built-in dataset (configs/default.yaml with ``encoders.audio.kind:
logmel`` so that encoding stays fast; the model cost is what is measured):

1. samples/s of MARN and DIN through ``training.launch.run_training`` on a local Ray (prepared
   Parquet -> Ray Data -> TorchTrainer), with 1 and 2 workers (1 torch thread each, the loop's
   default): the ``samples_per_s`` the training loop reports for the LAST epoch (epoch 1 includes
   warm-up and is excluded). That figure runs from asking Ray Data for the epoch's iterator to the
   last optimizer step, so it includes Ray Data's time to the first batch and every per-batch
   conversion; the loop also reports where the epoch went (``epoch_s``, ``data_wait_s``,
   ``first_batch_s``), shown in the table. Validation and checkpointing are outside it.
2. samples/s of a bare single-process loop over in-memory tensors: same model
   (``recsys.models.build_model`` on the same prepared feature map / item table), same global
   batch size, the training loop's own step and optimizer (``training.step.train_step``,
   ``build_optimizer``), one full pass over pre-built batches of the prepared train split after 3
   warm-up steps, at every total thread count a Ray run uses. Like for like: a Ray
   run with W workers x T threads is compared with the bare loop at W x T torch threads.
3. peak memory (RSS and USS, MB) of the driver and of each RayTrainWorker process for the train
   split (1x) and for the same Parquet files linked 10 times (10x rows, same file/row-group size,
   same valid split, same feature map): this isolates the size of the training table. Cases: 1x
   and 10x as ``run_training`` loads them by default (a split that fits its budget is kept in the
   object store, a larger one is streamed), and 1x forced to stream. Workers are sampled with
   psutil every 0.2 s from a thread of the driver; the driver's peak RSS is ``ru_maxrss``. RSS
   includes pages of Ray's shared-memory object store a process has read (the store has a fixed
   size), USS only the process's private pages. Each memory case runs in its own fresh driver
   process with its own local Ray. Not covered: the driver's input checks (``check_inputs``
   reads the raw interactions) and the featurising Ray task, which scale with the raw dataset,
   not with the prepared table.

The bare loop runs before and after the Ray runs; its reference rate is the mean of the two
(the machine is shared: the spread between the two rounds shows how much the load drifted).

Every Ray case runs in a child process of this script (a fresh driver and local Ray per group).
The features are prepared once, by the code ``run_training`` runs (``PreparedDir.write``), and every
Ray run trains on them where they are (``run_training(prepared=...)``), so the measured runs do not
re-featurise. Diagnostics (on by default): Ray Data iteration alone (no model) through the
same TorchTrainer/streaming-split path, and Ray 1 worker with ``threads_per_worker=--threads``.
Artefacts go to ``--work-dir`` (default ``benchmarks/_work/train_throughput``, git-ignored); the
dataset and the encode cache there are reused by later runs.

Run (full benchmark, ~20 min on 2 idle cores; the first run also makes and encodes the dataset):

    .venv/bin/python benchmarks/train_throughput.py

Weak scaling (each Ray worker steps on the config's batch, as the bare loop does, so W workers
step on a global batch of W x batch; the default, strong scaling, splits the config's global batch
over the W workers):

    .venv/bin/python benchmarks/train_throughput.py --scaling weak --no-memory

Quick smoke test (150 users = ~12k train rows, same steps):

    .venv/bin/python benchmarks/train_throughput.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import ROOT, RssSampler, describe_machine, import_psutil, loadavg, log, summarise_rss

if TYPE_CHECKING:
    from recsys.config import ExperimentConfig
    from recsys.features.batch import Batch
    from recsys.features.prepared import PreparedDir

ENV = {
    "RAY_ADDRESS": "local",  # always a fresh local Ray, never a cluster someone else started here
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "0",
}


# --------------------------------------------------------------------------- data setup


def bench_config(work: Path, base_config: Path) -> Path:
    """configs/default.yaml with log-mel audio (fast to encode), patience high (no early stop)."""
    import yaml

    raw = yaml.safe_load(base_config.read_text())
    raw["encoders"]["audio"] = {"kind": "logmel"}
    raw["train"]["early_stopping_patience"] = 100
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def ensure_dataset(work: Path, size: str, config_path: Path) -> tuple[Path, Path]:
    """The built-in dataset and its encode cache under ``work`` (made once, then reused)."""
    from recsys.config import load_config
    from recsys.data.synthetic import make_default_dataset
    from recsys.encoders.pipeline import encode_items

    data_dir, cache_dir = work / f"data_{size}", work / "cache"
    marker = data_dir / "dataset.json"
    if not (marker.is_file() and json.loads(marker.read_text()).get("complete")):
        log(f"making the built-in dataset ({size}) -> {data_dir}")
        make_default_dataset(data_dir, size=size, progress=False)
    t = time.perf_counter()
    encode_items(data_dir, load_config(config_path).encoders, cache_dir=cache_dir, progress=False)
    log(f"encode cache ready in {time.perf_counter() - t:.0f} s -> {cache_dir}")
    return data_dir, cache_dir


def cut_users(src: Path, out: Path, n_users: int) -> Path:
    """The dataset with only its first ``n_users`` users (same items/media: the cache applies)."""
    import polars as pl

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("items.parquet", "users.parquet", "dataset.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    for media in ("images", "audio"):
        if (src / media).exists():
            (out / media).symlink_to((src / media).resolve())
    inter = pl.read_parquet(src / "interactions.parquet")
    keep = inter["user_id"].unique().sort()[:n_users].implode()
    inter.filter(pl.col("user_id").is_in(keep)).write_parquet(out / "interactions.parquet")
    return out


def prepare(config_path: Path, data_dir: Path, cache_dir: Path, out: Path, factor: int) -> dict[str, int]:
    """Prepared features as run_training's Ray task writes them (``out/1x``), and the same with the train
    split ``factor`` times (``out/<factor>x``, see :meth:`PreparedDir.link_copy`); returns the 1x rows per split."""
    from recsys.config import load_config
    from recsys.features.prepare import prepare_data
    from recsys.features.prepared import PreparedDir

    if out.exists():
        shutil.rmtree(out)
    base = PreparedDir(out / "1x")
    counts = base.write(prepare_data(load_config(config_path), data_dir, cache_dir))
    base.link_copy(out / f"{factor}x", train_repeats=factor)
    return counts


# --------------------------------------------------------------------------- child: Ray runs


def data_only_loop(loop_config: dict[str, Any]) -> None:
    """Diagnostic train loop: the training loop's data path (same shard, batches, shuffle and epoch timing,
    :mod:`training.loop`) without a model."""
    import ray.train

    from recsys.features.batch import field_widths
    from recsys.features.prepared import PreparedDir
    from training.loop import EpochStats, epoch_batches, epoch_seed

    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    widths = field_widths(PreparedDir(loop_config["prepared_dir"]).load_feature_map())
    shard = ray.train.get_dataset_shard("train")
    per_worker = max(1, loop_config["batch_size"] // world)
    rates = []
    for epoch in range(loop_config["epochs"]):
        stats = EpochStats()
        seed = epoch_seed(loop_config["seed"], epoch, rank)
        for batch in stats.timed(epoch_batches(shard, per_worker, seed=seed, widths=widths)):
            stats.seen += len(batch)
        stats.finish()  # samples_per_s: every worker's samples
        first = stats.first_batch or 0.0
        rates.append(
            {
                "epoch": epoch + 1,
                "samples_per_s": stats.samples_per_s,
                "seconds": stats.elapsed,
                "first_batch_s": stats.first_batch,
                "after_first_samples_per_s": stats.samples_per_s * stats.elapsed / max(stats.elapsed - first, 1e-9),
            }
        )
        ray.train.report(rates[-1])
    if rank == 0:
        Path(loop_config["out"]).write_text(json.dumps(rates))


def run_data_only(
    config: ExperimentConfig,
    prepared: PreparedDir,
    workers: int,
    epochs: int,
    storage: Path,
    name: str,
    materialize: bool | None = None,
) -> list[dict[str, Any]]:
    """:func:`data_only_loop` on ``workers`` Ray workers over the train split, loaded as run_training loads it."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from training.launch import training_datasets

    trainer = TorchTrainer(
        data_only_loop,
        train_loop_config={
            "prepared_dir": str(prepared.path),
            "batch_size": config.train.batch_size,
            "seed": config.train.seed,
            "epochs": epochs,
            "out": str(storage / f"{name}.json"),
        },
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        datasets={"train": training_datasets(prepared.path, materialize)[0]["train"]},  # as run_training loads it
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage / name)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(result.error)
    return json.loads((storage / f"{name}.json").read_text())  # written by rank 0 (same machine)


def child_main(spec_path: Path) -> None:
    """One group of Ray runs in this (child) process: a fresh driver and local Ray, sampled for memory and CPU."""
    from recsys.config import load_config
    from recsys.features.prepared import PreparedDir
    from training.launch import init_ray, run_training

    spec = json.loads(spec_path.read_text())
    os.environ.update(ENV)
    sampler = RssSampler(spec.get("interval", 0.2), uss=spec.get("uss", True))
    sampler.start()
    init_ray(None, max(r["workers"] for r in spec["runs"]))
    storage = Path(spec["storage"])
    results = []
    for r in spec["runs"]:
        config = load_config(spec["config"])
        config.model.name = r["model"]
        config.train.epochs = r["epochs"]
        if r.get("batch_size"):  # weak scaling: a global batch of W x the bare loop's batch
            config.train.batch_size = r["batch_size"]
        config.train.storage_path = str(storage)
        print(
            f"[bench-child] run {r['name']}: {r['model']} x{r['workers']} workers, {r['epochs']} epochs, "
            f"{r['train_rows']} train rows, load {loadavg()}",
            flush=True,
        )
        sampler.set_phase(r["name"])
        load_before = os.getloadavg()
        t, t_unix = time.perf_counter(), time.time()
        if r.get("data_only"):
            history = run_data_only(
                config,
                PreparedDir(r["prepared"]),
                r["workers"],
                r["epochs"],
                storage,
                r["name"] + "-ray",
                r.get("materialize"),
            )
        else:
            res = run_training(
                config,
                data_dir=spec["data_dir"],
                cache_dir=spec["cache_dir"],
                workers=r["workers"],
                run_name=r["name"],
                loop_options=r.get("loop_options"),
                materialize=r.get("materialize"),
                prepared=PreparedDir(r["prepared"]),
            )
            history = res.history
            r = {**r, "materialized": (res.splits or {}).get("materialized")}
        wall = time.perf_counter() - t
        sampler.set_phase("idle")
        time.sleep(1.5)  # one more CPU sample after the run's end
        cpu = {"run": sampler.cpu_between(t_unix, t_unix + wall), "sampler_s": sampler.own_cpu.get(r["name"], 0.0)}
        steady = [h for h in (history[1:] or history) if "epoch_end_unix" in h]
        if steady:  # the windows the reported samples/s comes from (epochs 2..N), summed
            windows = [sampler.cpu_between(h["epoch_end_unix"] - h["epoch_s"], h["epoch_end_unix"]) for h in steady]
            roles = {k for w in windows for k in w["by_role"]}
            cpu["steady"] = {
                "by_role": {k: sum(w["by_role"].get(k, 0.0) for w in windows) for k in roles},
                **{k: sum(w[k] for w in windows) for k in ("machine_busy", "steal", "wall")},
            }
        results.append(
            {
                **r,
                "wall_s": wall,
                "history": history,
                "load_before": load_before,
                "cpu": cpu,
                "load_after": os.getloadavg(),
                "rss": summarise_rss(
                    sampler.peaks.get(r["name"], {"driver": {"rss": 0, "uss": 0}, "procs": {}}),
                    sampler.series.get(r["name"]),
                ),
            }
        )
        print(
            f"[bench-child] run {r['name']} done in {wall:.0f} s: samples/s per epoch "
            f"{[round(h.get('samples_per_s', 0)) for h in history]}",
            flush=True,
        )
    sampler.stop()
    out = {"runs": results, "driver_ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(spec["out"]).write_text(json.dumps(out, indent=1, default=str))
    import ray

    ray.shutdown()


def run_child(work: Path, group: str, spec: dict, verbose: bool) -> dict:
    spec = {**spec, "out": str(work / f"{group}.result.json")}
    spec_path = work / f"{group}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    log_path = work / "logs" / f"{group}.log"
    log_path.parent.mkdir(exist_ok=True)
    log(f"child '{group}': {len(spec['runs'])} Ray run(s), log -> {log_path}")
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_child", str(spec_path)],
            cwd=ROOT,
            env={**os.environ, **ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        last = ""
        for line in proc.stdout:
            fh.write(line)
            if verbose or (
                line != last and (line.startswith("[bench-child]") or ("epoch" in line and "done:" in line))
            ):
                print("   " + line.rstrip(), flush=True)
            last = line
        rc = proc.wait()
    if rc != 0:
        tail = log_path.read_text()[-4000:]
        raise SystemExit(f"child '{group}' failed (exit {rc}); end of {log_path}:\n{tail}")
    return json.loads(Path(spec["out"]).read_text())


# --------------------------------------------------------------------------- bare loop (parent)


def load_train_batch(prepared: PreparedDir) -> Batch:
    """The whole train split as one in-memory batch."""
    from recsys.features.batch import field_widths
    from recsys.features.predict import frame_batches
    from recsys.features.prepared import TRAIN_COLUMNS

    frame = prepared.read_split("train", TRAIN_COLUMNS)
    return next(frame_batches(frame, frame.height, field_widths(prepared.load_feature_map())))


def bare_pass(
    config_path: Path, model_name: str, prepared: PreparedDir, train: Batch, threads: int, warmup: int = 3
) -> dict[str, Any]:
    """One full shuffled pass of :func:`training.step.train_step` over in-memory batches (after ``warmup`` steps)."""
    import numpy as np
    import torch

    from recsys.config import load_config
    from recsys.features.item_table import ItemInputs
    from recsys.models import build_model
    from training.step import build_optimizer, train_step

    torch.set_num_threads(threads)
    config = load_config(config_path)
    config.model.name = model_name
    table = prepared.load_item_table()
    items = ItemInputs.from_table(table)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, prepared.load_feature_map(), table.dims())
    optimizer = build_optimizer(model, config.train)
    n, bs = len(train), config.train.batch_size
    order = torch.from_numpy(np.random.default_rng(config.train.seed).permutation(n))
    batches = [train.index_select(order[s : s + bs]) for s in range(0, n, bs)]

    model.train()
    for b in batches[:warmup]:
        train_step(model, b, items, optimizer, config.model)
    steal = getattr(import_psutil().cpu_times(), "steal", 0.0)
    start, thread_cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
    for b in batches:
        train_step(model, b, items, optimizer, config.model)
    elapsed = time.perf_counter() - start
    return {
        "model": model_name,
        "threads": threads,
        "samples": n,
        "seconds": elapsed,
        "samples_per_s": n / elapsed,
        "main_thread_cpu_s": time.thread_time() - thread_cpu,
        "process_cpu_s": time.process_time() - process_cpu,
        "steal_s": getattr(import_psutil().cpu_times(), "steal", 0.0) - steal,
    }


# --------------------------------------------------------------------------- report


def last_rate(run: dict) -> float:
    return float(run["history"][-1]["samples_per_s"])


def steady_rate(run: dict) -> float:
    """samples/s over epochs 2..N together (epoch 1 = warm-up); the last epoch's if there is only one."""
    hist = run["history"][1:] or run["history"]
    if not all("epoch_s" in h for h in hist):
        return last_rate(run)
    return sum(h["samples_per_s"] * h["epoch_s"] for h in hist) / sum(h["epoch_s"] for h in hist)


def compute_threads(run: dict) -> int:
    """Torch compute threads a Ray run uses in all: workers x threads_per_worker (the loop's default is 1)."""
    return run["workers"] * int((run.get("loop_options") or {}).get("threads_per_worker", 1))


def steady_epochs(run: dict) -> list[dict]:
    return run["history"][1:] or run["history"]


def epoch_breakdown(run: dict) -> str:
    hist = steady_epochs(run)
    if not all("epoch_s" in h for h in hist):
        return ""
    return (
        f"{sum(h['epoch_s'] for h in hist):.1f} s: {sum(h['data_wait_s'] for h in hist):.2f} s waiting on Ray Data "
        f"({sum(h['first_batch_s'] for h in hist):.2f} s of it to the first batches)"
    )


def report(args, machine: dict, thr: dict | None, mem: dict | None, bare: list[dict], counts: dict, wall: float) -> str:
    rounds: dict[tuple, list[dict]] = {}
    for b in bare:
        rounds.setdefault((b["model"], b["threads"]), []).append(b)
    bare_by = {k: sum(x["samples_per_s"] for x in v) / len(v) for k, v in rounds.items()}  # mean of before/after
    lines = [
        f"## Training throughput (`{' '.join(machine['argv'])}`)",
        "",
        f"Machine: {machine['cores']} logical cores ({machine['physical']} physical), {machine['ram_gb']:.0f} GiB RAM, "
        f"torch {machine['torch']}, ray {machine['ray']}. Load average (1/5/15 min): before {machine['load_before']}, "
        f"after {machine['load_after']}. Wall time {wall / 60:.1f} min.",
        "",
    ]
    if thr is not None:
        lines += [
            f"Data: built-in `{args.size}` dataset{' cut to %d users' % args.users if args.users else ''}, "
            f"{counts['train']:,} train rows, "
            + (
                f"global batch {machine['batch_size']} "
                f"(strong scaling: each of W workers takes {machine['batch_size']}/W)"
                if getattr(args, "scaling", "strong") == "strong"
                else f"batch {machine['batch_size']} per worker (weak scaling: W workers step on a global batch of "
                f"W x {machine['batch_size']}; the bare loop steps on {machine['batch_size']})"
            )
            + f", {args.epochs} epochs per Ray run (the memory runs below use the config's global batch). "
            "Steady state on both sides: Ray = samples/s over epochs 2..N together, as the training loop times "
            "them (from asking Ray Data for an epoch's iterator to its last optimizer step: includes Ray Data's time "
            "to the first batch and every per-batch conversion; excludes validation and checkpointing; epoch 1 = "
            "warm-up, excluded); bare = one full pass over pre-built in-memory batches after 3 warm-up steps. Like "
            "for like: a Ray run with W workers x T torch threads each is compared with the bare loop at W x T "
            "threads (the same number of compute threads). Per model: bare loop, that model's Ray runs (one fresh "
            "driver + local Ray), bare loop again; the reference is the mean of the two rounds.",
            "",
            "| what | workers x threads | samples/s | bare ref. (threads) | ratio (target >= 0.8) | "
            "W x T x bare at 1 thread (ratio) | per epoch / per round | epochs 2..N | steal, % of the cores | "
            "run wall s | 1-min load start -> end |",
            "|---|---:|---:|---:|---:|---|---|---|---|---:|---|",
        ]
        for model in args.models:
            for (m, threads), got in sorted(rounds.items()):
                if m != model:
                    continue
                each = ", ".join(f"{x['samples_per_s']:,.0f}" for x in got)
                loads = ", ".join(x["load"].split(" / ")[0] for x in got)
                steal = ", ".join(
                    f"{100 * x['steal_s'] / (machine['cores'] * x['seconds']):.0f}%" for x in got if "steal_s" in x
                )
                lines.append(
                    f"| {model} bare loop | 1 process x {threads} | {bare_by[(m, threads)]:,.0f} | | | | {each} | "
                    f"| {steal} | | {loads} |"
                )
            for run in thr["runs"]:
                if run["model"] != model or run.get("data_only"):
                    continue
                r, t = steady_rate(run), compute_threads(run)
                ref = bare_by.get((model, t))
                eps = ", ".join(f"{h['samples_per_s']:,.0f}" for h in run["history"])
                how = {True: "materialised", False: "streamed"}.get(run.get("materialize"), "auto")
                tpw = int((run.get("loop_options") or {}).get("threads_per_worker", 1))
                ratio = f"**{r / ref:.2f}**" if ref else "n/a"
                # perfect scaling: every worker as fast as the bare loop on one thread (no Ray, no all-reduce)
                single = bare_by.get((model, 1))
                perfect = f"{t * single:,.0f} ({r / (t * single):.2f})" if single else "n/a"
                win = run.get("cpu", {}).get("steady", {})
                steal = f"{100 * win['steal'] / (machine['cores'] * win['wall']):.0f}%" if win.get("wall") else ""
                lines.append(
                    f"| {model} Ray pipeline ({how} splits) | {run['workers']} x {tpw} | {r:,.0f} | "
                    f"{'n/a' if ref is None else f'{ref:,.0f} ({t})'} | {ratio} | {perfect} | {eps} | "
                    f"{epoch_breakdown(run)} | {steal} | {run['wall_s']:.0f} "
                    f"| {run['load_before'][0]:.1f} -> {run['load_after'][0]:.1f} |"
                )
        for run in thr["runs"]:
            if run.get("data_only"):
                h = run["history"][-1]
                lines.append(
                    f"| Ray Data iteration only (no model; same shard/batch/shuffle) | {run['workers']} | "
                    f"{last_rate(run):,.0f} | | | | | {h['seconds']:.2f} s, {h['first_batch_s']:.2f} s to the first "
                    f"batch, then {h['after_first_samples_per_s']:,.0f} samples/s | | {run['wall_s']:.0f} | |"
                )
        lines += [
            "",
            "Where the cores went during the epochs each Ray figure comes from (2..N; core-seconds; the machine has "
            f"{machine['cores']} cores, so the window offers {machine['cores']} x wall). Machine busy = all "
            "processes on the machine (/proc/stat), of which: the train worker processes, Ray's other processes "
            "(SplitCoordinator, TrainController, raylet, gcs, agents, idle workers; the three largest named), this "
            "benchmark's driver (the Ray driver plus this script's memory/CPU sampler, whose own share is given), "
            "and the rest = processes outside this run (other users of the machine). Steal = CPU time the "
            "hypervisor gave this VM's cores to other guests (not in machine busy). Training thread = rank 0's "
            "loop thread (`time.thread_time()`); bare = the bare loop's CPU for the same samples per worker at 1 "
            "thread: what the same model work costs without Ray.",
            "",
            "| run | wall s (epochs 2..N) | waiting on Ray Data s | machine busy | train workers | "
            "other Ray processes | driver (sampler) | outside this run | steal | "
            "rank 0 training thread / bare, same samples |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
        ]
        for run in thr["runs"]:
            hist, win = steady_epochs(run), run.get("cpu", {}).get("steady")
            if run.get("data_only") or win is None:
                continue
            h = {k: sum(e[k] for e in hist) for k in ("epoch_s", "data_wait_s", "train_thread_cpu_s")}
            per_worker = len(hist) * run["train_rows"] / run["workers"]
            cpu_per_sample = [
                b["main_thread_cpu_s"] / b["samples"]
                for b in rounds.get((run["model"], 1), [])
                if "main_thread_cpu_s" in b
            ]
            bare_cpu = per_worker * sum(cpu_per_sample) / len(cpu_per_sample) if cpu_per_sample else float("nan")
            by_role = dict(win["by_role"])
            workers_cpu, driver_cpu = by_role.pop("train_worker", 0.0), by_role.pop("driver", 0.0)
            others = sum(by_role.values())
            top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])[:3] if v >= 0.05)
            outside = win["machine_busy"] - workers_cpu - driver_cpu - others
            sampler = run["cpu"].get("sampler_s", 0.0) * win["wall"] / max(run["wall_s"], 1e-9)  # pro rata
            lines.append(
                f"| {run['name']} | {h['epoch_s']:.1f} | {h['data_wait_s']:.2f} | {win['machine_busy']:.1f} | "
                f"{workers_cpu:.1f} | {others:.1f} ({top}) | {driver_cpu:.1f} ({sampler:.1f}) | {outside:.1f} | "
                f"{win.get('steal', float('nan')):.1f} | {h['train_thread_cpu_s']:.1f} / {bare_cpu:.1f} |"
            )
    if mem is not None:
        lines += [
            "",
            f"Memory: {mem['model']} with {mem['workers']} Ray workers, {mem['epochs']} epoch(s), each case "
            f"in a fresh driver + local Ray. {args.mem_factor}x = the 1x train Parquet file(s) written "
            f"{args.mem_factor} times (same file and row-group size, same valid split and feature map): only the "
            "table size changes. Peak MB; workers sampled with psutil every 0.2 s. RSS includes pages of Ray's "
            "shared-memory object store (512 MB, fixed) that a process has read; USS = the process's own "
            "(private) pages.",
            "",
            "| train rows | splits | driver peak RSS (ru_maxrss) | driver peak USS | peak RSS per train worker | "
            "peak USS per train worker | SplitCoordinator peak RSS | run wall s |",
            "|---:|---|---:|---:|---|---|---:|---:|",
        ]
        by_tag = {}
        for case in mem["cases"]:
            run = case["runs"][0]
            rss = run["rss"]
            how = {True: "materialised", False: "streamed"}.get(run.get("materialize"), "auto")
            if run.get("materialize") is None:
                how += f" ({'materialised' if run.get('materialized') else 'streamed'})"
            sc = rss["roles"].get("split_coordinator", {}).get("max_mb", float("nan"))
            by_tag[run["tag"]] = (
                case["driver_ru_maxrss_mb"],
                rss["driver_sampled_uss_mb"],
                rss["train_workers_mb"],
                rss["train_workers_uss_mb"],
            )
            lines.append(
                f"| {run['train_rows']:,} | {how} | {case['driver_ru_maxrss_mb']:,.0f} | "
                f"{rss['driver_sampled_uss_mb']:,.0f} | {', '.join(f'{x:,.0f}' for x in rss['train_workers_mb'])} | "
                f"{', '.join(f'{x:,.0f}' for x in rss['train_workers_uss_mb'])} | {sc:,.0f} | {run['wall_s']:.0f} |"
            )
        for big, small in mem["ratios"]:
            if big in by_tag and small in by_tag:
                (d2, du2, w2, wu2), (d1, du1, w1, wu1) = by_tag[big], by_tag[small]
                lines.append(
                    f"| **{big} / {small}** (target <= 1.2) | | **{d2 / d1:.2f}** | **{du2 / du1:.2f}** | "
                    f"**{max(w2) / max(w1):.2f}** (max worker) | **{max(wu2) / max(wu1):.2f}** (max worker) | | |"
                )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work-dir",
        default=str(ROOT / "benchmarks" / "_work" / "train_throughput"),
        help="artefacts, dataset and encode cache (reused); default: %(default)s",
    )
    parser.add_argument(
        "--config",
        default=str(ROOT / "configs" / "default.yaml"),
        help="base experiment config (audio encoder switched to logmel); default: %(default)s",
    )
    parser.add_argument("--size", choices=["small", "medium"], default="small", help="built-in dataset size")
    parser.add_argument("--users", type=int, default=0, help="keep only the first N users (0 = all)")
    parser.add_argument("--models", nargs="+", default=["marn", "din"], help="models to time")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="Ray worker counts")
    parser.add_argument(
        "--scaling",
        choices=["strong", "weak"],
        default="strong",
        help="strong: the config's global batch split over the W workers; weak: each worker takes "
        "the config's batch (the bare loop's batch), a global batch of W x batch",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="epochs per Ray throughput run (epochs 2..N are reported; epoch 1 is warm-up)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="torch threads per worker of the extra 1-worker diagnostic run (and a bare-loop thread "
        "count measured in any case); default: %(default)s",
    )
    parser.add_argument(
        "--materialize",
        choices=["auto", "on", "off"],
        default="auto",
        help="train/valid splits of the throughput runs: run_training's size rule (auto), kept in the "
        "object store (on) or streamed from Parquet every epoch (off)",
    )
    parser.add_argument(
        "--prefetch-batches", type=int, default=None, help="the loop's prefetch_batches (default: its own)"
    )
    parser.add_argument("--mem-model", default="marn", help="model of the memory runs")
    parser.add_argument("--mem-workers", type=int, default=2, help="Ray workers of the memory runs")
    parser.add_argument("--mem-epochs", type=int, default=1, help="epochs of each memory run")
    parser.add_argument("--mem-factor", type=int, default=10, help="how many times the train table is repeated")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput runs and the bare loop")
    parser.add_argument(
        "--no-diagnostics", action="store_true", help="skip the data-only run and the threads_per_worker=--threads run"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: only the first 150 users (~12k train rows)")
    parser.add_argument("--verbose", action="store_true", help="stream the Ray children's full output")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-print the report from <work-dir>/results.json of an earlier run; measures nothing",
    )
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child_main(Path(args._child))
        return
    if args.quick:
        args.users = args.users or 150
    if args.report_only:
        saved = json.loads((Path(args.work_dir) / "results.json").read_text())
        vars(args).update(saved.get("args", {}))
        print(
            report(
                args,
                saved["machine"],
                saved["throughput"],
                saved["memory"],
                saved["bare"],
                saved["counts"],
                saved["wall_s"],
            )
        )
        return
    started = time.perf_counter()
    machine = {"argv": [".venv/bin/python", "benchmarks/train_throughput.py", *sys.argv[1:]], **describe_machine()}
    log(f"machine: {machine['cores']} cores, load average {machine['load_before']}")
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config_path = bench_config(work, Path(args.config))
    data_dir, cache_dir = ensure_dataset(work, args.size, config_path)
    if args.users:
        data_dir = cut_users(data_dir, work / f"data_{args.size}_{args.users}u", args.users)
    t = time.perf_counter()
    prepared_root = work / "prepared"
    counts = prepare(config_path, data_dir, cache_dir, prepared_root, args.mem_factor)
    from recsys.config import load_config
    from recsys.features.prepared import PreparedDir

    base, big = PreparedDir(prepared_root / "1x"), PreparedDir(prepared_root / f"{args.mem_factor}x")
    log(f"prepared {counts} (+ {args.mem_factor}x train) in {time.perf_counter() - t:.0f} s")

    machine["batch_size"] = load_config(config_path).train.batch_size
    storage = work / "runs"
    if storage.exists():
        shutil.rmtree(storage)
    common = {
        "config": str(config_path),
        "data_dir": str(data_dir),
        "cache_dir": str(cache_dir),
        "storage": str(storage),
    }
    bare: list[dict] = []
    thr = mem = None

    if not args.no_throughput:
        materialize = {"auto": None, "on": True, "off": False}[args.materialize]
        base_options = {} if args.prefetch_batches is None else {"prefetch_batches": args.prefetch_batches}
        common_run = {
            "epochs": args.epochs,
            "prepared": str(base.path),
            "train_rows": counts["train"],
            "materialize": materialize,
        }

        # strong scaling: every run has the config's global batch (each of W workers takes batch/W); weak
        # scaling: each worker takes the config's batch (a global batch of W x batch), as the bare loop does.
        def batch_of(w: int) -> dict:
            return {"batch_size": w * machine["batch_size"]} if args.scaling == "weak" else {}

        groups: dict[str, list[dict]] = {
            m: [
                {
                    "name": f"{m}-w{w}",
                    "model": m,
                    "workers": w,
                    **common_run,
                    **batch_of(w),
                    "loop_options": dict(base_options),
                }
                for w in args.workers
            ]
            for m in args.models
        }
        if not args.no_diagnostics:
            m = args.models[0]
            if args.threads != 1:
                groups[m].append(
                    {
                        "name": f"{m}-w1-t{args.threads}",
                        "model": m,
                        "workers": 1,
                        **common_run,
                        "loop_options": {**base_options, "threads_per_worker": args.threads},
                    }
                )
            groups[m].append({"name": "data-only-w1", "model": m, "workers": 1, **common_run, "data_only": True})
        # like for like: the bare loop at every total thread count a Ray run uses (workers x threads_per_worker)
        thread_counts = sorted(
            {compute_threads(r) for g in groups.values() for r in g if not r.get("data_only")} | {args.threads}
        )
        train = load_train_batch(base)  # in-memory tensors, loaded once, in this process (no Ray here)

        def bare_round(model: str, when: str) -> None:
            for threads in thread_counts:
                res = {**bare_pass(config_path, model, base, train, threads), "when": when, "load": loadavg()}
                bare.append(res)
                log(
                    f"bare {model} {threads} thread(s) ({when} Ray): {res['samples_per_s']:,.0f} samples/s "
                    f"({res['seconds']:.1f} s), load {res['load']}"
                )

        # Per model: bare loop, then that model's Ray runs in one fresh driver + local Ray, then the bare loop
        # again; the reference is the mean of the two rounds (load drifts on a shared machine, so the bare
        # rounds are kept as close in time to the Ray runs as the Ray startup allows).
        thr = {"runs": []}
        for model, runs in groups.items():
            bare_round(model, "before")
            # memory sampled every 1 s and without USS: the sampler's own CPU should not slow the runs timed
            thr["runs"] += run_child(
                work, f"throughput-{model}", {**common, "runs": runs, "interval": 1.0, "uss": False}, args.verbose
            )["runs"]
            bare_round(model, "after")
        del train

    if not args.no_memory:
        # 3. memory: each case in a fresh driver + Ray. What users get (auto) at 1x and at factor x, and 1x
        # streamed: auto materialises a small split, so "factor x / 1x streamed" compares streaming with streaming.
        f = f"{args.mem_factor}x"
        mem = {
            "model": args.mem_model,
            "workers": args.mem_workers,
            "epochs": args.mem_epochs,
            "cases": [],
            "ratios": [(f"{f} auto", "1x auto"), (f"{f} auto", "1x streamed")],
        }

        def mem_case(tag: str, prepared: PreparedDir, rows: int, materialize: bool | None) -> dict[str, Any]:
            name = "mem-" + tag.replace(" ", "-")
            run = {
                "name": name,
                "tag": tag,
                "model": args.mem_model,
                "workers": args.mem_workers,
                "epochs": args.mem_epochs,
                "prepared": str(prepared.path),
                "train_rows": rows,
                "materialize": materialize,
            }
            case = run_child(work, name, {**common, "runs": [run]}, args.verbose)
            mem["cases"].append(case)
            return case["runs"][0]

        mem_case("1x auto", base, counts["train"], None)
        mem_case("1x streamed", base, counts["train"], False)
        if mem_case(f"{f} auto", big, counts["train"] * args.mem_factor, None).get("materialized"):
            mem_case(f"{f} streamed", big, counts["train"] * args.mem_factor, False)  # auto kept it in memory
            mem["ratios"][1] = (f"{f} streamed", "1x streamed")

    machine["load_after"] = loadavg()
    wall = time.perf_counter() - started
    text = report(args, machine, thr, mem, bare, counts, wall)
    (work / "report.md").write_text(text)
    (work / "results.json").write_text(
        json.dumps(
            {
                "args": {k: v for k, v in vars(args).items() if k not in ("report_only", "_child")},
                "machine": machine,
                "throughput": thr,
                "bare": bare,
                "memory": mem,
                "counts": counts,
                "wall_s": wall,
            },
            indent=1,
            default=str,
        )
    )
    print("\n" + text)
    log(f"done in {wall / 60:.1f} min; report -> {work / 'report.md'}")


if __name__ == "__main__":
    main()
