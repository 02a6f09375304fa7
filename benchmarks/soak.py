"""Soak test of the scoring service: errors, latency and worker memory under steady load for minutes.

1. Builds a MARN checkpoint at configs/default.yaml sizes over a synthetic catalogue (as
   serve_latency.py does; ``--work-dir`` keeps and reuses it) and starts a real `recsys serve`
   (``--workers``) on 127.0.0.1 in its own process group, with an API key (RECSYS_API_KEY).
2. Probe: a closed loop of 8 clients on ``POST /v1/score`` (``--candidates``) for
   ``--probe-seconds`` gives the maximum rate.
3. Soak: an open loop at ``--fraction`` of that rate for ``--minutes``. Requests are issued on a
   fixed schedule (request i at t0 + i / rate) over a pool of keep-alive connections, whatever the
   server's pace, and each request's latency runs from its scheduled time: a server that falls
   behind shows as latency (and a queue in the client), not as a lower rate. Mix: ``POST
   /v1/score``, plus ``--writes`` of ``POST /v1/users/{id}/events`` (with the X-API-Key header) and
   ``--reads`` of ``GET /v1/users/{id}`` (users seeded with clicks before the probe).
4. Per minute: requests sent, errors by kind (non-2xx status or transport error), responses
   received per second, p50/p99 latency of the scoring requests, and the RSS of each worker at the
   end of the minute (the server's worker processes, sampled every ``--sample-seconds`` by
   harness.RssSampler). At the end: total errors, RSS growth per worker from the end of minute 1
   to the end (target < 5%), the load average before and after.

The load generator is a separate process (asyncio, the minimal HTTP/1.1 client of serve_latency.py)
on the same machine as the server. The server is always stopped (SIGTERM to its process group,
SIGKILL after 30 s), on errors and Ctrl-C too. Run:

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--fraction 0.8] [--results-md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, RssSampler, describe_machine, loadavg, log, role_of
from serve_latency import (
    http_exchange,
    load_test,
    make_checkpoint,
    pct,
    request_body,
    start_server,
    stop_server,
    wait_ready,
)

HOST = "127.0.0.1"
#: Users that get clicks before the run; the soak's writes and reads go to them (an unknown user's GET is a 404).
SEEDED_USERS = 100
TARGET_RSS_GROWTH_PCT = 5.0
MB = 1024**2


# --------------------------------------------------------------------------- load generator (own process)


class _Minute:
    """What the requests scheduled in one minute of the soak came to."""

    def __init__(self) -> None:
        self.issued = self.done = 0
        self.sent: Counter[str] = Counter()  # route -> requests
        self.errors: Counter[str] = Counter()  # "route: kind" -> requests
        self.latency: dict[str, list[float]] = {"score": [], "write": [], "read": []}  # ms, from the schedule
        self.workers: Counter[str] = Counter()  # x-recsys-worker -> responses
        self.max_lag_ms = 0.0  # how late the client sent a request after its scheduled time
        self.closed = False  # every request of the minute has been issued

    def summary(self, index: int, received: int) -> dict[str, Any]:
        lat = {route: sorted(values) for route, values in self.latency.items()}
        return {
            "minute": index + 1,
            "sent": sum(self.sent.values()),
            "sent_by_route": dict(self.sent),
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "received_rps": received / 60.0,
            "p50_ms": pct(lat["score"], 50),
            "p99_ms": pct(lat["score"], 99),
            "max_ms": lat["score"][-1] if lat["score"] else float("nan"),
            "write_p99_ms": pct(lat["write"], 99),
            "read_p99_ms": pct(lat["read"], 99),
            "max_client_lag_ms": self.max_lag_ms,
            "responses_by_worker": dict(self.workers),
            "score_latency_ms": lat["score"],
        }


def _pick(rng: random.Random, plan: dict[str, Any], i: int) -> tuple[str, str, str, bytes | None, bytes]:
    """Request ``i`` of the mix: (route, method, path, body, extra headers)."""
    r = rng.random()
    if r < plan["writes"]:
        user = rng.randrange(SEEDED_USERS)
        body = json.dumps({"clicked": [rng.choice(plan["item_ids"])]}).encode()
        return "write", "POST", f"/v1/users/{user}/events", body, plan["key_header"]
    if r < plan["writes"] + plan["reads"]:
        return "read", "GET", f"/v1/users/{rng.randrange(SEEDED_USERS)}", None, b""
    return "score", "POST", "/v1/score", plan["bodies"][i % len(plan["bodies"])], b""


async def _soak(plan: dict[str, Any], queue: Any) -> None:
    port, rate, minutes, timeout = plan["port"], plan["rate"], plan["minutes"], plan["timeout"]
    total = int(rate * minutes * 60)
    buckets = [_Minute() for _ in range(minutes)]
    received = Counter[int]()  # minute -> responses received in it (wall clock)
    work: asyncio.Queue = asyncio.Queue()
    rng = random.Random(plan["seed"])

    async def connection(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        while (job := await work.get()) is not None:
            scheduled, m, (route, method, path, body, headers) = job
            bucket = buckets[m]
            bucket.sent[route] += 1
            bucket.max_lag_ms = max(bucket.max_lag_ms, (time.monotonic() - scheduled) * 1000)
            kind = None
            try:
                if conn is None or conn[0].at_eof():  # none yet, or the server closed an idle one
                    conn = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
                status, response = await asyncio.wait_for(
                    http_exchange(*conn, HOST, method, path, body, headers), timeout
                )
                if not 200 <= status < 300:
                    kind = f"HTTP {status}"
                bucket.workers[response.get(b"x-recsys-worker", b"?").decode()] += 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                if conn is not None:
                    conn[1].close()
                conn = None
            now = time.monotonic()
            received[int((now - t0) // 60)] += 1
            if kind is None:
                bucket.latency[route].append((now - scheduled) * 1000)
            else:
                bucket.errors[f"{route}: {kind}"] += 1
            bucket.done += 1
            if bucket.done == bucket.issued and bucket.closed:
                queue.put(("minute", m, bucket.summary(m, received[m])))
        if conn is not None:
            conn[1].close()

    def close_minute(m: int) -> None:  # every request of minute m has been issued
        buckets[m].closed = True
        if buckets[m].done == buckets[m].issued:
            queue.put(("minute", m, buckets[m].summary(m, received[m])))

    conns = await asyncio.gather(*(asyncio.open_connection(HOST, port) for _ in range(plan["connections"])))
    t0 = time.monotonic() + 0.5
    clients = [asyncio.create_task(connection(conn)) for conn in conns]
    queue.put(("start", t0))
    m = 0
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        this = min(minutes - 1, int((scheduled - t0) // 60))
        if this != m:
            close_minute(m)
            m = this
        buckets[m].issued += 1
        work.put_nowait((scheduled, m, _pick(rng, plan, i)))
    close_minute(m)
    for _ in clients:
        work.put_nowait(None)
    await asyncio.gather(*clients)


def _load_process(plan: dict[str, Any], queue: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    asyncio.run(_soak(plan, queue))
    queue.put(("done", None))


# --------------------------------------------------------------------------- the run


def seed_users(port: int, key: str, item_ids: list[int], rng: random.Random) -> None:
    """Five clicks for each of the :data:`SEEDED_USERS` users, so that the soak's reads find them."""
    import httpx

    with httpx.Client(base_url=f"http://{HOST}:{port}", headers={"X-API-Key": key}, timeout=30) as client:
        for user in range(SEEDED_USERS):
            r = client.post(f"/v1/users/{user}/events", json={"clicked": rng.sample(item_ids, 5)})
            if r.status_code != 200:
                raise SystemExit(f"seeding user {user}: HTTP {r.status_code} {r.text[:300]}")


