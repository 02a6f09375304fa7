"""End-to-end fixtures: the built-in dataset made and encoded once per session through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECSYS = [sys.executable, "-m", "recsys.cli"]


def run_cli(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the `recsys` command in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.run([*RECSYS, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"recsys {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class EncodedDataset:
    data_dir: Path
    cache_dir: Path
    config: Path
    encode_output: str


@pytest.fixture(scope="session")
def default_dataset(tmp_path_factory: pytest.TempPathFactory) -> EncodedDataset:
    """`recsys data make-default` then `recsys encode` with configs/default.yaml (real encoders)."""
    root = tmp_path_factory.mktemp("default")
    data_dir, cache_dir = root / "data", root / "cache"
    run_cli("data", "make-default", "--out", str(data_dir), "--seed", "0", "--no-progress")
    out = run_cli("encode", str(data_dir), "--config", "configs/default.yaml", "--cache-dir", str(cache_dir), "--no-progress")
    return EncodedDataset(data_dir, cache_dir, ROOT / "configs" / "default.yaml", out.stdout)
