"""Scoring-service latency and throughput, side by side in one run.

For 10, 100 and 1000 candidates at concurrency 1, 8 and 32: p50/p99 latency and requests/s of
``POST /v1/score`` on a real `recsys serve` (uvicorn, ``--workers``), measured by a load
generator in a separate process (a minimal keep-alive HTTP/1.1 client on asyncio, so that the
client costs as little CPU as possible on the same machine), for each scorer (``serve.scorer``:
eager and onnx, two servers, each cell measured for both back to back). Next to it: the in-process
scorer (``ScoringService.score``, no HTTP; the scorers alternate request by request, so load from
elsewhere hits both alike), a bare FastAPI echo route under the same uvicorn settings, the host's CPU
and its load averages, and the targets of issue #21 as ratios of this run's figures.

The checkpoint is a MARN model at configs/default.yaml sizes over a synthetic catalogue
(``--items``, random content vectors of the default encoders' widths): latency does not depend
on training. Run:

    .venv/bin/python benchmarks/serve_latency.py [--items 5000] [--workers 2] [--seconds 5] [--scorers eager,onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CANDIDATES = (10, 100, 1000)
SCORERS = ("eager", "onnx")
CONCURRENCY = (1, 8, 32)

ECHO_APP = """
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")
"""


# --------------------------------------------------------------------------- setup


def make_checkpoint(out: Path, n_items: int) -> Path:
    import torch
    from harness import synthetic_inputs

    from recsys.checkpoint import save_checkpoint
    from recsys.config import load_config
    from recsys.models import build_model

    config = load_config(ROOT / "configs" / "default.yaml")
    config.data.path = str(out / "no-data")
    torch.manual_seed(0)
    fm, table, _ = synthetic_inputs(config, n_items=n_items, n_users=600, n_rows=20_000)
    model = build_model(config.model, fm, table.dims()).eval()
    return save_checkpoint(out / "checkpoint", model, config, fm, table)


def start_server(
    checkpoint: Path,
    port: int,
    workers: int,
    state_dir: Path,
    log_path: Path,
    env: dict[str, str],
    scorer: str = "eager",
) -> subprocess.Popen:
    """`recsys serve` on 127.0.0.1:``port`` in its own process group (stop it with :func:`stop_server`)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--state-dir",
            str(state_dir),
            "--scorer",
            scorer,
        ],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_server(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to ``proc``'s process group (started with ``start_new_session``), SIGKILL after ``timeout`` s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def wait_ready(url: str, proc: subprocess.Popen, path: str = "/readyz") -> None:
    import httpx

    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code in (200, 405):
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def request_body(item_ids: list[int], n: int, rng: random.Random) -> bytes:
    return json.dumps(
        {
            "user_id": rng.randrange(600),
            "candidates": rng.sample(item_ids, n),
            "history": rng.sample(item_ids, 30),
            "context": {"hour": 12, "device": "mobile"},
        }
    ).encode()


# --------------------------------------------------------------------------- load generator (own process)


async def http_exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: bytes = b"",
) -> tuple[int, dict[bytes, bytes]]:
    """One HTTP/1.1 request on a keep-alive connection: the status code and the response headers
    (lower-case names); the body is read and dropped. ``headers``: extra raw ``Name: value\r\n`` lines."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + headers
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
    writer.write(head + b"\r\n" + (body or b""))
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("connection closed by the server")
    response: dict[bytes, bytes] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        response[name.strip().lower()] = value.strip()
    await reader.readexactly(int(response.get(b"content-length", 0)))
    return int(status_line.split(b" ", 2)[1]), response


async def _client(
    host: str, port: int, path: str, bodies: list[bytes], stop_at: float, out: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = 0
    try:
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            try:
                status, headers = await http_exchange(reader, writer, host, "POST", path, body)
            except (ConnectionResetError, BrokenPipeError):
                # The server closed the kept-alive connection before answering (HAProxy does on a reload): as
                # HTTP clients do, send the request again once on a new connection; a second failure is an error.
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                status, headers = await http_exchange(reader, writer, host, "POST", path, body)
            out.append(time.perf_counter() - start)
            if status != 200:
                errors.append(f"HTTP {status}")
            if headers.get(b"connection", b"").lower() == b"close":
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


def _load(
    host: str, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float, queue: mp.Queue
) -> None:
    async def run() -> tuple[list[float], list[str], float, int, float]:
        warm: list[float] = []
        await asyncio.gather(
            *(_client(host, port, path, bodies, time.perf_counter() + 0.5, warm, []) for _ in range(concurrency))
        )
        lat: list[float] = []
        errors: list[str] = []
        start, start_cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(
            *(_client(host, port, path, bodies, start + seconds, lat, errors) for _ in range(concurrency))
        )
        return lat, errors, time.perf_counter() - start, len(warm), time.process_time() - start_cpu

    queue.put(asyncio.run(run()))


def load_test(
    port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float, server_group: int | None = None
) -> dict:
    """Latency and throughput of ``concurrency`` keep-alive clients for ``seconds``, and the load generator's own CPU
    ms per request (it shares the cores with the server); with ``server_group`` (the server's process group) also
    the server's CPU ms per request (warm-up included on both sides)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=("127.0.0.1", port, path, bodies, concurrency, seconds, queue))
    cpu_before = group_cpu_seconds(server_group) if server_group is not None else 0.0
    proc.start()
    lat, errors, elapsed, warm, client_cpu = queue.get(timeout=seconds + 120)
    proc.join()
    lat_ms = sorted(x * 1000 for x in lat)
    out = {
        "requests": len(lat),
        "errors": len(errors),
        "rps": len(lat) / elapsed,
        "p50_ms": pct(lat_ms, 50),
        "p99_ms": pct(lat_ms, 99),
        "client_cpu_ms": client_cpu * 1000 / max(len(lat), 1),
    }
    if server_group is not None:
        out["server_cpu_ms"] = (group_cpu_seconds(server_group) - cpu_before) * 1000 / max(len(lat) + warm, 1)
    return out


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of process group ``pgid`` (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields[0] is the state: pgrp is the 5th field of stat, utime/stime 14th/15th
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# --------------------------------------------------------------------------- in-process scorer


def in_process(checkpoint: Path, state_dir: Path, item_ids: list[int], reps: int, scorers: list[str]) -> dict:
    """p50/p99 ms of ``ScoringService.score`` per scorer and candidate count, and p50 of the CPU time of the
    calling thread (1 torch / ONNX Runtime thread: all of the work; unlike wall time, not stretched when other
    processes take the cores); the scorers alternate request by request on the same bodies."""
    import torch

    from serving.server import prepare_state
    from serving.service import ScoringService

    torch.set_num_threads(1)
    services = {
        name: ScoringService.start(prepare_state(checkpoint, {"state_dir": str(state_dir / name), "scorer": name}))
        for name in scorers
    }
    for name, service in services.items():
        assert service.model.scorer_name == name, (name, service.model.scorer_name)
    rng = random.Random(1)
    out: dict[str, dict[int, dict]] = {name: {} for name in scorers}
    for n in CANDIDATES:
        times: dict[str, list[float]] = {name: [] for name in scorers}
        cpu: dict[str, list[float]] = {name: [] for name in scorers}
        for i in range((reps if n < 1000 else reps // 2) + 20):
            body = json.loads(request_body(item_ids, n, rng))
            for name, service in services.items():
                start, start_cpu = time.perf_counter(), time.thread_time()
                service.score(body["user_id"], body["candidates"], body["history"], body["context"], None)
                if i >= 20:
                    times[name].append((time.perf_counter() - start) * 1000)
                    cpu[name].append((time.thread_time() - start_cpu) * 1000)
        for name in scorers:
            ordered = sorted(times[name])
            out[name][n] = {
                "p50_ms": pct(ordered, 50),
                "p99_ms": pct(ordered, 99),
                "cpu_p50_ms": pct(sorted(cpu[name]), 50),
            }
    for service in services.values():
        service.store.close()
    return out


def host_info() -> dict[str, str]:
    """The CPU model (lscpu), the core count and the load averages now (1, 5, 15 min)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        model = "?"
    return {"cpu": model, "cpus": str(os.cpu_count()), "load": " / ".join(f"{x:.2f}" for x in os.getloadavg())}


# --------------------------------------------------------------------------- main


def main() -> None:
    from serving.net import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=5000, help="catalogue size")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of every server")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (after 0.5 s warm-up)")
    parser.add_argument("--scorers", default=",".join(SCORERS), help="serve.scorer values, side by side")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    scorers = args.scorers.split(",")

    host_before = host_info()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    checkpoint = make_checkpoint(tmp, args.items)
    item_ids = list(range(1, args.items + 1))
    print(f"checkpoint {checkpoint} ({args.items} items), {args.workers} worker(s); host {host_before}", flush=True)
    inproc = in_process(checkpoint, tmp / "state-inproc", item_ids, 200, scorers)
    print(f"in process: {inproc}", flush=True)

    env = {**os.environ, "PYTHONPATH": f"{tmp}:{ROOT}"}
    (tmp / "echo_app.py").write_text(ECHO_APP)
    ports = {name: free_port() for name in scorers}
    servers = {
        name: start_server(
            checkpoint, ports[name], args.workers, tmp / f"state-{name}", tmp / f"serve-{name}.log", env, name
        )
        for name in scorers
    }
    echo_port = free_port()
    echo = subprocess.Popen(  # the same uvicorn settings as `recsys serve` (serving/server.py)
        [
            sys.executable,
            "-c",
            "import uvicorn; uvicorn.run('echo_app:app', port=%d, workers=%d, "
            "http='serving.protocol:NoDelayHTTPProtocol', loop='auto', access_log=False, log_level='warning')"
            % (echo_port, args.workers),
        ],
        cwd=tmp,
        env=env,
        stdout=(tmp / "echo.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    rows = []
    try:
        for name in scorers:
            wait_ready(f"http://127.0.0.1:{ports[name]}", servers[name])
        wait_ready(f"http://127.0.0.1:{echo_port}", echo, "/docs")
        rng = random.Random(0)
        for n in CANDIDATES:
            bodies = [request_body(item_ids, n, rng) for _ in range(64)]
            for c in CONCURRENCY:
                for name in scorers:
                    r = load_test(ports[name], "/v1/score", bodies, c, args.seconds, servers[name].pid)
                    rows.append(
                        {
                            "what": f"POST /v1/score ({name})",
                            "scorer": name,
                            "candidates": n,
                            "concurrency": c,
                            **r,
                            "in_process_p50_ms": inproc[name][n]["p50_ms"],
                            "in_process_p99_ms": inproc[name][n]["p99_ms"],
                            "in_process_cpu_ms": inproc[name][n]["cpu_p50_ms"],
                        }
                    )
                    print(rows[-1], flush=True)
        bodies = [request_body(item_ids, 100, rng) for _ in range(64)]
        for c in CONCURRENCY:
            rows.append(
                {
                    "what": "bare FastAPI echo (100-candidate body)",
                    "candidates": 100,
                    "concurrency": c,
                    **load_test(echo_port, "/echo", bodies, c, args.seconds, echo.pid),
                }
            )
            print(rows[-1], flush=True)
    finally:
        for proc in (*servers.values(), echo):
            stop_server(proc)
    host_after = host_info()

    print(f"\nhost: {host_before['cpu']}, {host_before['cpus']} CPUs; load average (1/5/15 min) ")
    print(f"{host_before['load']} before, {host_after['load']} after\n")
    print(
        "| route | candidates | concurrency | p50 ms | p99 ms | req/s | errors | server CPU ms/req | "
        "client CPU ms/req | in-process p50 / p99 ms | in-process CPU ms (p50) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        inp = f"{r['in_process_p50_ms']:.2f} / {r['in_process_p99_ms']:.2f}" if "in_process_p50_ms" in r else "—"
        inp_cpu = f"{r['in_process_cpu_ms']:.2f}" if "in_process_cpu_ms" in r else "—"
        print(
            f"| {r['what']} | {r['candidates']} | {r['concurrency']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['rps']:.0f} | {r['errors']} | {r['server_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
            f"{inp} | {inp_cpu} |"
        )
    print()
    for line in target_lines(rows, inproc, args.workers):
        print(line)
    if args.json:
        report = {"args": vars(args), "host": [host_before, host_after], "in_process": inproc, "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=1))


def target_lines(rows: list[dict], inproc: dict, workers: int) -> list[str]:
    """Issue #21's targets as ratios of this run's figures, one line each."""
    lines = []
    if "eager" in inproc and "onnx" in inproc:
        for n in (100, 1000):
            ratio = inproc["eager"][n]["p50_ms"] / inproc["onnx"][n]["p50_ms"]
            cpu = inproc["eager"][n]["cpu_p50_ms"] / inproc["onnx"][n]["cpu_p50_ms"]
            lines.append(
                f"- in process, {n} candidates: onnx {ratio:.2f}x faster than eager at p50, {cpu:.2f}x in CPU time "
                "(target >= 2)"
            )
    for r in rows:
        if "scorer" not in r or r["candidates"] != 100:
            continue
        if r["concurrency"] == 1:
            extra = r["p50_ms"] - r["in_process_p50_ms"]
            extra_cpu = r["server_cpu_ms"] - r["in_process_cpu_ms"]
            lines.append(
                f"- {r['scorer']}, 100 candidates, c=1: HTTP p50 - in-process p50 = {extra:.2f} ms (target <= 1); "
                f"server CPU per request - in-process CPU = {extra_cpu:.2f} ms"
            )
        if r["concurrency"] == 8:
            bound = workers / (r["in_process_p50_ms"] / 1000)
            cores = int(os.cpu_count() or 1)
            ceiling = cores / ((r["server_cpu_ms"] + r["client_cpu_ms"]) / 1000)
            lines.append(
                f"- {r['scorer']}, 100 candidates, c=8: {r['rps']:.0f} req/s = {r['rps'] / bound:.2f} x "
                f"workers / in-process p50 ({bound:.0f}) (target >= 0.8); the {cores} cores at this run's server + "
                f"load-generator CPU per request ({r['server_cpu_ms']:.2f} + {r['client_cpu_ms']:.2f} ms) allow "
                f"{ceiling:.0f} req/s = {ceiling / bound:.2f} x"
            )
    return lines


if __name__ == "__main__":
    main()
