"""Scoring-service latency and throughput, side by side in one run.

For 10, 100 and 1000 candidates at concurrency 1, 8 and 32: p50/p99 latency and requests/s of
``POST /v1/score`` on a real `recsys serve` (uvicorn, ``--workers``), measured by a load
generator in a separate process (a minimal keep-alive HTTP/1.1 client on asyncio, so that the
client costs as little CPU as possible on the same machine). Next to it: the in-process scorer
(``ScoringService.score``, no HTTP) and a bare FastAPI echo route under the same uvicorn settings.

The checkpoint is a MARN model at configs/default.yaml sizes over a synthetic catalogue
(``--items``, random content vectors of the default encoders' widths): latency does not depend
on training. Run:

    .venv/bin/python benchmarks/serve_latency.py [--items 5000] [--workers 2] [--seconds 5]
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
    checkpoint: Path, port: int, workers: int, state_dir: Path, log_path: Path, env: dict[str, str]
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
            status, _ = await http_exchange(reader, writer, host, "POST", path, body)
            out.append(time.perf_counter() - start)
            if status != 200:
                errors.append(f"HTTP {status}")
    finally:
        writer.close()


def _load(
    host: str, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float, queue: mp.Queue
) -> None:
    async def run() -> tuple[list[float], list[str], float]:
        warm: list[float] = []
        await asyncio.gather(
            *(_client(host, port, path, bodies, time.perf_counter() + 0.5, warm, []) for _ in range(concurrency))
        )
        lat: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        await asyncio.gather(
            *(_client(host, port, path, bodies, start + seconds, lat, errors) for _ in range(concurrency))
        )
        return lat, errors, time.perf_counter() - start

    lat, errors, elapsed = asyncio.run(run())
    queue.put((lat, errors, elapsed))


def load_test(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=("127.0.0.1", port, path, bodies, concurrency, seconds, queue))
    proc.start()
    lat, errors, elapsed = queue.get(timeout=seconds + 120)
    proc.join()
    lat_ms = sorted(x * 1000 for x in lat)
    return {
        "requests": len(lat),
        "errors": len(errors),
        "rps": len(lat) / elapsed,
        "p50_ms": pct(lat_ms, 50),
        "p99_ms": pct(lat_ms, 99),
    }


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# --------------------------------------------------------------------------- in-process scorer


def in_process(checkpoint: Path, state_dir: Path, item_ids: list[int], reps: int) -> dict[int, dict]:
    import torch

    from serving.server import prepare_state
    from serving.service import ScoringService

    torch.set_num_threads(1)
    settings = prepare_state(checkpoint, {"state_dir": str(state_dir)})
    service = ScoringService.start(settings)
    rng = random.Random(1)
    out = {}
    for n in CANDIDATES:
        times = []
        for i in range(reps + 20):
            body = json.loads(request_body(item_ids, n, rng))
            start = time.perf_counter()
            service.score(body["user_id"], body["candidates"], body["history"], body["context"], None)
            if i >= 20:
                times.append((time.perf_counter() - start) * 1000)
        times.sort()
        out[n] = {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99)}
    service.store.close()
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    from serving.net import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=5000, help="catalogue size")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of both servers")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (after 0.5 s warm-up)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    checkpoint = make_checkpoint(tmp, args.items)
    item_ids = list(range(1, args.items + 1))
    print(f"checkpoint {checkpoint} ({args.items} items), {args.workers} worker(s), {os.cpu_count()} CPUs", flush=True)
    inproc = in_process(checkpoint, tmp / "state-inproc", item_ids, reps=200)

    env = {**os.environ, "PYTHONPATH": f"{tmp}:{ROOT}"}
    (tmp / "echo_app.py").write_text(ECHO_APP)
    port, echo_port = free_port(), free_port()
    service = start_server(checkpoint, port, args.workers, tmp / "state", tmp / "serve.log", env)
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
        wait_ready(f"http://127.0.0.1:{port}", service)
        wait_ready(f"http://127.0.0.1:{echo_port}", echo, "/docs")
        rng = random.Random(0)
        for n in CANDIDATES:
            bodies = [request_body(item_ids, n, rng) for _ in range(64)]
            for c in CONCURRENCY:
                r = load_test(port, "/v1/score", bodies, c, args.seconds)
                rows.append(
                    {
                        "what": "POST /v1/score",
                        "candidates": n,
                        "concurrency": c,
                        **r,
                        "in_process_p50_ms": inproc[n]["p50_ms"],
                        "in_process_p99_ms": inproc[n]["p99_ms"],
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
                    **load_test(echo_port, "/echo", bodies, c, args.seconds),
                }
            )
            print(rows[-1], flush=True)
    finally:
        for proc in (service, echo):
            stop_server(proc)

    print("\n| route | candidates | concurrency | p50 ms | p99 ms | req/s | errors | in-process p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        inp = f"{r['in_process_p50_ms']:.2f} / {r['in_process_p99_ms']:.2f}" if "in_process_p50_ms" in r else "—"
        print(
            f"| {r['what']} | {r['candidates']} | {r['concurrency']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['rps']:.0f} | {r['errors']} | {inp} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
