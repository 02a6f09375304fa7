"""Training throughput of the full Ray pipeline vs a bare PyTorch loop, and memory at 10x the data.

Measures, in one run, on the built-in dataset (configs/default.yaml with ``encoders.audio.kind:
logmel`` so that encoding stays fast; the model cost is what is measured):

1. samples/s of MARN and DIN through ``training.launch.run_training`` on a local Ray (prepared
   Parquet -> Ray Data -> TorchTrainer), with 1 and 2 workers: the ``samples_per_s`` the training
   loop reports for the LAST epoch (epoch 1 includes warm-up and is excluded);
2. samples/s of a bare single-process loop over in-memory tensors: same model
   (``recsys.models.build_model`` on the same prepared feature map / item table), same global
   batch size, same loss and Adam, one full pass over the prepared train split after 3 warm-up
   steps, ``torch.set_num_threads(--threads)``; and the ratio Ray / bare per case;
3. peak RSS (MB) of the driver and of each RayTrainWorker process for the train split (1x) and for
   the same Parquet file written 10 times (10x rows, same file/row-group size, same valid split,
   same feature map): this isolates the size of the training table. Worker RSS is sampled with
   psutil every 0.2 s from a thread of the driver; the driver's peak is ``ru_maxrss``. Each
   memory case runs in its own fresh driver process with its own local Ray. Not covered: the
   driver's input checks (``check_inputs`` reads the raw interactions) and the featurising
   Ray task, which scale with the raw dataset, not with the prepared table.

The bare loop runs before and after the Ray runs; its reference rate is the mean of the two
(the machine is shared: the spread between the two rounds shows how much the load drifted).

Every Ray case runs in a child process of this script (a fresh driver and local Ray per group);
runs reuse one prepared directory (the Ray runs are pre-seeded with it, so the measured runs do
not re-featurise). Diagnostics (on by default): Ray Data iteration alone (no model) through the
same TorchTrainer/streaming-split path, Ray 1 worker with ``threads_per_worker=2``, and the bare
loop with 1 thread. Artefacts go to ``--work-dir`` (default ``benchmarks/_work/train_throughput``,
git-ignored); the dataset and the encode cache there are reused by later runs.

Run (full benchmark, ~15 min on 2 cores; the first run also makes and encodes the dataset):

    .venv/bin/python benchmarks/train_throughput.py

Quick smoke test (150 users = ~12k train rows, same steps, ~5 min on an idle machine):

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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENV = {"RAY_ADDRESS": "local",  # always a fresh local Ray, never a cluster someone else started here
       "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "RAY_DEDUP_LOGS": "0"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


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


def prepare(config_path: Path, data_dir: Path, cache_dir: Path, out: Path, factor: int) -> dict:
    """Prepared features (what run_training's Ray task writes) + a train split repeated ``factor`` x."""
    from recsys.config import load_config
    from recsys.data.prepare import prepare_data, write_prepared

    if out.exists():
        shutil.rmtree(out)
    counts = write_prepared(prepare_data(load_config(config_path), data_dir, cache_dir), out / "1x")
    (out / "1x" / "counts.json").write_text(json.dumps(counts))
    big = out / f"train_{factor}x"
    big.mkdir()
    parts = sorted((out / "1x" / "train").glob("*.parquet"))
    for k in range(factor):  # the same files `factor` times: same file and row-group sizes, factor x rows
        for p in parts:
            os.link(p, big / f"rep{k:02d}-{p.name}")
    return counts


def seed_run(storage: Path, run_name: str, base: Path, train_dir: Path, counts: dict) -> None:
    """A run directory whose prepared/ is already there, so run_training(resume=True) skips featurising."""
    run_dir = storage / run_name
    prepared = run_dir / "prepared"
    prepared.mkdir(parents=True)
    for name in ("feature_map.json", "item_table.pt"):
        os.link(base / name, prepared / name)
    for split, src in (("train", train_dir), ("valid", base / "valid"), ("test", base / "test")):
        shutil.copytree(src, prepared / split, copy_function=os.link)
    (prepared / "counts.json").write_text(json.dumps(counts))
    (run_dir / "run.json").write_text(json.dumps({"run_name": run_name, "seeded_by": "benchmarks/train_throughput.py"}))


# --------------------------------------------------------------------------- RSS sampling (child driver)


def import_psutil():
    """psutil ships inside Ray (ray/thirdparty_files, put on sys.path by ``import ray``)."""
    import ray  # noqa: F401

    import psutil

    return psutil


def role_of(cmdline: str) -> str:
    exe = cmdline.split(" ", 1)[0]
    if exe.endswith("/raylet"):
        return "raylet"
    if exe.endswith("/gcs_server"):
        return "gcs"
    for key, role in (("RayTrainWorker", "train_worker"), ("SplitCoordinator", "split_coordinator"),
                      ("TrainController", "train_controller"), ("FooterReader", "parquet_footer_reader"),
                      ("ray::", "other_ray_worker"), ("default_worker.py", "other_ray_worker")):
        if key in cmdline:
            return role
    return "other"


class RssSampler(threading.Thread):
    """Peak RSS per (phase, role, pid) of this process's descendants, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.psutil, self.interval = import_psutil(), interval
        self.me = self.psutil.Process()
        self.phase = "idle"
        self.peaks: dict[str, dict] = {}
        self._halt = threading.Event()

    def sample(self) -> None:
        ps = self.psutil
        book = self.peaks.setdefault(self.phase, {"driver": 0, "procs": {}})
        book["driver"] = max(book["driver"], self.me.memory_info().rss)
        try:
            children = self.me.children(recursive=True)
        except ps.Error:
            return
        for proc in children:
            try:
                role = role_of(" ".join(proc.cmdline()))
                rss = proc.memory_info().rss
            except ps.Error:
                continue
            key = f"{role}:{proc.pid}"
            book["procs"][key] = max(book["procs"].get(key, 0), rss)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def summarise_rss(book: dict) -> dict:
    mb = 1024 ** 2
    by_role: dict[str, list[float]] = {}
    for key, rss in book["procs"].items():
        by_role.setdefault(key.split(":")[0], []).append(rss / mb)
    return {"driver_sampled_mb": book["driver"] / mb,
            "roles": {r: {"n": len(v), "max_mb": max(v), "sum_mb": sum(v)} for r, v in by_role.items()},
            "train_workers_mb": sorted(by_role.get("train_worker", []), reverse=True)}


# --------------------------------------------------------------------------- child: Ray runs


def data_only_loop(loop_config: dict) -> None:
    """Diagnostic train loop: the training loop's data path (same shard, batch, shuffle) without a model."""
    import ray.train

    from recsys.data.examples import field_widths, model_batch
    from recsys.data.feature_map import FeatureMap

    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    widths = field_widths(FeatureMap.load(Path(loop_config["prepared_dir"]) / "feature_map.json"))
    shard = ray.train.get_dataset_shard("train")
    per_worker = max(1, loop_config["batch_size"] // world)
    import torch.distributed as dist

    rates = []
    for epoch in range(loop_config["epochs"]):
        start, seen, first = time.perf_counter(), 0, None
        for batch in shard.iter_torch_batches(batch_size=per_worker, local_shuffle_buffer_size=4 * per_worker,
                                              local_shuffle_seed=epoch * 1000 + ctx.get_world_rank()):
            seen += len(model_batch(batch, widths)["label"])
            first = time.perf_counter() - start if first is None else first
        elapsed = time.perf_counter() - start
        if dist.is_available() and dist.is_initialized():
            out = [None] * world
            dist.all_gather_object(out, seen)
            seen = sum(out)
        rates.append({"epoch": epoch + 1, "samples_per_s": seen / elapsed, "seconds": elapsed, "first_batch_s": first,
                      "after_first_samples_per_s": seen / max(elapsed - (first or 0), 1e-9)})
        ray.train.report(rates[-1])
    if ctx.get_world_rank() == 0:
        Path(loop_config["out"]).write_text(json.dumps(rates))


def run_data_only(config, prepared: Path, workers: int, epochs: int, storage: Path, name: str) -> list[dict]:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        data_only_loop,
        train_loop_config={"prepared_dir": str(prepared), "batch_size": config.train.batch_size, "epochs": epochs,
                           "out": str(storage / f"{name}.json")},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        datasets={"train": ray.data.read_parquet(str(prepared / "train"))},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage / name)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(result.error)
    return json.loads((storage / f"{name}.json").read_text())  # written by rank 0 (same machine)


def child_main(spec_path: Path) -> None:
    from recsys.config import load_config
    from training.launch import init_ray, run_training

    spec = json.loads(spec_path.read_text())
    os.environ.update(ENV)
    sampler = RssSampler(spec.get("interval", 0.2))
    sampler.start()
    init_ray(None, max(r["workers"] for r in spec["runs"]))
    storage = Path(spec["storage"])
    results = []
    for r in spec["runs"]:
        config = load_config(spec["config"])
        config.model.name = r["model"]
        config.train.epochs = r["epochs"]
        config.train.storage_path = str(storage)
        base = Path(spec["prepared_base"])
        counts = json.loads((base / "counts.json").read_text())
        counts["train"] = r["train_rows"]
        seed_run(storage, r["name"], base, Path(r["train_dir"]), counts)
        print(f"[bench-child] run {r['name']}: {r['model']} x{r['workers']} workers, {r['epochs']} epochs, "
              f"{r['train_rows']} train rows, load {loadavg()}", flush=True)
        sampler.phase = r["name"]
        load_before = os.getloadavg()
        t = time.perf_counter()
        if r.get("data_only"):
            history = run_data_only(config, storage / r["name"] / "prepared", r["workers"], r["epochs"], storage,
                                    r["name"] + "-ray")
        else:
            res = run_training(config, data_dir=spec["data_dir"], cache_dir=spec["cache_dir"], workers=r["workers"],
                               run_name=r["name"], resume=True, loop_options=r.get("loop_options"))
            history = res.history
        wall = time.perf_counter() - t
        sampler.sample()
        sampler.phase = "idle"
        results.append({**r, "wall_s": wall, "history": history, "load_before": load_before,
                        "load_after": os.getloadavg(), "rss": summarise_rss(sampler.peaks.get(r["name"], {"driver": 0, "procs": {}}))})
        print(f"[bench-child] run {r['name']} done in {wall:.0f} s: samples/s per epoch "
              f"{[round(h.get('samples_per_s', 0)) for h in history]}", flush=True)
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
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_child", str(spec_path)],
                                cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        last = ""
        for line in proc.stdout:
            fh.write(line)
            if verbose or (line != last and (line.startswith("[bench-child]") or ("epoch" in line and "done:" in line))):
                print("   " + line.rstrip(), flush=True)
            last = line
        rc = proc.wait()
    if rc != 0:
        tail = log_path.read_text()[-4000:]
        raise SystemExit(f"child '{group}' failed (exit {rc}); end of {log_path}:\n{tail}")
    return json.loads(Path(spec["out"]).read_text())


# --------------------------------------------------------------------------- bare loop (parent)


def load_train_tensors(prepared: Path) -> tuple[dict, int]:
    import polars as pl
    import torch

    from recsys.data.examples import BATCH_KEYS, field_widths, model_batch
    from recsys.data.feature_map import FeatureMap

    frame = pl.read_parquet(prepared / "train")
    columns = {k: torch.from_numpy(frame[k].to_numpy().copy()) for k in BATCH_KEYS}
    widths = field_widths(FeatureMap.load(prepared / "feature_map.json"))
    return model_batch(columns, widths), frame.height


def bare_pass(config_path: Path, model_name: str, prepared: Path, tensors: dict, threads: int,
              warmup: int = 3) -> dict:
    """One full shuffled pass of forward+backward+Adam over in-memory batches (after ``warmup`` steps)."""
    import numpy as np
    import torch

    from recsys.config import load_config
    from recsys.data.feature_map import FeatureMap
    from recsys.data.item_table import ItemTable
    from recsys.losses import total_loss
    from recsys.models import ItemInputs, build_model

    torch.set_num_threads(threads)
    config = load_config(config_path)
    config.model.name = model_name
    fm, table = FeatureMap.load(prepared / "feature_map.json"), ItemTable.load(prepared / "item_table.pt")
    items = ItemInputs.from_table(table)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, fm, table.dims())
    opt = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay)
    n = len(tensors["label"])
    bs = config.train.batch_size
    order = torch.from_numpy(np.random.default_rng(config.train.seed).permutation(n))
    batches = [{k: v[order[s:s + bs]] for k, v in tensors.items()} for s in range(0, n, bs)]

    def step(b: dict) -> None:
        loss, _ = total_loss(model(b, items), b["label"], config.model)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    for b in batches[:warmup]:
        step(b)
    start = time.perf_counter()
    for b in batches:
        step(b)
    elapsed = time.perf_counter() - start
    return {"model": model_name, "threads": threads, "samples": n, "seconds": elapsed, "samples_per_s": n / elapsed}