def rss_at(sampler: RssSampler, phase: str) -> dict[int, float]:
    """The last RSS sample (MB) of each server worker in ``phase``: its RSS at the phase's end."""
    points = list(sampler.series.get(phase, []))  # appended to by the sampler thread: copy, then read
    out: dict[int, float] = {}
    for _t, pid, rss, _uss in points:
        out[pid] = rss / MB
    return out


def worker_cpu(sampler: RssSampler, start: float, end: float) -> dict[str, float]:
    """Percent of one core used by the server's workers and the load generator, and the machine's busy share."""
    cpu = sampler.cpu_between(start, end)
    wall = max(cpu["wall"], 1e-9)
    return {
        "workers_cpu_pct": 100 * cpu["by_role"].get("serve_worker", 0.0) / wall,
        "load_generator_cpu_pct": 100 * cpu["by_role"].get("load_generator", 0.0) / wall,
        "machine_busy_pct": 100 * cpu["machine_busy"] / (wall * (os.cpu_count() or 1)),
    }


def soak(
    args: argparse.Namespace, port: int, key: str, item_ids: list[int], sampler: RssSampler, roles: dict[int, str]
) -> dict[str, Any]:
    """Probe, then soak; the results (without the machine and the command). ``roles``: pid -> role for the sampler."""
    rng = random.Random(0)
    seed_users(port, key, item_ids, rng)
    bodies = [request_body(item_ids, args.candidates, rng) for _ in range(256)]

    log(f"probe: closed loop, concurrency 8, {args.candidates} candidates, {args.probe_seconds:g} s")
    sampler.set_phase("probe")
    probe = load_test(port, "/v1/score", bodies, 8, args.probe_seconds)
    log(
        f"probe: {probe['rps']:.1f} req/s, p50 {probe['p50_ms']:.2f} ms, p99 {probe['p99_ms']:.2f} ms, "
        f"{probe['errors']} errors"
    )
    if probe["rps"] <= 0:
        raise SystemExit("the probe got no response")
    rate = args.fraction * probe["rps"]

    plan = {
        "port": port,
        "rate": rate,
        "minutes": args.minutes,
        "timeout": args.timeout,
        "connections": args.connections,
        "writes": args.writes,
        "reads": args.reads,
        "item_ids": item_ids,
        "bodies": bodies,
        "key_header": f"X-API-Key: {key}\r\n".encode(),
        "seed": 1,
    }
    log(
        f"soak: {rate:.1f} req/s ({args.fraction:g} of the maximum) for {args.minutes} min over "
        f"{args.connections} connections"
    )
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    gen = ctx.Process(target=_load_process, args=(plan, queue), daemon=True)
    sampler.set_phase("soak setup")
    gen.start()
    roles[gen.pid] = "load_generator"
    minutes: list[dict[str, Any]] = []
    arrived: dict[int, dict[str, Any]] = {}
    try:
        kind, t0 = queue.get(timeout=120)
        assert kind == "start", kind
        wall0 = time.time() + (t0 - time.monotonic())
        time.sleep(max(0.0, t0 - time.monotonic()))
        sampler.set_phase("minute 1")
        for m in range(args.minutes):
            time.sleep(max(0.0, t0 + 60 * (m + 1) - time.monotonic()))
            sampler.set_phase(f"minute {m + 2}" if m + 1 < args.minutes else "drain")
            while m not in arrived:
                kind, index, data = queue.get(timeout=args.timeout + 120)
                assert kind == "minute", kind
                arrived[index] = data
            row = arrived.pop(m)
            row["rss_mb"] = rss_at(sampler, f"minute {m + 1}")
            row.update(worker_cpu(sampler, wall0 + 60 * m, wall0 + 60 * (m + 1)))
            row["loadavg"] = loadavg()
            minutes.append(row)
            errors = ", ".join(f"{k} {v}" for k, v in sorted(row["errors_by_kind"].items())) or "0"
            rss = ", ".join(f"{pid}: {mb:.1f}" for pid, mb in sorted(row["rss_mb"].items()))
            log(
                f"minute {m + 1}/{args.minutes}: sent {row['sent']:,}, errors {errors}, "
                f"{row['received_rps']:.1f} req/s received, p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"max {row['max_ms']:.1f} ms, worker RSS MB {{{rss}}}, workers CPU {row['workers_cpu_pct']:.0f}%, "
                f"machine busy {row['machine_busy_pct']:.0f}%, client lag max {row['max_client_lag_ms']:.1f} ms, "
                f"load {row['loadavg']}"
            )
        kind, _ = queue.get(timeout=args.timeout + 60)
        assert kind == "done", kind
        gen.join(timeout=30)
    finally:
        if gen.is_alive():
            gen.terminate()
            gen.join(timeout=10)
    return {"probe": probe, "rate": rate, "minutes": minutes}


