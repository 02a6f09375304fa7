"""What the benchmark scripts share: the repository on ``sys.path``, progress lines, the machine
they ran on, and a sampler of memory and CPU per process.

Scripts in ``benchmarks/`` import it as ``harness`` (their own folder is on ``sys.path`` when run
as ``python benchmarks/<script>.py``); importing it puts the repository root on ``sys.path`` too.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from recsys.config import ExperimentConfig
    from recsys.features.examples import Examples
    from recsys.features.feature_map import FeatureMap
    from recsys.features.item_table import ItemTable

#: Widths of the default encoders' vectors (configs/default.yaml): title, image, audio.
CONTENT_DIMS = {"title": 384, "image": 1280, "audio": 512}


def log(msg: str) -> None:
    """A progress line, time-stamped."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> str:
    """The 1/5/15-minute load averages, as ``a / b / c``."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def describe_machine() -> dict[str, Any]:
    """What a measurement depends on: cores (logical, physical), memory, CPU, torch (threads), Ray, load."""
    import torch

    psutil = import_psutil()
    ray = sys.modules["ray"]
    return {
        "cores": os.cpu_count(),
        "physical": psutil.cpu_count(logical=False),
        "ram_gb": psutil.virtual_memory().total / 1024**3,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": ray.__version__,
        "load_before": loadavg(),
    }


def synthetic_inputs(
    config: ExperimentConfig, n_items: int, n_users: int, n_rows: int, seed: int = 0
) -> tuple[FeatureMap, ItemTable, Examples]:
    """Model inputs at ``config``'s sizes without a dataset: random users, items, clicks and content
    vectors of the default encoders' widths (:data:`CONTENT_DIMS`); every row in the train split."""
    import numpy as np
    import polars as pl

    from recsys.encoders.pipeline import ModalityVectors
    from recsys.features.examples import build_examples
    from recsys.features.feature_map import fit_feature_map
    from recsys.features.item_table import build_item_table

    rng = np.random.default_rng(seed)
    item_ids = np.arange(1, n_items + 1)
    items = pl.DataFrame({"item_id": item_ids, "department": rng.choice(["a", "b", "c", "d"], n_items)})
    users = pl.DataFrame(
        {
            "user_id": np.arange(n_users),
            "age_group": rng.choice(["x", "y"], n_users),
            "country": rng.choice(["p", "q"], n_users),
        }
    )
    interactions = pl.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n_rows),
            "item_id": rng.choice(item_ids, n_rows),
            "timestamp": np.sort(rng.integers(0, 10**6, n_rows)),
            "label": (rng.random(n_rows) < 0.3).astype(np.int8),
            "split": "train",
            "hour": rng.integers(0, 24, n_rows),
            "device": rng.choice(["m", "d"], n_rows),
        }
    )
    fm = fit_feature_map(interactions, items, users, config.features)
    vectors = {
        m: ModalityVectors(m, item_ids, rng.normal(size=(n_items, d)).astype(np.float32))
        for m, d in CONTENT_DIMS.items()
    }
    table = build_item_table(items, fm, vectors, content_dim=config.features.content_dim)
    return fm, table, build_examples(interactions, users, fm, table)


# --------------------------------------------------------------------------- memory and CPU per process


def import_psutil() -> ModuleType:
    """psutil, which ships inside Ray (ray/thirdparty_files, put on sys.path by ``import ray``)."""
    import ray  # noqa: F401  # first: it puts psutil on sys.path

    return importlib.import_module("psutil")