# --------------------------------------------------------------------------- report


def last_rate(run: dict) -> float:
    return float(run["history"][-1]["samples_per_s"])


def report(args, machine: dict, thr: dict, mem: dict, bare: list[dict], diag: dict | None, counts: dict,
           wall: float) -> str:
    rounds: dict[tuple, list[float]] = {}
    for b in bare:
        rounds.setdefault((b["model"], b["threads"]), []).append(b["samples_per_s"])
    bare_by = {k: sum(v) / len(v) for k, v in rounds.items()}  # mean of the before/after rounds
    lines = [f"## Training throughput (`{' '.join(machine['argv'])}`)", "",
             f"Machine: {machine['cores']} logical cores ({machine['physical']} physical), {machine['ram_gb']:.0f} GiB RAM, "
             f"torch {machine['torch']}, ray {machine['ray']}. Load average (1/5/15 min): before {machine['load_before']}, "
             f"after {machine['load_after']}. Wall time {wall / 60:.1f} min.", "",
             f"Data: built-in `{args.size}` dataset{' cut to %d users' % args.users if args.users else ''}, "
             f"{counts['train']:,} train rows, global batch {machine['batch_size']}, {args.epochs} epochs per Ray run "
             f"(samples/s of the last epoch; epoch 1 = warm-up excluded). Bare loop: {args.threads} torch threads, "
             f"in-memory tensors, one full pass after 3 warm-up steps. Ray workers use the loop's default "
             f"threads_per_worker (1).", "",
             "| what | workers | samples/s | ratio vs bare (target >= 0.8) | per epoch / per round | run wall s | 1-min load start -> end |",
             "|---|---:|---:|---:|---|---:|---|"]
    for model in args.models:
        b = bare_by[(model, args.threads)]
        each = ", ".join(f"{x:,.0f}" for x in rounds[(model, args.threads)])
        loads = ", ".join(x["load"].split(" / ")[0] for x in bare if x["model"] == model and x["threads"] == args.threads)
        lines.append(f"| {model} bare loop ({args.threads} threads; mean of before/after Ray) | 1 process | {b:,.0f} | 1.00 "
                     f"| {each} | | {loads} |")
        for run in thr["runs"]:
            if run["model"] == model and not run.get("loop_options") and not run.get("data_only"):
                r = last_rate(run)
                eps = ", ".join(f"{h['samples_per_s']:,.0f}" for h in run["history"])
                lines.append(f"| {model} Ray pipeline | {run['workers']} | {r:,.0f} | **{r / b:.2f}** | {eps} | {run['wall_s']:.0f} "
                             f"| {run['load_before'][0]:.1f} -> {run['load_after'][0]:.1f} |")
    lines += ["", f"Memory: {mem['model']} with {mem['workers']} Ray workers, {mem['epochs']} epoch(s), each case "
              f"in a fresh driver + local Ray. {args.mem_factor}x = the 1x train Parquet file(s) written {args.mem_factor} times (same file and "
              "row-group size, same valid split and feature map): only the table size changes. Peak RSS in MB "
              "(workers: psutil every 0.2 s; RSS includes object-store pages a process touched).", "",
              "| train rows | driver peak (ru_maxrss) | driver peak (sampled) | peak per train worker | "
              "SplitCoordinator peak | other Ray workers (max) | run wall s |",
              "|---:|---:|---:|---|---:|---:|---:|"]
    mem_rows = []
    for case in mem["cases"]:
        run = case["runs"][0]
        rss = run["rss"]
        roles = rss["roles"]
        workers = ", ".join(f"{x:,.0f}" for x in rss["train_workers_mb"]) or "n/a"
        sc = roles.get("split_coordinator", {}).get("max_mb", float("nan"))
        other = roles.get("other_ray_worker", {}).get("max_mb", float("nan"))
        mem_rows.append((case["driver_ru_maxrss_mb"], rss["train_workers_mb"], sc))
        lines.append(f"| {run['train_rows']:,} | {case['driver_ru_maxrss_mb']:,.0f} | {rss['driver_sampled_mb']:,.0f} | "
                     f"{workers} | {sc:,.0f} | {other:,.0f} | {run['wall_s']:.0f} |")
    for case in mem["cases"]:
        fr = case["runs"][0]["rss"]["roles"].get("parquet_footer_reader")
        if fr:
            lines.append(f"| ({case['runs'][0]['train_rows']:,} rows: {fr['n']} Parquet FooterReader actor processes, "
                         f"peak {fr['max_mb']:,.0f} MB each at most, {fr['sum_mb']:,.0f} MB summed) | | | | | | |")
    if len(mem_rows) == 2:
        (d1, w1, s1), (d2, w2, s2) = mem_rows
        per_worker = ", ".join(f"{b / a:.2f}" for a, b in zip(w1, w2))
        lines.append(f"| **{args.mem_factor}x / 1x** (target <= 1.2) | **{d2 / d1:.2f}** | | **{per_worker}** "
                     f"(workers by RSS rank) | {s2 / s1:.2f} | | |")
    if diag is not None:
        lines += ["", "Diagnostics (same run):", "",
                  "| what | workers | samples/s | note |", "|---|---:|---:|---|"]
        for b in bare:
            if b["threads"] != args.threads:
                same_round = [x for x in bare if x["model"] == b["model"] and x["threads"] == args.threads
                              and x["when"] == b["when"]][0]["samples_per_s"]
                lines.append(f"| {b['model']} bare loop, {b['threads']} thread(s) | 1 process | {b['samples_per_s']:,.0f} | "
                             f"ratio to {args.threads} threads (same round) {b['samples_per_s'] / same_round:.2f} |")
        for run in thr["runs"]:
            if run.get("loop_options"):
                r = last_rate(run)
                lines.append(f"| {run['model']} Ray pipeline, threads_per_worker={run['loop_options']['threads_per_worker']} "
                             f"| {run['workers']} | {r:,.0f} | ratio vs bare {r / bare_by[(run['model'], args.threads)]:.2f} |")
            if run.get("data_only"):
                h = run["history"][-1]
                lines.append(f"| Ray Data iteration only (no model) | {run['workers']} | {last_rate(run):,.0f} | "
                             f"same shard/batch/shuffle as the loop; epoch {h['epoch']}: {h['seconds']:.1f} s, of which "
                             f"{h['first_batch_s']:.1f} s to the first batch, then {h['after_first_samples_per_s']:,.0f} samples/s |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "_work" / "train_throughput"),
                        help="artefacts, dataset and encode cache (reused); default: %(default)s")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"),
                        help="base experiment config (audio encoder switched to logmel); default: %(default)s")
    parser.add_argument("--size", choices=["small", "medium"], default="small", help="built-in dataset size")
    parser.add_argument("--users", type=int, default=0, help="keep only the first N users (0 = all)")
    parser.add_argument("--models", nargs="+", default=["marn", "din"], help="models to time")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="Ray worker counts")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per Ray throughput run (the last is reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads of the bare loop")
    parser.add_argument("--mem-model", default="marn", help="model of the memory runs")
    parser.add_argument("--mem-workers", type=int, default=2, help="Ray workers of the memory runs")
    parser.add_argument("--mem-epochs", type=int, default=1, help="epochs of each memory run")
    parser.add_argument("--mem-factor", type=int, default=10, help="how many times the train table is repeated")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the data-only, threads_per_worker=2 and 1-thread bare runs")
    parser.add_argument("--quick", action="store_true", help="smoke test: only the first 150 users (~12k train rows)")
    parser.add_argument("--verbose", action="store_true", help="stream the Ray children's full output")
    parser.add_argument("--report-only", action="store_true",
                        help="re-print the report from <work-dir>/results.json of an earlier run; measures nothing")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child_main(Path(args._child))
        return
    if args.quick:
        args.users, args.epochs = args.users or 150, 2
    if args.report_only:
        saved = json.loads((Path(args.work_dir) / "results.json").read_text())
        vars(args).update(saved.get("args", {}))
        print(report(args, saved["machine"], saved["throughput"], saved["memory"], saved["bare"],
                     None if args.no_diagnostics else {}, saved["counts"], saved["wall_s"]))
        return
    started = time.perf_counter()
    import ray
    import torch

    psutil = import_psutil()

    machine = {"argv": [".venv/bin/python", "benchmarks/train_throughput.py", *sys.argv[1:]],
               "cores": os.cpu_count(), "physical": psutil.cpu_count(logical=False),
               "ram_gb": psutil.virtual_memory().total / 1024 ** 3, "torch": torch.__version__, "ray": ray.__version__,
               "load_before": loadavg()}
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
    base = prepared_root / "1x"
    big = prepared_root / f"train_{args.mem_factor}x"
    log(f"prepared {counts} (+ {args.mem_factor}x train) in {time.perf_counter() - t:.0f} s")
    from recsys.config import load_config

    machine["batch_size"] = load_config(config_path).train.batch_size
    storage = work / "runs"
    if storage.exists():
        shutil.rmtree(storage)
    common = {"config": str(config_path), "data_dir": str(data_dir), "cache_dir": str(cache_dir),
              "storage": str(storage), "prepared_base": str(base)}

    # 2a. bare loop before the Ray runs (in-memory tensors loaded once, in this process; no Ray here)
    tensors, _ = load_train_tensors(base)
    bare = []

    def bare_round(when: str, thread_counts: list[int]) -> None:
        for m in args.models:
            for threads in thread_counts:
                res = {**bare_pass(config_path, m, base, tensors, threads), "when": when, "load": loadavg()}
                bare.append(res)
                log(f"bare {m} {threads} thread(s) ({when} Ray): {res['samples_per_s']:,.0f} samples/s "
                    f"({res['seconds']:.1f} s), load {res['load']}")

    bare_round("before", [args.threads])

    # 1. Ray throughput (+ diagnostics) in one driver
    runs = [{"name": f"{m}-w{w}", "model": m, "workers": w, "epochs": args.epochs, "train_dir": str(base / "train"),
             "train_rows": counts["train"]} for m in args.models for w in args.workers]
    if not args.no_diagnostics:
        runs.append({"name": "data-only-w1", "model": args.models[0], "workers": 1, "epochs": args.epochs,
                     "train_dir": str(base / "train"), "train_rows": counts["train"], "data_only": True})
        runs.append({"name": f"{args.models[0]}-w1-t{args.threads}", "model": args.models[0], "workers": 1,
                     "epochs": args.epochs, "train_dir": str(base / "train"), "train_rows": counts["train"],
                     "loop_options": {"threads_per_worker": args.threads}})
    thr = run_child(work, "throughput", {**common, "runs": runs}, args.verbose)

    # 2b. bare loop again after the Ray runs (the reference is the mean of before and after: load drifts)
    bare_round("after", [args.threads] + ([1] if not args.no_diagnostics and args.threads != 1 else []))
    del tensors

    # 3. memory: 1x vs factor x, each in a fresh driver + Ray
    mem = {"model": args.mem_model, "workers": args.mem_workers, "epochs": args.mem_epochs, "cases": []}
    for tag, train_dir, rows in (("1x", base / "train", counts["train"]),
                                 (f"{args.mem_factor}x", big, counts["train"] * args.mem_factor)):
        run = {"name": f"mem-{tag}", "model": args.mem_model, "workers": args.mem_workers, "epochs": args.mem_epochs,
               "train_dir": str(train_dir), "train_rows": rows}
        mem["cases"].append(run_child(work, f"mem-{tag}", {**common, "runs": [run]}, args.verbose))

    machine["load_after"] = loadavg()
    wall = time.perf_counter() - started
    text = report(args, machine, thr, mem, bare, None if args.no_diagnostics else {}, counts, wall)
    (work / "report.md").write_text(text)
    (work / "results.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("report_only", "_child")},
                                                   "machine": machine, "throughput": thr, "bare": bare, "memory": mem,
                                                   "counts": counts, "wall_s": wall}, indent=1, default=str))
    print("\n" + text)
    log(f"done in {wall / 60:.1f} min; report -> {work / 'report.md'}")


if __name__ == "__main__":
    main()