def totals(result: dict[str, Any]) -> dict[str, Any]:
    rows = result["minutes"]
    errors: Counter[str] = Counter()
    for row in rows:
        errors.update(row["errors_by_kind"])
    lat = sorted(x for row in rows for x in row.pop("score_latency_ms"))
    first, last = rows[0]["rss_mb"], rows[-1]["rss_mb"]
    growth = {pid: 100 * (last[pid] - first[pid]) / first[pid] for pid in first if pid in last}
    restarted = sorted(set(first) ^ set(last))
    header_pids = {pid for row in rows for pid in row["responses_by_worker"]}
    return {
        "sent": sum(row["sent"] for row in rows),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"),
        "rss_growth_pct": growth,  # pid -> percent, end of minute 1 -> end of the last minute
        "workers_not_in_both": restarted,  # a worker that restarted (or vanished) between the two samples
        "workers_seen_in_headers": sorted(header_pids),
        "errors_pass": sum(errors.values()) == 0,
        # None: one minute is too short to tell (the growth is measured from its end)
        "rss_pass": None
        if len(rows) < 2
        else bool(growth) and not restarted and max(growth.values()) < TARGET_RSS_GROWTH_PCT,
    }


# --------------------------------------------------------------------------- report


def markdown(res: dict[str, Any]) -> str:
    args, m, t = res["args"], res["machine"], res["totals"]
    pids = sorted({pid for row in res["minutes"] for pid in row["rss_mb"]})
    mix = f"{100 * (1 - args['writes'] - args['reads']):g}% `POST /v1/score`, {100 * args['writes']:g}% `POST "
    mix += f"/v1/users/{{id}}/events` (API key), {100 * args['reads']:g}% `GET /v1/users/{{id}}`"
    lines = [
        f"## Soak: the scoring service at {100 * args['fraction']:g}% of its maximum rate for {args['minutes']} min",
        "",
        f"    {res['command']}",
        "",
        f"MARN at configs/default.yaml sizes over a synthetic {args['items']:,}-item catalogue; `recsys serve "
        f"--workers {args['workers']}`; every scoring request has {args['candidates']} candidates and a 30-item "
        f"history. Probe: closed loop, concurrency 8, {args['probe_seconds']:g} s: **{res['probe']['rps']:.1f} "
        f"req/s** (p50 {res['probe']['p50_ms']:.2f} ms, p99 {res['probe']['p99_ms']:.2f} ms). Soak: open loop at "
        f"**{res['rate']:.1f} req/s** ({args['fraction']:g} of it) for {args['minutes']} min, requests on a fixed "
        f"schedule over {args['connections']} keep-alive connections, latency from each request's scheduled time "
        f"(p50/p99 below: scoring requests); mix {mix}. Load generator (asyncio, own process) on the same "
        f"machine. RSS: each worker's last sample in the minute (every {args['sample_seconds']:g} s).",
        "",
        f"Host: {m['cores']} cores ({m['physical']} physical, {m['cpu']}), {m['ram_gb']:.1f} GiB, torch "
        f"{m['torch']}; load average (1/5/15 min) {m['load_before']} before, {res['load_after']} after; "
        f"{res['date']}.",
        "",
        "| minute | sent | errors | req/s received | p50 ms | p99 ms | max ms | "
        + " | ".join(f"RSS MB worker {pid}" for pid in pids)
        + " | workers CPU % | machine busy % |",
        "|---:|---:|---|---:|---:|---:|---:|" + "---:|" * len(pids) + "---:|---:|",
    ]
    for row in res["minutes"]:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(row["errors_by_kind"].items())) or "0"
        rss = " | ".join(f"{row['rss_mb'][pid]:.1f}" if pid in row["rss_mb"] else "—" for pid in pids)
        lines.append(
            f"| {row['minute']} | {row['sent']:,} | {errors} | {row['received_rps']:.1f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['max_ms']:.1f} | {rss} | {row['workers_cpu_pct']:.0f} | "
            f"{row['machine_busy_pct']:.0f} |"
        )
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(t["errors_by_kind"].items())) or "none"
    growth = ", ".join(f"worker {pid} {g:+.2f}%" for pid, g in sorted(t["rss_growth_pct"].items()))
    if len(res["minutes"]) < 2:
        rss_verdict = "n/a (needs at least 2 minutes)"
    else:
        rss_verdict = "**PASS**" if t["rss_pass"] else "**FAIL**"
        if t["workers_not_in_both"]:
            growth += f"; workers not sampled at both ends (restarted?): {t['workers_not_in_both']}"
    lines += [
        "",
        f"Totals: {t['sent']:,} requests, errors: {errors}; scoring p50 {t['p50_ms']:.2f} ms, p99 "
        f"{t['p99_ms']:.2f} ms, max {t['max_ms']:.1f} ms.",
        "",
        "**Targets:**",
        f"- 0 errors: {'**PASS**' if t['errors_pass'] else '**FAIL**'} ({t['errors']:,} of {t['sent']:,}).",
        f"- RSS growth per worker < {TARGET_RSS_GROWTH_PCT:g}% from the end of minute 1 to the end: {rss_verdict}"
        f" ({growth or 'no samples'}).",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10, help="length of the soak in minutes (default 10)")
    parser.add_argument(
        "--fraction", type=float, default=0.8, help="soak rate as a fraction of the probed maximum (default 0.8)"
    )
    parser.add_argument(
        "--probe-seconds", type=float, default=20.0, help="seconds of the maximum-rate probe (default 20)"
    )
    parser.add_argument("--candidates", type=int, default=100, help="candidates per scoring request (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of `recsys serve` (default 2)")
    parser.add_argument("--items", type=int, default=5000, help="catalogue size of the checkpoint (default 5000)")
    parser.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections of the load generator (default 32)"
    )
    parser.add_argument("--writes", type=float, default=0.01, help="share of event writes (default 0.01)")
    parser.add_argument("--reads", type=float, default=0.01, help="share of user reads (default 0.01)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as an error")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="seconds between RSS/CPU samples (default 2)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="checkpoint, server state and log, result (default: a new temporary directory); "
        "a checkpoint already there for the same --items is reused",
    )
    parser.add_argument("--out", type=Path, help="JSON result (default <work-dir>/soak.json)")
    parser.add_argument(
        "--results-md", action="store_true", help="append the report as a section of benchmarks/RESULTS.md"
    )
    args = parser.parse_args()
    if args.minutes < 1 or not 0 < args.fraction <= 2 or args.writes + args.reads >= 1 or args.connections < 1:
        parser.error("need --minutes >= 1, 0 < --fraction <= 2, --writes + --reads < 1, --connections >= 1")
    return args


