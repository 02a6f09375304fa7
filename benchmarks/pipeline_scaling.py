"""How the pipeline on Ray scales with the data: encode, prepare, one training epoch and evaluate at 1x, 4x
and 10x the built-in medium dataset's impressions, with wall time and peak memory per stage.

Usage (results go to benchmarks/RESULTS.md by hand, with the command and the machine's load)::

    .venv/bin/python benchmarks/pipeline_scaling.py [--work benchmarks/_work/scaling] [--factors 1,4,10]
        [--encode-actors 1,2] [--rows-per-partition 300000]

The 1x data is ``recsys data make-default --size medium`` (1.2M impressions, 20,000 users, 4,000
items). Nx repeats its users N times with new ids (every copy's rows, history lengths and splits are
the first's), so the catalogue and the encode cache stay the same and only the interactions grow,
like the built-in ``large`` size (10x). Every stage runs on one local Ray started here, the way a
cluster runs them:

- **encode** (once: the catalogue does not grow): items/s of the Ray Data encoder pool at each
  ``--encode-actors`` size, each from an empty cache (log-mel audio, as the training benchmark);
- **prepare**: the distributed Ray Data job (``prepare.ray_min_rows: 0``, ``--rows-per-partition``);
- **train**: one epoch of MARN, 2 workers (with ``recsys train``'s input checks, which validate the
  dataset in the driver);
- **evaluate**: the test split on a pool of 2 scoring actors (``evaluation.ray_min_rows: 0``).

Memory: peak RSS of this process (the driver) and of every Ray worker and actor, sampled every
0.2 s (:class:`harness.RssSampler`; USS too: RSS counts object-store pages a process has read).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import harness
from harness import ROOT, RssSampler, log, summarise_rss


def scaled_dataset(src: Path, out: Path, factor: int) -> Path:
    """``src`` with its users repeated ``factor`` times under new ids (same items and media)."""
    import polars as pl

    marker = out / "dataset.json"
    if marker.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for media in ("images", "audio"):
        if (src / media).exists():
            (out / media).symlink_to((src / media).resolve())
    shutil.copy(src / "items.parquet", out / "items.parquet")
    users, inter = pl.read_parquet(src / "users.parquet"), pl.read_parquet(src / "interactions.parquet")
    step = int(users["user_id"].max()) + 1
    shift = [pl.col("user_id") + k * step for k in range(factor)]
    pl.concat([users.with_columns(s) for s in shift]).write_parquet(out / "users.parquet")
    parts = [inter.with_columns(s) for s in shift]
    pl.concat(parts).write_parquet(out / "interactions.parquet", row_group_size=200_000)
    shutil.copy(src / "dataset.json", marker)  # last: the copy is complete
    return out


def bench_config(work: Path, data_dir: Path, rows_per_partition: int) -> Any:
    """configs/default.yaml with log-mel audio, one epoch, the distributed prepare and evaluation."""
    import yaml

    from recsys.config import parse_config

    raw = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    raw["data"]["path"] = str(data_dir)
    raw["encoders"]["audio"] = {"kind": "logmel"}
    raw["train"].update({"epochs": 1, "workers": 2, "storage_path": str(work / "runs")})
    raw["prepare"] = {"ray_min_rows": 0, "rows_per_partition": rows_per_partition}
    raw["evaluation"] = {"ray_min_rows": 0, "actors": 2}
    raw["tracking"] = {"enabled": False}
    return parse_config(raw)


def measure(sampler: RssSampler, phase: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``fn(*args, **kwargs)`` as ``phase``: its result, wall seconds and the phase's memory peaks."""
    sampler.set_phase(phase)
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    wall = time.perf_counter() - t
    sampler.set_phase("idle")
    mem = summarise_rss(sampler.peaks[phase])
    log(f"{phase}: {wall:.1f} s, driver {mem['driver_sampled_mb']:.0f} MB")
    return out, {"wall_s": wall, **mem}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "scaling"))
    parser.add_argument("--factors", default="1,4,10", help="impressions as multiples of medium (default 1,4,10)")
    parser.add_argument("--encode-actors", default="1,2", help="encoder pool sizes to time (default 1,2)")
    parser.add_argument("--rows-per-partition", type=int, default=300_000, help="prepare.rows_per_partition")
    parser.add_argument("--size", default="medium", help="the 1x built-in size (default medium; small to try it)")
    args = parser.parse_args()

    from recsys.data.synthetic import make_default_dataset
    from recsys.encoders.pipeline import encode_items
    from recsys.evaluation import evaluate_checkpoint
    from recsys.features.prepare_on_ray import interaction_rows, partitions_for, prepare_on_ray
    from recsys.features.prepared import PreparedDir
    from training.launch import init_ray, run_training

    work = Path(args.work)
    base = work / f"data-{args.size}-1x"
    if not (base / "dataset.json").is_file():
        log(f"making the built-in dataset ({args.size}) -> {base}")
        make_default_dataset(base, size=args.size, progress=False)
    factors = [int(f) for f in args.factors.split(",")]
    init_ray(None, 4)
    machine = harness.describe_machine()
    sampler = RssSampler(interval=0.2)
    sampler.start()
    results: dict[str, Any] = {"machine": machine, "args": vars(args), "encode": {}, "scales": {}}
    config = bench_config(work, base, args.rows_per_partition)
    cache = work / "cache"
    for actors in [int(a) for a in args.encode_actors.split(",")]:
        scratch = work / f"encode-cache-{actors}"
        shutil.rmtree(scratch, ignore_errors=True)
        encoders = config.encoders.model_copy(update={"actors": actors})
        report, stats = measure(
            sampler, f"encode_{actors}", encode_items, base, encoders, cache_dir=scratch, progress=False
        )
        items = sum(m.n_encoded for m in report.modalities.values())
        results["encode"][actors] = {"items_encoded": items, "items_per_s": items / stats["wall_s"], **stats}
        if not cache.exists():
            shutil.copytree(scratch, cache)
    for factor in factors:
        data = base if factor == 1 else scaled_dataset(base, work / f"data-{args.size}-{factor}x", factor)
        cfg = bench_config(work, data, args.rows_per_partition)
        rows = interaction_rows(data)
        out = PreparedDir(work / f"prepared-{factor}x")
        partitions = partitions_for(rows, args.rows_per_partition)
        _, prep = measure(sampler, f"prepare_{factor}x", prepare_on_ray, cfg, data, cache, out.path, partitions)
        name = f"scale-{factor}x"
        trained, train = measure(
            sampler,
            f"train_{factor}x",
            run_training,
            cfg,
            cache_dir=cache,
            prepared=out,
            run_name=name,
            show_progress=False,
        )
        _, evaluate = measure(
            sampler,
            f"evaluate_{factor}x",
            evaluate_checkpoint,
            trained.best_checkpoint,
            out,
            overrides={"ray_min_rows": 0, "actors": 2},
        )
        results["scales"][factor] = {
            "interactions": rows,
            "partitions": partitions,
            "prepare": prep,
            "train_epoch": train,
            "evaluate": evaluate,
        }
    sampler.stop()
    import ray

    ray.shutdown()
    path = work / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    log(f"results -> {path}")
    print(table(results))


