"""End-to-end fixtures: the built-in dataset made and encoded once per session through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
RECSYS = [sys.executable, "-m", "recsys.cli"]


def run_cli(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the `recsys` command in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.run([*RECSYS, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"recsys {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
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
    out = run_cli(
        "encode", str(data_dir), "--config", "configs/default.yaml", "--cache-dir", str(cache_dir), "--no-progress"
    )
    return EncodedDataset(data_dir, cache_dir, ROOT / "configs" / "default.yaml", out.stdout)


def cut_dataset(src: Path, out: Path, n_users: int) -> Path:
    """``src`` cut to its first ``n_users`` users (same items and media, so the encode cache applies)."""
    import shutil

    import polars as pl

    out.mkdir(parents=True)
    for name in ("items.parquet", "users.parquet"):
        shutil.copy(src / name, out / name)
    for media in ("images", "audio"):
        (out / media).symlink_to(src / media)
    inter = pl.read_parquet(src / "interactions.parquet")
    keep = inter["user_id"].unique().sort()[:n_users].implode()
    inter.filter(pl.col("user_id").is_in(keep)).write_parquet(out / "interactions.parquet")
    return out


def write_config(
    path: Path, data: Path, cache: Path, storage: Path, sections: dict[str, dict] | None = None, **train: object
) -> Path:
    """configs/default.yaml pointed at ``data``/``cache``/``storage``, short training (``train`` overrides;
    ``sections``: other sections' fields, e.g. ``{"prepare": {"ray_min_rows": 0}}``)."""
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    for name, fields in (sections or {}).items():
        raw.setdefault(name, {}).update(fields)
    raw["data"]["path"] = str(data)
    raw["encoders"]["cache_dir"] = str(cache)
    raw["train"].update(
        {"epochs": 2, "batch_size": 256, "storage_path": str(storage), "early_stopping_patience": 5, **train}
    )
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def small_dataset(default_dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in dataset cut to 120 users."""
    return cut_dataset(default_dataset.data_dir, tmp_path_factory.mktemp("small") / "data", 120)


@dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    config: Path
    data_dir: Path

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "best"


@pytest.fixture(scope="session")
def trained_run(small_dataset, default_dataset, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A tiny MARN run through `recsys train` (local Ray, 1 worker, 1 epoch): checkpoints plus prepared splits."""
    root = tmp_path_factory.mktemp("trained")
    config = write_config(
        root / "exp.yaml", small_dataset, default_dataset.cache_dir, root / "runs", epochs=1, workers=1
    )
    run_cli("train", "--config", str(config), "--run-name", "tiny", timeout=900)
    return TrainedRun(root / "runs" / "tiny", config, small_dataset)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A serving state directory of the test module's own."""
    return tmp_path_factory.mktemp("serving-state")


@pytest.fixture(scope="module")
def server(trained_run, state, tmp_path_factory):
    """`recsys serve --workers 2` on ``trained_run``'s checkpoint, one per test module (small limits, API key)."""
    from support.server import CATALOGUE_LIMITS, Server

    srv = Server(
        trained_run.checkpoint,
        state,
        tmp_path_factory.mktemp("logs") / "serve.log",
        "--workers",
        "2",
        *CATALOGUE_LIMITS,
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server of the test module's own (the test skips when it is not installed)."""
    from support.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
