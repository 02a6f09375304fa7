"""Time and peak memory of the dataset checks (``recsys data check``, and the driver's input checks of
``recsys train``) on an interactions table of many rows.

Usage (results go to benchmarks/RESULTS.md by hand, with the command and the machine's load)::

    .venv/bin/python benchmarks/validate_scaling.py DATA_DIR [--rows 30000000] [--work benchmarks/_work/validate]

``DATA_DIR`` is any dataset (e.g. the built-in one, ``recsys data make-default``); its interactions are
resampled (rows drawn with replacement, seed 0) to ``--rows`` rows in Parquet row groups of 1M rows, beside
its items and users. Each measurement runs in a fresh Python process: ``validate_dataset`` with the default
config, then the process's wall time and peak RSS (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from harness import ROOT, loadavg, log

MEASURE = """
import json, resource, sys, time
from recsys.config import ExperimentConfig
from recsys.data.validate import validate_dataset
start = time.perf_counter()
report = validate_dataset(sys.argv[1], ExperimentConfig())
print(json.dumps({"ok": report.ok, "seconds": round(time.perf_counter() - start, 2),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def resampled(src: Path, out: Path, rows: int) -> Path:
    """``src`` with ``rows`` interactions drawn from its own (same items, users and media)."""
    import numpy as np
    import polars as pl

    if (out / "interactions.parquet").is_file() and pl.scan_parquet(out / "interactions.parquet").select(
        pl.len()
    ).collect().item() == rows:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("items.parquet", "users.parquet"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    for media in ("images", "audio"):
        if (src / media).exists():
            (out / media).symlink_to((src / media).resolve())
    inter = pl.read_parquet(src / "interactions.parquet")
    index = np.random.default_rng(0).integers(0, inter.height, rows)
    inter[index].write_parquet(out / "interactions.parquet", row_group_size=1_000_000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a dataset directory")
    parser.add_argument("--rows", type=int, default=30_000_000, help="interactions to check (default 30M)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "validate")
    args = parser.parse_args()
    data = resampled(args.data, args.work / f"rows-{args.rows}", args.rows)
    log(f"checking {args.rows:,} interactions in {data} (load {loadavg()})")
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(data)], capture_output=True, text=True, check=True)
    result = {"rows": args.rows, **json.loads(proc.stdout.strip().splitlines()[-1])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