def role_of(cmdline: str) -> str:
    exe = cmdline.split(" ", 1)[0]
    if exe.endswith("/raylet"):
        return "raylet"
    if exe.endswith("/gcs_server"):
        return "gcs"
    for key, role in (
        ("RayTrainWorker", "train_worker"),
        ("SplitCoordinator", "split_coordinator"),
        ("TrainController", "train_controller"),
        ("FooterReader", "parquet_footer_reader"),
        ("log_monitor.py", "log_monitor"),
        ("dashboard/agent.py", "dashboard_agent"),
        ("DashboardAgent", "dashboard_agent"),
        ("RuntimeEnvAgent", "runtime_env_agent"),
        ("runtime_env/agent", "runtime_env_agent"),
        ("autoscaler/_private/monitor.py", "autoscaler_monitor"),
        ("dashboard/dashboard.py", "dashboard"),
        ("ray::IDLE", "idle_ray_worker"),
    ):
        if key in cmdline:
            return role
    if cmdline.startswith("ray::"):  # another actor or task: its name (e.g. _StatsActor, PlacementGroupCleaner)
        return cmdline[5:].split(" ", 1)[0].split(".", 1)[0] or "other_ray_worker"
    if "default_worker.py" in cmdline:
        return "other_ray_worker"
    return "other"


