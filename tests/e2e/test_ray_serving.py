"""The Ray backend over real HTTP: `recsys serve --backend ray` with 2 replicas on the local Ray the command starts,
the state in a real redis-server started here (skipped when it is not installed), requests through HAProxy (the
default ``serve.ingress``) to the replicas' own HTTP servers.

Which replica answered is the ``X-Recsys-Worker`` header (the replica's pid); the replicas there are, the pids of
``recsys_model_info`` in ``/metrics`` (every replica of the node). What one replica is told (a click, a new item,
a model swap) every replica uses; the local backend's bad-input catalogue gets the same 4xx; a killed replica is
replaced while the others answer. One Ray Serve app for the module; the tests run in file order (the last one swaps
the model).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import polars as pl
import pytest
from support.redis_server import RedisServer
from support.server import API_KEY, CATALOGUE_LIMITS, Server, perturbed_checkpoint, vector_item
from test_hardened_service import bad_request_problems

pytestmark = pytest.mark.e2e

KEY = {"X-API-Key": API_KEY}
REPLICAS = 2


@pytest.fixture(scope="module")
def ray_service(trained_run, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """2 replicas (half a CPU each: the test machine has 2 cores) with the local `server` fixture's limits."""
    root = tmp_path_factory.mktemp("ray-serve")
    replica_options = ("--min-replicas", str(REPLICAS), "--max-replicas", str(REPLICAS), "--replica-cpus", "0.5")
    state = ("--state-url", redis_server.url)
    srv = Server(
        trained_run.checkpoint,
        root / "state",
        root / "serve.log",
        "--backend",
        "ray",
        *replica_options,
        *state,
        *CATALOGUE_LIMITS,
        ready_timeout=420,  # a local Ray, Serve's controller and proxy, then 2 replicas, on a loaded 2-core machine
    )
    try:  # /readyz answers once one replica is up; the other may still be loading its model
        deadline = time.time() + 180
        while len(replicas(srv.url)) < REPLICAS and time.time() < deadline:
            time.sleep(0.5)
    except BaseException:
        srv.stop()
        raise
    yield srv
    try:  # SIGTERM to the command alone: it shuts Serve down (replicas finish their requests), then its Ray
        if srv.proc.poll() is None:  # the last test stops it with Ctrl-C
            os.kill(srv.proc.pid, signal.SIGTERM)
            srv.proc.wait(timeout=60)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def known(trained_run) -> list[int]:
    from recsys.checkpoint import load_checkpoint

    return [int(i) for i in load_checkpoint(trained_run.checkpoint).item_table.item_ids[:3]]


def replicas(url: str) -> set[str]:
    """The pids of the replicas that report in /metrics (the multiprocess files of the node)."""
    return set(re.findall(r'^recsys_model_info\{pid="(\d+)"', httpx.get(f"{url}/metrics").text, re.MULTILINE))


def by_replica(url: str, path: str, body: dict, want: set[str], tries: int = 400) -> dict[str, httpx.Response]:
    """POST ``body`` to ``path`` until every replica in ``want`` has answered; replica pid -> its last response."""
    seen: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(tries):
            resp = client.post(path, json=body)
            seen[resp.headers["x-recsys-worker"]] = resp
            if want <= set(seen):
                return seen
    raise AssertionError(f"only replicas {sorted(seen)} of {sorted(want)} answered in {tries} requests")


def scores(resp: httpx.Response) -> list[float]:
    assert resp.status_code == 200, resp.text
    return [s["score"] for s in resp.json()["scores"]]


def test_both_replicas_serve_and_report_in_metrics(ray_service) -> None:
    pids = replicas(ray_service.url)
    assert len(pids) == REPLICAS, pids
    ready = by_replica(ray_service.url, "/v1/score", {"user_id": 1, "candidates": [], "top_k": 1}, pids)
    assert all(r.status_code == 422 for r in ready.values())  # answered by each replica, in the service's shape
    one = httpx.get(f"{ray_service.url}/healthz")
    assert len(one.headers.get_list("x-request-id")) == 1  # set once (by Ray Serve's proxy), as the local backend does


def test_an_event_posted_through_one_replica_is_used_by_a_score_on_another(ray_service, trained_run) -> None:
    clicks = pl.read_parquet(trained_run.data_dir / "interactions.parquet").filter(pl.col("label") == 1)
    user = int(clicks["user_id"][0])
    candidates = clicks["item_id"].unique().sort().head(30).to_list()
    pids = replicas(ray_service.url)
    posted = httpx.post(f"{ray_service.url}/v1/users/{user}/events", json={"clicked": candidates[:3]}, headers=KEY)
    assert posted.status_code == 200, posted.text
    history = posted.json()["history"]
    expected = scores(
        httpx.post(f"{ray_service.url}/v1/score", json={"user_id": user, "candidates": candidates, "history": history})
    )
    answers = by_replica(ray_service.url, "/v1/score", {"user_id": user, "candidates": candidates}, pids)
    assert set(answers) - {posted.headers["x-recsys-worker"]}, "no other replica answered"
    for pid, resp in answers.items():
        assert resp.json()["history_source"] == "store"
        assert scores(resp) == pytest.approx(expected), f"replica {pid} did not use the event"


def test_an_item_registered_through_one_replica_is_scored_by_every_replica(ray_service, trained_run) -> None:
    from recsys.checkpoint import load_checkpoint

    known = int(load_checkpoint(trained_run.checkpoint).item_table.item_ids[0])
    body = vector_item(trained_run.checkpoint, 990202, "through one replica", seed=5)
    created = httpx.post(f"{ray_service.url}/v1/items", json=body, headers=KEY, timeout=60)
    assert created.status_code == 201, created.text
    request = {"user_id": 1, "candidates": [990202, known], "history": [known]}
    answers = by_replica(ray_service.url, "/v1/score", request, replicas(ray_service.url))
    first = scores(next(iter(answers.values())))
    for pid, resp in answers.items():
        assert scores(resp) == pytest.approx(first, abs=1e-6), f"replica {pid} scores the new item differently"