def checkpoint_in(work: Path, items: int) -> Path:
    """The checkpoint in ``work`` for ``items`` items, made unless one is already there."""
    marker = work / "soak-checkpoint.json"
    checkpoint = work / "checkpoint"
    if (
        (checkpoint / "meta.json").is_file()
        and marker.is_file()
        and json.loads(marker.read_text()).get("items") == items
    ):
        log(f"reusing {checkpoint}")
        return checkpoint
    log(f"building a checkpoint over {items} items in {work}")
    checkpoint = make_checkpoint(work, items)
    marker.write_text(json.dumps({"items": items}))
    return checkpoint


def main() -> None:
    from serving.net import free_port

    args = parse_args()
    command = " ".join([".venv/bin/python", "benchmarks/soak.py", *map(shlex.quote, sys.argv[1:])])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on SIGTERM too
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="soak-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or work / "soak.json"
    machine = describe_machine()
    log(f"machine: {machine}")
    checkpoint = checkpoint_in(work, args.items)
    item_ids = list(range(1, args.items + 1))

    state = work / "soak-state"
    shutil.rmtree(state, ignore_errors=True)
    key = secrets.token_urlsafe(24)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECSYS_API_KEY": key}
    server = start_server(checkpoint, port, args.workers, state, work / "serve.log", env)

    roles = {server.pid: "serve_worker" if args.workers == 1 else "serve_supervisor"}

    def role(proc: Any) -> str:
        if proc.pid in roles:
            return roles[proc.pid]
        cmdline = " ".join(proc.cmdline())
        if proc.ppid() == server.pid and "spawn_main" in cmdline:
            return "serve_worker"
        return role_of(cmdline)

    sampler = RssSampler(args.sample_seconds, uss=True, role=role, series_roles=("serve_worker",))
    sampler.start()
    try:
        log(f"recsys serve --workers {args.workers} on {HOST}:{port} (pid {server.pid}, log {work / 'serve.log'})")
        wait_ready(f"http://{HOST}:{port}", server)
        result = soak(args, port, key, item_ids, sampler, roles)
    finally:
        sampler.stop()
        stop_server(server)
        log(f"server stopped (exit code {server.returncode})")

    result["totals"] = totals(result)
    result.update(
        command=command,
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        machine=machine,
        load_after=loadavg(),
        date=time.strftime("%Y-%m-%d %H:%M"),
        work_dir=str(work),
        server_exit_code=server.returncode,
    )
    out.write_text(json.dumps(result, indent=1))
    report = markdown(result)
    print("\n" + report, flush=True)
    log(f"result: {out}")
    if args.results_md:
        path = ROOT / "benchmarks" / "RESULTS.md"
        text = path.read_text()
        path.write_text(text.rstrip("\n") + "\n\n" + report)
        log(f"appended to {path}")


if __name__ == "__main__":
    main()