class RssSampler(threading.Thread):
    """Memory and CPU of this process and its descendants, sampled every ``interval`` s.

    Memory: peak RSS and USS per (phase, role, pid). RSS counts every resident page a process
    maps, including pages of Ray's shared-memory object store it has read (those belong to the
    object store, fixed in size, not to the process); USS counts only the process's private pages.
    Train workers (or the roles in ``series_roles``) also get a time series (at most every ~1 s) so
    that growth over a run can be told apart from growth with the table size. ``role`` names a
    process (a psutil ``Process``); by default :func:`role_of` its command line. CPU: cumulative
    CPU seconds per process and the machine's busy CPU seconds (``/proc/stat``) over time, so that
    :meth:`cpu_between` can say where the cores went during any window, e.g. the epoch a
    throughput figure comes from.
    """

    def __init__(
        self,
        interval: float = 0.2,
        uss: bool = True,
        role: Callable[[Any], str] | None = None,
        series_roles: Collection[str] = ("train_worker",),
    ) -> None:
        super().__init__(daemon=True)
        self.psutil, self.interval, self.uss = import_psutil(), interval, uss
        self.role = role or (lambda proc: role_of(" ".join(proc.cmdline())))
        self.series_roles = frozenset(series_roles)
        self.own_cpu: dict[str, float] = {}  # CPU seconds of this sampling thread, per phase
        self.me = self.psutil.Process()
        self.phase = "idle"
        self.peaks: dict[str, dict] = {}
        self.series: dict[str, list] = {}
        self.cpu: dict[int, dict] = {}  # pid -> {"role", "born", "points": [(unix time, cpu s)]}
        self.machine: list[tuple[float, float]] = []  # (unix time, busy cpu s of the whole machine, steal excluded)
        self.steal: list[tuple[float, float]] = []  # (unix time, steal s of the whole machine)
        self._t0, self._last_series = time.perf_counter(), 0.0
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self._sample()
            self.phase = phase

    def sample(self) -> None:
        with self._lock:
            self._sample()

    def _memory(self, proc: Any) -> Any:
        """RSS and USS; USS reads /proc/PID/smaps_rollup, which costs CPU, so it is optional (then USS = RSS)."""
        if self.uss:
            return proc.memory_full_info()
        info = proc.memory_info()
        return type("Mem", (), {"rss": info.rss, "uss": info.rss})

    def _cpu_point(self, role: str, proc: Any, now: float) -> None:
        try:
            t = proc.cpu_times()
            born = proc.create_time()
        except self.psutil.Error:
            return
        entry = self.cpu.setdefault(proc.pid, {"role": role, "born": born, "points": []})
        entry["role"] = role  # a Ray worker process is renamed when it becomes an actor
        entry["points"].append((now, t.user + t.system))

    def _sample(self) -> None:
        ps = self.psutil
        book = self.peaks.setdefault(self.phase, {"driver": {"rss": 0, "uss": 0}, "procs": {}})
        mine = self._memory(self.me)
        book["driver"] = {"rss": max(book["driver"]["rss"], mine.rss), "uss": max(book["driver"]["uss"], mine.uss)}
        now = time.perf_counter() - self._t0
        wall = time.time()
        keep_series = now - self._last_series >= 1.0
        if keep_series:
            self._last_series = now
            busy = ps.cpu_times()
            steal = getattr(busy, "steal", 0.0)  # time the hypervisor gave this VM's CPUs to someone else
            self.machine.append(
                (wall, busy.user + busy.nice + busy.system + getattr(busy, "irq", 0.0) + getattr(busy, "softirq", 0.0))
            )
            self.steal.append((wall, steal))
            self._cpu_point("driver", self.me, wall)
        try:
            children = self.me.children(recursive=True)
        except ps.Error:
            return
        for proc in children:
            try:
                role = self.role(proc)
                mem = self._memory(proc)
            except ps.Error:
                continue
            key = f"{role}:{proc.pid}"
            old = book["procs"].get(key, {"rss": 0, "uss": 0})
            book["procs"][key] = {"rss": max(old["rss"], mem.rss), "uss": max(old["uss"], mem.uss)}
            if keep_series:
                self._cpu_point(role, proc, wall)
                if role in self.series_roles:
                    self.series.setdefault(self.phase, []).append((round(now, 1), proc.pid, mem.rss, mem.uss))

    def cpu_between(self, start: float, end: float) -> dict[str, Any]:
        """CPU seconds per role, the machine's busy CPU seconds and the wall seconds in [start, end] (unix)."""

        def at(points: list[tuple[float, float]], t: float, born: float) -> float:
            if t <= points[0][0]:  # before the first sample: linear from the process's birth (0 s of CPU)
                t0, c0 = points[0]
                return 0.0 if t <= born else c0 * (t - born) / max(t0 - born, 1e-9)
            for (ta, ca), (tb, cb) in zip(points, points[1:]):
                if ta <= t <= tb:
                    return ca + (cb - ca) * (t - ta) / max(tb - ta, 1e-9)
            return points[-1][1]  # after the last sample (the process ended): what it had then

        with self._lock:
            out: dict[str, float] = {}
            for entry in self.cpu.values():
                used = at(entry["points"], end, entry["born"]) - at(entry["points"], start, entry["born"])
                out[entry["role"]] = out.get(entry["role"], 0.0) + max(0.0, used)
            m, st = self.machine, self.steal
            busy = at(m, end, -1.0) - at(m, start, -1.0) if len(m) > 1 else float("nan")
            steal = at(st, end, -1.0) - at(st, start, -1.0) if len(st) > 1 else float("nan")
        return {"by_role": out, "machine_busy": busy, "steal": steal, "wall": end - start}

    def run(self) -> None:
        while not self._halt.is_set():
            t, phase = time.thread_time(), self.phase
            self.sample()
            self.own_cpu[phase] = self.own_cpu.get(phase, 0.0) + time.thread_time() - t
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def summarise_rss(book: dict[str, Any], series: list[tuple[float, int, int, int]] | None = None) -> dict[str, Any]:
    """One phase's peaks of :class:`RssSampler` in MB: the driver, per role, every train worker (and its series)."""
    mb = 1024**2
    by_role: dict[str, list[dict]] = {}
    for key, mem in book["procs"].items():
        by_role.setdefault(key.split(":")[0], []).append(
            {"pid": int(key.split(":")[1]), "rss": mem["rss"] / mb, "uss": mem["uss"] / mb}
        )
    workers = sorted(by_role.get("train_worker", []), key=lambda m: -m["rss"])
    return {
        "driver_sampled_mb": book["driver"]["rss"] / mb,
        "driver_sampled_uss_mb": book["driver"]["uss"] / mb,
        "roles": {
            r: {
                "n": len(v),
                "max_mb": max(m["rss"] for m in v),
                "sum_mb": sum(m["rss"] for m in v),
                "max_uss_mb": max(m["uss"] for m in v),
            }
            for r, v in by_role.items()
        },
        "train_workers_mb": [m["rss"] for m in workers],
        "train_workers_uss_mb": [m["uss"] for m in workers],
        "train_worker_series": [(t, pid, rss / mb, uss / mb) for t, pid, rss, uss in (series or [])],
    }