def test_the_local_backends_bad_requests_get_the_same_4xx(ray_service, known) -> None:
    wrong = bad_request_problems(ray_service.url, known)
    assert not wrong, "\n".join(wrong)
    assert httpx.get(f"{ray_service.url}/healthz", headers={"host": "attacker.example"}).status_code == 400
    assert "Traceback" not in ray_service.log.read_text()


def haproxy_configs() -> list[str]:
    """The config files of the HAProxy processes running on this machine."""
    configs = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
            if argv[0].endswith(b"/haproxy") and b"-f" in argv:
                configs.append(Path(argv[argv.index(b"-f") + 1].decode()).read_text())
        except OSError:  # the process ended meanwhile
            continue
    return configs


def test_haproxy_takes_the_port_and_the_replicas_answer_on_their_own_ports(ray_service) -> None:
    """serve.ingress haproxy (the default): the port is HAProxy's, forwarding to each replica's own HTTP server."""
    port = urlsplit(ray_service.url).port
    configs = haproxy_configs()
    mine = [c for c in configs if f"bind 127.0.0.1:{port}" in c]
    assert len(mine) == 1, f"{len(configs)} haproxy processes, none bound to port {port}"
    assert len(re.findall(r"^\s*server SERVE_REPLICA_\S+ 127\.0\.0\.1:\d+", mine[0], re.MULTILINE)) == REPLICAS


def test_a_killed_replica_is_replaced_and_the_requests_go_to_the_others(ray_service, known) -> None:
    """SIGKILL one replica: once HAProxy has seen it go (a request racing with the kill may fail, as with any
    crashed server) every request is answered by the others; Serve starts a new replica, and /metrics forgets the
    dead one."""
    body = {"user_id": 2, "candidates": known}
    before = replicas(ray_service.url)
    victim = min(before)
    os.kill(int(victim), signal.SIGKILL)
    time.sleep(2)  # the kernel closes the replica's connections; HAProxy drops them
    failures: list[str] = []
    answered: set[str] = set()
    deadline = time.monotonic() + 300  # Serve notices, starts a replica that loads the model, HAProxy adds it
    with httpx.Client(base_url=ray_service.url, timeout=60) as client:
        while time.monotonic() < deadline and not (answered - before):
            try:
                resp = client.post("/v1/score", json=body)
            except httpx.TransportError as exc:
                failures.append(repr(exc))
                continue
            if resp.status_code == 200:
                answered.add(resp.headers["x-recsys-worker"])
            else:
                failures.append(f"{resp.status_code} {resp.text[:200]}")
            time.sleep(0.05)
    new = answered - before
    assert new, f"no new replica answered in 300 s (answered: {sorted(answered)}, killed {victim})"
    assert victim not in answered and not failures, failures[:5]
    after = replicas(ray_service.url)
    assert victim not in after and len(after) == REPLICAS and new <= after


def test_reload_under_load_reaches_every_replica_with_no_failed_request(
    ray_service, trained_run, known, tmp_path
) -> None:
    """Last: 4 clients score while the model is swapped; every replica ends on the new model and none goes back."""
    new_dir = perturbed_checkpoint(trained_run.checkpoint, tmp_path / "new", scale=0.05)
    pids = replicas(ray_service.url)
    stop = threading.Event()
    results: list[tuple[float, str, int, str | None]] = []  # (received, replica, status, version)

    def client() -> None:
        with httpx.Client(base_url=ray_service.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/score", json={"user_id": 3, "candidates": known})
                version = r.json().get("model_version") if r.status_code == 200 else None
                results.append((time.monotonic(), r.headers.get("x-recsys-worker", "?"), r.status_code, version))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    resp = httpx.post(f"{ray_service.url}/v1/admin/reload", json={"checkpoint": str(new_dir)}, headers=KEY, timeout=120)
    acked = time.monotonic()
    try:
        assert resp.status_code == 200, resp.text
        after = resp.json()["model_version"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every replica follows within one model load
            if {w for t, w, _, v in results if t > acked and v == after} >= pids:
                break
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(status == 200 for _, _, status, _ in results), [r for r in results if r[2] != 200][:5]
    for pid in pids:
        answers = [r for r in results if r[1] == pid]
        switched = next((t for t, _, _, v in answers if v == after), None)
        assert switched is not None, f"replica {pid} never served {after}"
        back = [r for r in answers if r[0] > switched and r[3] != after]
        assert not back, f"replica {pid} went back to the old model {len(back)} times"
    bad = httpx.post(f"{ray_service.url}/v1/admin/reload", json={"checkpoint": str(tmp_path)}, headers=KEY, timeout=60)
    assert bad.status_code == 422 and "still serving" in bad.text
    served = by_replica(ray_service.url, "/v1/score", {"user_id": 3, "candidates": known}, pids)
    assert {r.json()["model_version"] for r in served.values()} == {after}  # the refused checkpoint changed nothing


def test_ctrl_c_stops_the_service_and_leaves_no_haproxy_on_the_port(ray_service) -> None:
    """Very last: SIGINT to the whole process group, as Ctrl-C in a terminal (Ray's processes get it too): the
    command exits and no HAProxy outlives it holding the port."""
    port = urlsplit(ray_service.url).port
    os.killpg(ray_service.proc.pid, signal.SIGINT)
    assert ray_service.proc.wait(timeout=120) is not None
    assert not [c for c in haproxy_configs() if f"bind 127.0.0.1:{port}" in c]
