"""The Ray Serve backend against the local backend (#19), side by side in one run.

``POST /v1/score`` with 100 candidates (and a 30-item history) at concurrency 1, 8 and 32, on a real
`recsys serve`: the local backend (uvicorn, ``--workers``), then ``--backend ray`` with 1, 2 and 4
replicas for each ``--ingress`` (each server its own local Ray; ``haproxy``: Ray Serve's HAProxy ingress
in front of the replicas' own HTTP servers, ``proxy``: Ray Serve's Python HTTP proxy), then the
local backend again, so that drift in the machine's load shows as the difference of the two local
rows. One server at a time (a Ray per server would not fit beside the others on a small machine). The
load generator, the checkpoint and the request bodies are benchmarks/serve_latency.py's. Beside
p50/p99 and requests/s: the whole machine's CPU ms per request over the cell (/proc/stat, load
generator included; Ray's processes are not in the command's process group), the host's CPU and load.

Targets (#19, ratios of this run): p50 of the Ray backend at concurrency 1 at most 1.5 ms above the
local backend's; its throughput at least 0.7x the local backend's (2 replicas against 2 workers); the
curve over 1 -> 2 -> 4 replicas. Run:

    .venv/bin/python benchmarks/serve_ray.py [--items 5000] [--seconds 5] [--replicas 1,2,4] \
        [--ingress haproxy,proxy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_latency import host_info, load_test, make_checkpoint, request_body, stop_server, wait_ready  # noqa: E402

CANDIDATES = 100
CONCURRENCY = (1, 8, 32)


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (every core; /proc/stat's first line without idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def start(checkpoint: Path, port: int, state_dir: Path, log: Path, env: dict[str, str], extra: list[str]):
    """`recsys serve` on 127.0.0.1:``port`` with ``extra`` options, in its own process group."""
    import subprocess

    cmd = [sys.executable, "-m", "recsys.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port)]
    cmd += ["--state-dir", str(state_dir), *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def measure(name: str, port: int, bodies: list[bytes], seconds: float) -> list[dict]:
    """One row per concurrency for the server on ``port``."""
    rows = []
    for c in CONCURRENCY:
        before = machine_cpu_seconds()
        r = load_test(port, "/v1/score", bodies, c, seconds)
        used = machine_cpu_seconds() - before
        rows.append({"server": name, "concurrency": c, **r, "machine_cpu_ms": used * 1000 / max(r["requests"], 1)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    from serving.net import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=5000, help="catalogue size")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of the local backend")
    parser.add_argument("--replicas", default="1,2,4", help="Ray Serve replica counts, one server each")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (after 0.5 s warm-up)")
    parser.add_argument("--ingress", default="haproxy,proxy", help="serve.ingress values, each at every replica count")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    replica_counts = [int(x) for x in args.replicas.split(",")]
    ingresses = args.ingress.split(",")
    cpus = os.cpu_count() or 1

    host_before = host_info()
    tmp = Path(tempfile.mkdtemp(prefix="serve-ray-bench-"))
    checkpoint = make_checkpoint(tmp, args.items)
    item_ids = list(range(1, args.items + 1))
    rng = random.Random(0)
    bodies = [request_body(item_ids, CANDIDATES, rng) for _ in range(64)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    print(f"checkpoint {checkpoint} ({args.items} items); host {host_before}", flush=True)

    plan: list[tuple[str, list[str]]] = [(f"local, {args.workers} workers", ["--workers", str(args.workers)])]
    for ingress in ingresses:
        for n in replica_counts:
            per_replica = f"{min(1.0, cpus / n):g}"  # the replicas share the machine's CPUs
            ray = ["--backend", "ray", "--ingress", ingress, "--min-replicas", str(n), "--max-replicas", str(n)]
            plan.append((f"ray {ingress}, {n} replica(s) x {per_replica} CPU", [*ray, "--replica-cpus", per_replica]))
    plan.append((f"local again, {args.workers} workers", ["--workers", str(args.workers)]))

    rows: list[dict] = []
    for i, (name, extra) in enumerate(plan):
        port = free_port()
        started = time.perf_counter()
        proc = start(checkpoint, port, tmp / f"state-{i}", tmp / f"serve-{i}.log", env, extra)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            print(f"{name}: ready in {time.perf_counter() - started:.1f} s", flush=True)
            rows += measure(name, port, bodies, args.seconds)
        finally:
            stop_server(proc)
    host_after = host_info()

    print(f"\nhost: {host_before['cpu']}, {host_before['cpus']} CPUs; load average (1/5/15 min) ")
    print(f"{host_before['load']} before, {host_after['load']} after\n")
    print("| server | concurrency | p50 ms | p99 ms | req/s | errors | machine CPU ms/req |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['server']} | {r['concurrency']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | "
            f"{r['errors']} | {r['machine_cpu_ms']:.2f} |"
        )
    print()
    for line in target_lines(rows, plan, args.workers):
        print(line)
    if args.json:
        report = {"args": vars(args), "host": [host_before, host_after], "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=1))


def target_lines(rows: list[dict], plan: list[tuple[str, list[str]]], workers: int) -> list[str]:
    """#19's targets as ratios of this run, per ingress: the Ray backend with as many replicas as the local backend
    has workers against the mean of the two local rows."""
    by = {(r["server"], r["concurrency"]): r for r in rows}
    local = [plan[0][0], plan[-1][0]]
    ray_rows = [(name, extra) for name, extra in plan if "ray" in extra]

    def option(extra: list[str], name: str) -> str:
        return extra[extra.index(name) + 1]

    lines = []
    for ingress in dict.fromkeys(option(extra, "--ingress") for _, extra in ray_rows):
        mine = [(name, extra) for name, extra in ray_rows if option(extra, "--ingress") == ingress]
        same = next((name for name, extra in mine if option(extra, "--min-replicas") == str(workers)), None)
        if same is None:
            lines.append(f"({ingress}: no Ray row with {workers} replicas: no target line)")
            continue
        base = sum(by[(name, 1)]["p50_ms"] for name in local) / 2
        over = by[(same, 1)]["p50_ms"] - base
        lines.append(
            f"- p50 at concurrency 1: {same} {by[(same, 1)]['p50_ms']:.2f} ms vs local {base:.2f} ms: "
            f"{over:+.2f} ms (target <= +1.5 ms: {'met' if over <= 1.5 else 'missed'})"
        )
        for c in CONCURRENCY[1:]:
            rps = sum(by[(name, c)]["rps"] for name in local) / 2
            ratio = by[(same, c)]["rps"] / rps
            lines.append(
                f"- req/s at concurrency {c}: {same} {by[(same, c)]['rps']:.0f} vs local {rps:.0f}: "
                f"{ratio:.2f}x (target >= 0.7x: {'met' if ratio >= 0.7 else 'missed'})"
            )
        curve = [f"{option(extra, '--min-replicas')}: {by[(name, 32)]['rps']:.0f}" for name, extra in mine]
        lines.append(f"- {ingress}: req/s at concurrency 32 over replicas: " + ", ".join(curve))
    return lines


if __name__ == "__main__":
    main()
