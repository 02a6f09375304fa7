"""The service under hostile input, over real HTTP: `recsys serve --workers 2` on 127.0.0.1.

- a catalogue of bad requests, each with its expected 4xx status and a fragment naming the field;
  never a 5xx, never the client's input echoed into a response that cannot render it, and the
  keep-alive connection survives every one of them;
- a decompression bomb is refused before it is decoded, and the worker's memory stays flat;
- schemathesis over every operation of ``/openapi.json``: no server error, no response that
  disagrees with the documented status codes, content types and schemas;
- the swap race: once a worker acknowledges a reload it never answers with the old model again,
  even when recording the swap in the store is slow, and every worker follows.

The tests run in file order on one server (the last one swaps its model).
"""

# ruff: noqa: E501  (the catalogue is a table: one case per line)

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.server import API_KEY, Server, perturbed_checkpoint

KEY = {"X-API-Key": API_KEY}
JSON = {"content-type": "application/json"}
BIG = 10**30  # above the signed 64-bit range


@pytest.fixture(scope="module")
def known(trained_run) -> list[int]:
    from recsys.checkpoint import load_checkpoint

    return [int(i) for i in load_checkpoint(trained_run.checkpoint).item_table.item_ids[:3]]


def raw(body: str | bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """httpx keyword arguments for a body sent exactly as given."""
    return {"content": body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body, "headers": headers}


# --------------------------------------------------------------------------- the catalogue


def catalogue(known: list[int]) -> list[tuple[str, str, str, dict[str, Any], int, tuple[str, ...]]]:
    """(name, method, path, httpx kwargs, expected status, fragments the body must contain)."""
    k = known[0]
    deep = "[" * 100_000 + "]" * 100_000
    score = "/v1/score"
    # fmt: off
    return [
        # ---- POST /v1/score: ids, numbers, duplicates, types
        ("score user_id above int64", "POST", score, {"json": {"user_id": BIG, "candidates": [k]}}, 422, ("user_id",)),
        ("score user_id NaN", "POST", score, raw(f'{{"user_id": NaN, "candidates": [{k}]}}', JSON), 400, ("body", "JSON")),
        ("score top_k Infinity", "POST", score, raw(f'{{"user_id": 1, "candidates": [{k}], "top_k": Infinity}}', JSON), 400, ("body",)),
        ("score candidates [NaN]", "POST", score, raw('{"user_id": 1, "candidates": [NaN]}', JSON), 400, ("body",)),
        ("score candidate true", "POST", score, {"json": {"user_id": 1, "candidates": [True]}}, 422, ("candidates.0",)),
        ("score candidate float", "POST", score, {"json": {"user_id": 1, "candidates": [1.5]}}, 422, ("candidates.0",)),
        ("score candidate string", "POST", score, {"json": {"user_id": 1, "candidates": [str(k)]}}, 422, ("candidates.0",)),
        ("score candidate above int64", "POST", score, {"json": {"user_id": 1, "candidates": [BIG]}}, 422, ("candidates.0",)),
        ("score duplicate candidates", "POST", score, {"json": {"user_id": 1, "candidates": [k, k, k]}}, 422, ("candidates", "duplicate")),
        ("score no candidates", "POST", score, {"json": {"user_id": 1, "candidates": []}}, 422, ("candidates",)),
        ("score too many candidates", "POST", score, {"json": {"user_id": 1, "candidates": list(range(1, 202))}}, 422, ("candidates",)),
        ("score unknown candidate", "POST", score, {"json": {"user_id": 1, "candidates": [k, 123456789]}}, 422, ("candidates", "123456789")),
        ("score user_id string", "POST", score, {"json": {"user_id": "abc", "candidates": [k]}}, 422, ("user_id",)),
        ("score user_id missing", "POST", score, {"json": {"candidates": [k]}}, 422, ("user_id", "required")),
        ("score unknown field", "POST", score, {"json": {"user_id": 1, "candidates": [k], "extra": 1}}, 422, ("extra",)),
        ("score context overflow to inf", "POST", score, raw(f'{{"user_id": 1, "candidates": [{k}], "context": {{"hour": 1e400}}}}', JSON), 422, ("context.hour", "finite")),
        ("score context nested", "POST", score, {"json": {"user_id": 1, "candidates": [k], "context": {"hour": {"a": 1}}}}, 422, ("context.hour",)),
        ("score unknown context field", "POST", score, {"json": {"user_id": 1, "candidates": [k], "context": {"nope": 1}}}, 422, ("context", "nope")),
        ("score history unknown", "POST", score, {"json": {"user_id": 1, "candidates": [k], "history": [424242]}}, 422, ("history", "424242")),
        ("score history above int64", "POST", score, {"json": {"user_id": 1, "candidates": [k], "history": [BIG]}}, 422, ("history.0",)),
        ("score top_k zero", "POST", score, {"json": {"user_id": 1, "candidates": [k], "top_k": 0}}, 422, ("top_k",)),
        ("score top_k float", "POST", score, {"json": {"user_id": 1, "candidates": [k], "top_k": 2.0}}, 422, ("top_k",)),
        # ---- bodies that are not (strict) JSON
        ("score body not UTF-8", "POST", score, raw(b"\xa5\xff", JSON), 400, ("body", "UTF-8")),
        ("score body 100k deep", "POST", score, raw(deep, JSON), 400, ("body", "nested too deeply")),
        ("score body truncated", "POST", score, raw('{"user_id": 1, "candidates": [', JSON), 400, ("body", "invalid JSON")),
        ("score body empty", "POST", score, raw(b"", JSON), 400, ("body", "empty")),
        ("score body a list", "POST", score, {"json": [1, 2]}, 422, ("body",)),
        ("score lone surrogate", "POST", score, raw(f'{{"user_id": 1, "candidates": [{k}], "context": {{"d": "\\ud800"}}}}', JSON), 400, ("body",)),
        ("score text/plain", "POST", score, raw(json.dumps({"user_id": 1, "candidates": [k]}), {"content-type": "text/plain"}), 415, ("content-type", "text/plain")),
        ("score no content type", "POST", score, raw(json.dumps({"user_id": 1, "candidates": [k]}), {}), 415, ("content-type",)),
        ("score body over the limit", "POST", score, raw(b"[" + b"1," * 600_000 + b"1]", JSON), 413, ("body", "limit")),
        # ---- items
        ("item without key", "POST", "/v1/items", {"json": {"item_id": 5001, "title": "x"}}, 401, ("X-API-Key",)),
        ("item with wrong key", "POST", "/v1/items", {"json": {"item_id": 5001, "title": "x"}, "headers": {"X-API-Key": "wrong-key-123"}}, 401, ("X-API-Key",)),
        ("item id above int64", "POST", "/v1/items", {"json": {"item_id": BIG, "title": "x"}, "headers": KEY}, 422, ("item_id",)),
        ("item id NaN", "POST", "/v1/items", raw('{"item_id": NaN, "title": "x"}', {**JSON, **KEY}), 400, ("body",)),
        ("item body not UTF-8", "POST", "/v1/items", raw(b"\xa5", {**JSON, **KEY}), 400, ("body", "UTF-8")),
        ("item as text/plain", "POST", "/v1/items", raw('{"item_id": 5001, "title": "x"}', {"content-type": "text/plain", **KEY}), 415, ("content-type",)),
        ("item vector NaN via overflow", "POST", "/v1/items", raw('{"item_id": 5001, "vectors": {"title": [1e400]}}', {**JSON, **KEY}), 422, ("vectors.title.0", "finite")),
        ("item unknown modality", "POST", "/v1/items", {"json": {"item_id": 5001, "vectors": {"smell": [1.0]}}, "headers": KEY}, 422, ("vectors", "smell")),
        ("item image not base64", "POST", "/v1/items", {"json": {"item_id": 5001, "image_base64": "%%%"}, "headers": KEY}, 422, ("image_base64",)),
        ("item image not an image", "POST", "/v1/items", {"data": {"item_id": "5001"}, "files": {"image": ("x.png", b"nope", "image/png")}, "headers": KEY}, 422, ("image", "cannot decode")),
        ("item audio not audio", "POST", "/v1/items", {"data": {"item_id": "5001"}, "files": {"audio": ("x.wav", b"RIFF....garbage", "audio/wav")}, "headers": KEY}, 422, ("audio", "cannot decode")),
        ("item form id not a number", "POST", "/v1/items", {"data": {"item_id": "five"}, "files": {"image": ("x.png", b"nope", "image/png")}, "headers": KEY}, 422, ("item_id",)),
        ("item unknown file part", "POST", "/v1/items", {"data": {"item_id": "5001"}, "files": {"video": ("x.mp4", b"nope", "video/mp4")}, "headers": KEY}, 422, ("video",)),
        ("item unknown attribute", "POST", "/v1/items", {"json": {"item_id": 5001, "title": "x", "attributes": {"colour": "red"}}, "headers": KEY}, 422, ("attributes", "colour")),
        ("item no content", "POST", "/v1/items", {"json": {"item_id": 5001}, "headers": KEY}, 422, ("item", "no content")),
        ("get item above int64", "GET", f"/v1/items/{BIG}", {}, 422, ("item_id",)),
        ("get item not a number", "GET", "/v1/items/abc", {}, 422, ("item_id",)),
        ("get unknown item", "GET", "/v1/items/31337", {}, 404, ("item_id", "31337")),
        # ---- users
        ("put user without key", "PUT", "/v1/users/1", {"json": {"history": []}}, 401, ("X-API-Key",)),
        ("put user lone surrogate", "PUT", "/v1/users/1", raw('{"history": [], "attributes": {"country": "\\ud800"}}', {**JSON, **KEY}), 400, ("body",)),
        ("put user above int64", "PUT", f"/v1/users/{BIG}", {"json": {"history": []}, "headers": KEY}, 422, ("user_id",)),
        ("put user unknown attribute", "PUT", "/v1/users/1", {"json": {"history": [], "attributes": {"shoe": 1}}, "headers": KEY}, 422, ("attributes", "shoe")),
        ("put user unknown history item", "PUT", "/v1/users/1", {"json": {"history": [424242]}, "headers": KEY}, 422, ("history", "424242")),
        ("get user above int64", "GET", f"/v1/users/{BIG}", {}, 422, ("user_id",)),
        ("get unknown user", "GET", "/v1/users/31337", {}, 404, ("user_id", "31337")),
        ("events above int64", "POST", f"/v1/users/{BIG}/events", {"json": {"clicked": [k]}, "headers": KEY}, 422, ("user_id",)),
        ("events empty", "POST", "/v1/users/1/events", {"json": {"clicked": []}, "headers": KEY}, 422, ("clicked",)),
        ("events unknown item", "POST", "/v1/users/1/events", {"json": {"clicked": [424242]}, "headers": KEY}, 422, ("clicked", "424242")),
        # ---- admin
        ("reload without key", "POST", "/v1/admin/reload", {"json": {"checkpoint": "/nowhere"}}, 401, ("X-API-Key",)),
        ("reload 10,000-char path", "POST", "/v1/admin/reload", {"json": {"checkpoint": "/" + "a" * 10_000}, "headers": KEY}, 422, ("checkpoint",)),
        ("reload name too long", "POST", "/v1/admin/reload", {"json": {"checkpoint": "/tmp/" + "a" * 300}, "headers": KEY}, 422, ("checkpoint",)),
        ("reload missing dir", "POST", "/v1/admin/reload", {"json": {"checkpoint": "/nowhere"}, "headers": KEY}, 422, ("checkpoint", "still serving")),
        ("reload empty path", "POST", "/v1/admin/reload", {"json": {"checkpoint": ""}, "headers": KEY}, 422, ("checkpoint",)),
        ("admin model without key", "GET", "/v1/admin/model", {}, 401, ("X-API-Key",)),
        # ---- the framework's own refusals, in the same shape
        ("unknown route", "GET", "/v1/nothing-here", {}, 404, ("path",)),
        ("method not allowed", "DELETE", score, {}, 405, ("method",)),
    ]


# fmt: on


def bad_request_problems(url: str, known: list[int]) -> list[str]:
    """Send the catalogue over one keep-alive connection; what went wrong (a status, the error body, a missing
    fragment, the connection not surviving). Shared with the Ray backend's test (tests/e2e/test_ray_serving.py)."""
    cases = catalogue(known)
    assert len(cases) >= 60
    wrong = []
    with httpx.Client(base_url=url, timeout=60) as client:  # one keep-alive connection for all of them
        connection = client_address(client.get("/healthz"))
        for name, method, path, kwargs, status, needles in cases:
            resp = client.request(method, path, **kwargs)
            body = resp.json() if resp.headers.get("content-type") == "application/json" else {}
            detail = body.get("detail") if isinstance(body, dict) else None
            problems = []
            if resp.status_code != status:
                problems.append(f"status {resp.status_code} != {status}")
            if not isinstance(detail, dict) or not {"field", "message"} <= set(detail):
                problems.append("not the service's error body")
            problems += [f"{n!r} missing" for n in needles if n not in resp.text]
            if problems:
                wrong.append(f"{name}: {'; '.join(problems)}: {resp.text[:300]}")
        if client_address(client.get("/healthz")) != connection:
            wrong.append("the keep-alive connection did not survive the catalogue")
    # Nothing half-written: the refused user write left no user behind, and no refused item was stored.
    if httpx.get(f"{url}/v1/items/5001").status_code != 404:
        wrong.append("a refused item was stored")
    return wrong


def client_address(resp: httpx.Response) -> tuple[str, int]:
    """The client side (address, port) of the connection ``resp`` came on: the same one, the same connection."""
    return resp.extensions["network_stream"].get_extra_info("client_addr")


def test_bad_requests_get_a_clean_4xx_naming_the_field(server, known) -> None:
    wrong = bad_request_problems(server.url, known)
    assert not wrong, "\n".join(wrong)
    log = server.log.read_text()
    assert "Traceback" not in log and '"status": 500' not in log, log[-3000:]


def test_untrusted_host_header_is_refused(server) -> None:
    resp = httpx.get(f"{server.url}/healthz", headers={"host": "attacker.example"})
    assert resp.status_code == 400 and "host" in resp.text.lower()


def test_previously_stored_bad_text_does_not_break_reads(server, state) -> None:
    """A state directory written before strict bodies (a lone surrogate stored) still reads back with 200."""
    conn = sqlite3.connect(state / "serving.db", timeout=30)
    conn.execute(
        "INSERT OR REPLACE INTO users (user_id, history, attributes, updated_at) VALUES (?, ?, ?, ?)",
        (777, "[]", json.dumps({"country": "\ud800"}), time.time()),
    )
    conn.commit()
    conn.close()
    resp = httpx.get(f"{server.url}/v1/users/777")
    assert resp.status_code == 200 and resp.json()["user_id"] == 777


# --------------------------------------------------------------------------- bounded media


def worker_peak_rss_mb(pid: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def test_decompression_bomb_is_refused_and_memory_stays_flat(server) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG", optimize=True)  # 144 Mpx in a few KB
    bomb = buf.getvalue()
    assert len(bomb) < 100_000
    with httpx.Client(base_url=server.url, timeout=120) as client:
        pid = client.get("/healthz").headers["x-recsys-worker"]
        before = worker_peak_rss_mb(pid)
        for _ in range(3):
            resp = client.post(
                "/v1/items",
                data={"item_id": "5002"},
                files={"image": ("bomb.png", bomb, "image/png")},
                headers=KEY,
            )
            assert resp.status_code == 413, resp.text
            assert resp.headers["x-recsys-worker"] == pid
            assert "12000x12000" in resp.text and "serve.max_image_pixels" in resp.text
        after = worker_peak_rss_mb(pid)
    assert after - before < 50, f"peak RSS grew {after - before:.0f} MB on a refused image"
    assert httpx.get(f"{server.url}/v1/items/5002").status_code == 404


# --------------------------------------------------------------------------- schemathesis


def test_every_operation_conforms_to_its_openapi_document(server, tmp_path) -> None:
    """schemathesis (examples, coverage and fuzzing phases) over every operation, with the API key."""
    st = Path(sys.executable).parent / "st"
    cmd = [
        str(st),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,negative_data_rejection",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "120",  # per operation and phase (was 200: ~30 s more of the CI budget)
        "--seed",
        "17",
        "--header",
        f"X-API-Key: {API_KEY}",
        "--request-timeout",
        "60",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp_path)  # its database: tmp
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]


# --------------------------------------------------------------------------- the swap race


def test_an_acknowledged_swap_never_goes_back_even_when_recording_it_is_slow(
    server, state, trained_run, known, tmp_path
) -> None:
    new_dir = perturbed_checkpoint(trained_run.checkpoint, tmp_path / "new", scale=0.05)
    stop = threading.Event()
    results: list[tuple[float, float, str, int, str | None]] = []  # (sent, received, worker, status, version)

    def client() -> None:
        # A new connection per request: the kernel spreads connections over the workers (SO_REUSEPORT), and
        # 4 kept-alive connections all land on one worker 1 time in 8.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, timeout=60, limits=limits) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = c.post("/v1/score", json={"user_id": 3, "candidates": known})
                version = r.json().get("model_version") if r.status_code == 200 else None
                results.append((sent, time.monotonic(), r.headers.get("x-recsys-worker", "?"), r.status_code, version))

    def hold_write_lock(seconds: float) -> None:
        conn = sqlite3.connect(state / "serving.db", timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    before = httpx.get(f"{server.url}/readyz").json()["model_version"]
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    locker = threading.Thread(target=hold_write_lock, args=(3.0,))
    locker.start()  # the store is busy while the reload loads and records the new model
    resp = httpx.post(f"{server.url}/v1/admin/reload", json={"checkpoint": str(new_dir)}, headers=KEY, timeout=120)
    acked = time.monotonic()
    locker.join()
    assert resp.status_code == 200, resp.text
    after, acker = resp.json()["model_version"], resp.headers["x-recsys-worker"]
    assert after != before
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # every worker follows within one model load
        recent = {(w, v) for s, _, w, _, v in results[-40:] if s > acked}
        if len({w for w, _ in recent}) == 2 and {v for _, v in recent} == {after}:
            break
        time.sleep(0.5)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    assert all(status == 200 for *_, status, _ in results), [r for r in results if r[3] != 200][:5]
    late_old = [r for r in results if r[2] == acker and r[0] > acked and r[4] != after]
    assert not late_old, f"{len(late_old)} old-model answers from the worker that acknowledged the swap"
    workers = {w for _, _, w, _, _ in results}
    assert len(workers) == 2
    for worker in workers:  # each worker: new model at the end, and no old answer more than 30 s after the swap
        answers = [r for r in results if r[2] == worker]
        assert answers[-1][4] == after, f"worker {worker} still serves {answers[-1][4]}"
        last_old = max((r[0] for r in answers if r[4] != after), default=acked)
        assert last_old - acked < 30, f"worker {worker} followed after {last_old - acked:.1f} s"


# --------------------------------------------------------------------------- kill -9


def test_acknowledged_writes_survive_kill_9_of_the_whole_server(server, trained_run, state, known, tmp_path) -> None:
    from recsys.checkpoint import load_checkpoint

    dim = load_checkpoint(trained_run.checkpoint).item_table.dims()["title"]
    with httpx.Client(base_url=server.url, timeout=60, headers=KEY) as client:
        for i in range(20):
            resp = client.post("/v1/users/4242/events", json={"clicked": [known[i % len(known)]]})
            assert resp.status_code == 200, resp.text
        history = resp.json()["history"]
        resp = client.post("/v1/items", json={"item_id": 990777, "vectors": {"title": [0.1] * dim}})
        assert resp.status_code == 201, resp.text
    os.killpg(server.proc.pid, signal.SIGKILL)  # no shutdown of any kind
    server.proc.wait()
    again = Server(trained_run.checkpoint, state, tmp_path / "again.log")
    try:
        assert httpx.get(f"{again.url}/v1/users/4242").json()["history"] == history
        assert httpx.get(f"{again.url}/v1/items/990777").status_code == 200
    finally:
        again.stop()