#: Substrings of the Ray process roles (:func:`harness.role_of`) that do a stage's work.
STAGE_ROLES = {
    "prepare": ("_ExamplesWriter", "_split_partition", "_read_fragment", "HashShuffle", "Aggregat"),
    "train_epoch": ("train_worker", "SplitCoordinator"),
    "evaluate": ("ScoringActor", "ReadParquet"),
}


def table(results: dict[str, Any]) -> str:
    """A markdown table: wall time and peak memory per stage and scale, plus the encoder pool's rates."""
    lines = [
        "| scale | interactions | stage | wall s | driver MB | max Ray worker/actor MB (role) |",
        "|---|---|---|---|---|---|",
    ]
    for factor, scale in results["scales"].items():
        for stage in ("prepare", "train_epoch", "evaluate"):
            m = scale[stage]
            # the stage's own Ray processes (idle workers of earlier stages stay alive and are sampled too)
            roles = {r: v for r, v in m["roles"].items() if any(key in r for key in STAGE_ROLES[stage])}
            top = max(roles.items(), key=lambda rv: rv[1]["max_mb"], default=("-", {"max_mb": 0.0}))
            lines.append(
                f"| {factor}x | {scale['interactions']:,} | {stage} | {m['wall_s']:.1f} | "
                f"{m['driver_sampled_mb']:.0f} | {top[1]['max_mb']:.0f} ({top[0]}) |"
            )
    for actors, e in results["encode"].items():
        lines.append(
            f"\nencode, {actors} actor(s): {e['items_encoded']} items in {e['wall_s']:.1f} s = "
            f"{e['items_per_s']:.1f} items/s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
