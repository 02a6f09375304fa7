"""The scoring service over real HTTP: `recsys serve` (uvicorn, 2 workers) on 127.0.0.1 and an httpx client.

One server (two worker processes) serves a tiny checkpoint trained by `recsys train`; the tests
run in file order, and the last ones stop it and restart on the same state directory.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from support.server import API_KEY, Server, perturbed_checkpoint, variant_checkpoint

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    from recsys.checkpoint import load_checkpoint

    return load_checkpoint(trained_run.checkpoint)


def decode_context(checkpoint, row: dict) -> dict:
    """The raw context values behind a prepared row's indices (inverse of the feature map)."""
    fields = checkpoint.feature_map.by("context", "categorical")
    return {f.name: (f.vocab[i - 2] if i >= 2 else "never-seen") for f, i in zip(fields, row["context"])}


def score(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/score", json=body, timeout=30)


# --------------------------------------------------------------------------- round trip


def assert_served_equals_offline(url: str, checkpoint, frame: pl.DataFrame) -> None:
    """Each prepared row scored over HTTP (its history and context in the request) equals the offline
    scorer's probability for it within 1e-5."""
    from recsys.evaluation import predict_frame

    offline = predict_frame(checkpoint, frame).probs
    item_ids = checkpoint.item_table.item_ids
    for k, row in enumerate(frame.iter_rows(named=True)):
        history = [int(item_ids[r - 1]) for r, m in zip(row["hist"], row["hist_mask"]) if m]
        resp = score(
            url,
            user_id=row["meta_user_id"],
            candidates=[row["meta_item_id"]],
            history=history,
            context=decode_context(checkpoint, row),
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["history_source"] == "request" and body["model_version"].startswith("marn-")
        assert abs(body["scores"][0]["score"] - float(offline[k])) < 1e-5, (k, body, offline[k])


def test_scores_equal_the_offline_scorer(server, checkpoint, trained_run) -> None:
    from recsys.features.prepared import PreparedDir

    frame = PreparedDir.of_run(trained_run.run_dir).read_split("test").head(25)
    assert_served_equals_offline(server.url, checkpoint, frame)


def test_ids_beside_content_with_similarity_tiers_serve_the_offline_scores(trained_run, tmp_path: Path) -> None:
    """The item representation of configs/ml-100k-mm.yaml (MARN's content added to the ids through content
    gates per item maturity, SimTier similarity features, content projected to fewer dimensions, and here a
    user tower too) scores over HTTP exactly as offline; an item registered with a cold catalogue item's
    media goes through the same projection and scores as that item does."""
    from recsys.checkpoint import load_checkpoint
    from recsys.features.prepared import PreparedDir

    path = variant_checkpoint(
        trained_run.checkpoint,
        tmp_path / "beside",
        id_path="beside",
        content_merge="add",
        content_gate=True,
        simtier_bins=8,
        maturity_tiers=4,
        user_tower=True,
        content_dim=16,
    )
    ckpt = load_checkpoint(path)
    assert ckpt.config.model.id_path == "beside" and ckpt.config.model.simtier_bins == 8
    assert ckpt.item_table.dims() == dict.fromkeys(ckpt.item_table.modalities, 16)
    frame = PreparedDir.of_run(trained_run.run_dir).read_split("test")
    frame = frame.filter(pl.col("hist_mask").arr.sum() >= 2).head(25)  # similarity tiers need a history
    assert len(frame) == 25
    srv = Server(path, tmp_path / "state", tmp_path / "serve.log")
    try:
        assert_served_equals_offline(srv.url, ckpt, frame)
        twin = register_cold_twin(srv.url, trained_run.data_dir, ckpt, 990002)
        r = httpx.post(
            f"{srv.url}/v1/score", json={"user_id": 1, "candidates": [990002, twin["item_id"]], "context": {}}
        )
        new, old = (s["score"] for s in r.json()["scores"])
        assert abs(new - old) < 2e-3, (new, old)
    finally:
        srv.stop()


def test_stored_history_is_used_when_the_request_has_none(server, trained_run) -> None:
    clicks = pl.read_parquet(trained_run.data_dir / "interactions.parquet").filter(pl.col("label") == 1)
    user = int(clicks["user_id"][0])
    stored = httpx.get(f"{server.url}/v1/users/{user}").json()
    assert stored["history"] and len(stored["history"]) <= 30
    candidates = clicks["item_id"].unique().sort().head(40).to_list()
    implicit = score(server.url, user_id=user, candidates=candidates).json()
    explicit = score(server.url, user_id=user, candidates=candidates, history=stored["history"]).json()
    assert implicit["history_source"] == "store"
    assert [s["score"] for s in implicit["scores"]] == pytest.approx([s["score"] for s in explicit["scores"]], abs=1e-6)
    top = score(server.url, user_id=user, candidates=candidates, top_k=5).json()["scores"]
    assert [s["item_id"] for s in top] == [
        s["item_id"] for s in sorted(implicit["scores"], key=lambda s: -s["score"])[:5]
    ]
    # Updating the history through the API changes what is used.
    updated = httpx.post(f"{server.url}/v1/users/{user}/events", json={"clicked": candidates[:3]}, headers=KEY).json()
    assert updated["history"][-3:] == candidates[:3]
    again = score(server.url, user_id=user, candidates=candidates).json()
    assert again["scores"] != implicit["scores"]


# --------------------------------------------------------------------------- new items


def media_of(data_dir: Path, item: dict) -> dict:
    return {
        "image": (data_dir / item["image_path"]).read_bytes(),
        "audio": (data_dir / item["audio_path"]).read_bytes(),
    }


def register_cold_twin(url: str, data_dir: Path, checkpoint, item_id: int) -> dict:
    """POST /v1/items a new item with the title and media of a cold catalogue item; returns that twin's row."""
    items = pl.read_parquet(data_dir / "items.parquet")
    table = checkpoint.item_table
    cold = {int(i) for i, idx in zip(table.item_ids, table.id_index[1:]) if idx == 1}
    twin = items.filter(
        pl.col("item_id").is_in(sorted(cold)) & pl.col("image_path").is_not_null() & pl.col("audio_path").is_not_null()
    ).row(0, named=True)
    media = media_of(data_dir, twin)
    resp = httpx.post(
        f"{url}/v1/items",
        timeout=120,
        headers=KEY,
        data={
            "item_id": str(item_id),
            "title": twin["title"],
            "attributes": json.dumps({"department": twin["department"]}),
        },
        files={"image": ("a.png", media["image"], "image/png"), "audio": ("a.wav", media["audio"], "audio/wav")},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["cold"] is True and resp.json()["modalities"] == ["title", "image", "audio"]
    return twin


def test_registered_item_is_scorable_on_every_worker_and_matches_its_catalogue_twin(
    server, checkpoint, trained_run
) -> None:
    twin = register_cold_twin(server.url, trained_run.data_dir, checkpoint, 990001)
    # Every worker scores it right away; the registered copy scores like the catalogue item with the same content.
    pids, failures = set(), []
    for _ in range(200):
        with httpx.Client() as client:  # a new connection each time: requests reach both workers
            r = client.post(
                f"{server.url}/v1/score", json={"user_id": 1, "candidates": [990001, twin["item_id"]], "context": {}}
            )
        if r.status_code != 200:
            failures.append(r.text)
            continue
        pids.add(r.headers["x-recsys-worker"])
        new, old = (s["score"] for s in r.json()["scores"])
        assert abs(new - old) < 2e-3, (new, old)
        if len(pids) == 2:
            break
    assert not failures and len(pids) == 2, (failures[:3], pids)
    got = httpx.get(f"{server.url}/v1/items/990001").json()
    assert got["source"] == "registered" and got["title"] == twin["title"]


def test_item_with_json_vectors_and_base64_media(server, checkpoint, trained_run) -> None:
    dims = checkpoint.item_table.dims()
    items = pl.read_parquet(trained_run.data_dir / "items.parquet")
    row = items.filter(pl.col("image_path").is_not_null()).row(1, named=True)
    body = {
        "item_id": 990002,
        "attributes": {"department": "never-seen-department"},
        "vectors": {"title": np.random.default_rng(0).normal(size=dims["title"]).tolist()},
        "image_base64": base64.b64encode((trained_run.data_dir / row["image_path"]).read_bytes()).decode(),
    }
    resp = httpx.post(f"{server.url}/v1/items", json=body, timeout=120, headers=KEY)
    assert resp.status_code == 201, resp.text
    assert resp.json()["modalities"] == ["title", "image"]
    s = score(server.url, user_id=5, candidates=[990002]).json()["scores"][0]["score"]
    assert 0 < s < 1


# --------------------------------------------------------------------------- bad input: 4xx, never 500


def test_bad_requests_get_a_4xx_naming_the_field(server, checkpoint) -> None:
    known = int(checkpoint.item_table.item_ids[0])
    dims = checkpoint.item_table.dims()
    url = server.url

    def check(resp: httpx.Response, status: int, *needles: str) -> None:
        assert resp.status_code == status, (resp.status_code, resp.text)
        for needle in needles:
            assert needle in resp.text, (needle, resp.text)

    check(score(url, user_id=1, candidates=[known, 123456789, 987654321]), 422, "candidates", "123456789", "987654321")
    check(score(url, user_id=1, candidates=[]), 422, "candidates")
    check(score(url, user_id=1, candidates=list(range(1, 202))), 422, "candidates", "limit of 200")
    check(score(url, user_id=1, candidates=[known], history=[424242]), 422, "history", "424242")
    check(score(url, user_id="abc", candidates=[known]), 422, "user_id")
    check(score(url, user_id=1, candidates=[known], context={"no_such_field": 1}), 422, "context", "no_such_field")
    check(score(url, user_id=1, candidates=[known], top_k=0), 422, "top_k")
    check(
        httpx.post(
            f"{url}/v1/score", content=b'{"user_id": 1, "candidates": [', headers={"content-type": "application/json"}
        ),
        400,
        "invalid JSON",
    )
    check(
        httpx.post(f"{url}/v1/score", content=b"x" * (2 * 1024 * 1024), headers={"content-type": "application/json"}),
        413,
        "limit",
    )
    nan = json.dumps({"item_id": 5001, "vectors": {"title": [float("nan")] * dims["title"]}})
    check(
        httpx.post(f"{url}/v1/items", content=nan, headers={"content-type": "application/json", **KEY}),
        400,
        "body",
        "invalid JSON",
    )
    check(
        httpx.post(f"{url}/v1/items", json={"item_id": 5001, "vectors": {"title": [1.0, 2.0]}}, headers=KEY),
        422,
        "vectors.title",
        f"expected {dims['title']}",
    )
    check(
        httpx.post(f"{url}/v1/items", json={"item_id": 5001, "vectors": {"smell": [1.0]}}, headers=KEY),
        422,
        "vectors",
        "smell",
    )
    check(
        httpx.post(
            f"{url}/v1/items",
            data={"item_id": "5001"},
            files={"image": ("x.png", b"not an image", "image/png")},
            headers=KEY,
        ),
        422,
        "image",
        "cannot decode",
    )
    check(
        httpx.post(
            f"{url}/v1/items",
            data={"item_id": "5001"},
            files={"audio": ("x.wav", b"RIFF....garbage", "audio/wav")},
            headers=KEY,
        ),
        422,
        "audio",
        "cannot decode",
    )
    check(
        httpx.post(f"{url}/v1/items", json={"item_id": 5001, "image_base64": "%%%"}, headers=KEY), 422, "image_base64"
    )
    check(
        httpx.post(
            f"{url}/v1/items", json={"item_id": 5001, "attributes": {"colour": "red"}, "title": "x"}, headers=KEY
        ),
        422,
        "attributes",
        "colour",
    )
    check(httpx.post(f"{url}/v1/items", json={"item_id": "five"}, headers=KEY), 422, "item_id")
    check(httpx.get(f"{url}/v1/items/31337"), 404, "31337")
    check(httpx.get(f"{url}/v1/users/31337"), 404, "31337")
    check(httpx.post(f"{url}/v1/admin/reload", json={"checkpoint": "/nowhere"}), 401, "API key")
    check(httpx.post(f"{url}/v1/items", json={"item_id": 5001, "title": "x"}), 401, "API key")
    check(httpx.put(f"{url}/v1/users/1", json={"history": []}), 401, "API key")
    assert httpx.get(f"{url}/v1/items/5001").status_code == 404  # nothing above registered it


# --------------------------------------------------------------------------- hot swap


def test_reload_under_load_has_no_failed_request_and_every_worker_follows(server, trained_run, tmp_path) -> None:
    before = httpx.get(f"{server.url}/readyz").json()["model_version"]
    new_dir = perturbed_checkpoint(trained_run.checkpoint, tmp_path / "new")
    stop, results = threading.Event(), []

    def client() -> None:
        with httpx.Client() as c:
            while not stop.is_set():
                try:
                    r = c.post(
                        f"{server.url}/v1/score", json={"user_id": 3, "candidates": [990001, 990002]}, timeout=30
                    )
                    results.append((r.status_code, r.json().get("model_version")))
                except httpx.HTTPError as exc:
                    results.append((0, repr(exc)))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    resp = httpx.post(
        f"{server.url}/v1/admin/reload", json={"checkpoint": str(new_dir)}, headers={"X-API-Key": API_KEY}, timeout=120
    )
    after = resp.json()["model_version"]
    deadline = time.time() + 60
    while time.time() < deadline:  # the other worker follows in the background
        seen = {
            httpx.Client()
            .post(f"{server.url}/v1/score", json={"user_id": 3, "candidates": [990001]})
            .json()["model_version"]
            for _ in range(20)
        }
        if seen == {after}:
            break
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert resp.status_code == 200 and resp.json()["status"] == "swapped" and after != before, resp.text
    assert seen == {after}
    failed = [r for r in results if r[0] != 200]
    assert results and not failed, failed[:5]
    versions = [v for _, v in results]
    assert before in versions and after in versions  # served by both models during the run, no gap


def test_corrupt_checkpoint_is_refused_and_the_old_model_keeps_serving(server, trained_run, tmp_path) -> None:
    current = httpx.get(f"{server.url}/readyz").json()["model_version"]
    bad = tmp_path / "bad"
    shutil.copytree(trained_run.checkpoint, bad)
    with (bad / "model.pt").open("r+b") as fh:
        fh.truncate(1000)
    resp = httpx.post(
        f"{server.url}/v1/admin/reload", json={"checkpoint": str(bad)}, headers={"X-API-Key": API_KEY}, timeout=120
    )
    assert resp.status_code == 422 and "model.pt" in resp.text and "still serving" in resp.text, resp.text
    r = score(server.url, user_id=1, candidates=[990001])
    assert r.status_code == 200 and r.json()["model_version"] == current


# --------------------------------------------------------------------------- operations


def test_health_metrics_and_docs(server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] is True and ready["catalogue_items"] >= 1500
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'recsys_http_requests_total{method="POST",route="/v1/score",status="200"}' in metrics
    assert 'recsys_http_requests_total{method="POST",route="/v1/score",status="422"}' in metrics
    assert 'recsys_http_request_duration_seconds_bucket{le="0.005",route="/v1/score"}' in metrics
    assert f'version="{ready["model_version"]}"' in metrics and "recsys_catalogue_items" in metrics
    assert 'recsys_model_swaps_total{outcome="refused"}' in metrics
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/score", "/v1/items", "/v1/admin/reload", "/metrics"} <= set(spec["paths"])
    assert httpx.get(f"{server.url}/docs").status_code == 200
    model = httpx.get(f"{server.url}/v1/admin/model", headers={"X-API-Key": API_KEY}).json()
    assert model["registered_items"] == 2


def test_connections_spread_over_workers_and_a_killed_worker_is_replaced(server) -> None:
    # 16 keep-alive connections opened at once: each worker listens on its own SO_REUSEPORT socket, so they
    # do not all land on the worker that wakes first (the kernel hashes each connection to a worker).
    clients = [httpx.Client(base_url=server.url) for _ in range(16)]
    try:
        owners = [c.get("/healthz").headers["x-recsys-worker"] for c in clients]
    finally:
        for c in clients:
            c.close()
    assert len(set(owners)) == 2, owners
    victim = int(owners[0])
    os.kill(victim, signal.SIGKILL)
    seen, resets, deadline = set(), 0, time.time() + 120
    while time.time() < deadline and not (len(seen) == 2 and str(victim) not in seen):
        try:
            with httpx.Client() as client:  # new connections: they reach whichever workers are listening
                r = client.get(f"{server.url}/readyz", timeout=10)
        except httpx.TransportError:
            # A connection the kernel queued on the killed worker's socket before it closed is reset: that is the
            # crash itself. What must hold is that the survivor and a replacement answer new connections.
            resets += 1
            time.sleep(0.05)
            continue
        if r.status_code == 200:
            seen = (seen | {r.headers["x-recsys-worker"]}) - {str(victim)}
        time.sleep(0.05)
    assert resets < 20, f"{resets} connections reset after the kill: the dead worker's socket kept receiving them"
    assert len(seen) == 2, f"no replacement worker answered: {seen}\n{server.log.read_text()[-3000:]}"
    assert "starting a new one" in server.log.read_text()


def test_registered_items_survive_a_restart(server, trained_run, state, tmp_path) -> None:
    version = httpx.get(f"{server.url}/readyz").json()["model_version"]
    before = score(server.url, user_id=7, candidates=[990001, 990002]).json()
    server.stop()
    again = Server(trained_run.checkpoint, state, tmp_path / "restart.log")
    try:
        item = httpx.get(f"{again.url}/v1/items/990001")
        assert item.status_code == 200 and item.json()["source"] == "registered"
        after = score(again.url, user_id=7, candidates=[990001, 990002]).json()
        # `recsys serve --checkpoint` makes its checkpoint the active model again: scores match the original model,
        # and the registered items are back without being sent again.
        assert after["model_version"] != version
        assert all(0 < s["score"] < 1 for s in after["scores"]) and len(after["scores"]) == len(before["scores"])
    finally:
        again.stop()


def test_serve_refuses_a_bad_checkpoint_before_starting(tmp_path) -> None:
    from conftest import run_cli

    proc = run_cli("serve", "--checkpoint", str(tmp_path / "missing"), "--port", "1", check=False)
    assert proc.returncode == 2 and "checkpoint directory not found" in proc.stderr and "Traceback" not in proc.stderr
