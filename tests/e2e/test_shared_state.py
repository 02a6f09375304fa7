"""Two hosts, one state: two `recsys serve` processes with their own state directories and the same Redis
(`--state-url redis://...`, a real redis-server started here; skipped when it is not installed).

What one host is told (a click, a user's history, a new item, a model swap) the other uses at its next
request; a Redis that goes away while serving is a 503 naming it (one that cannot be reached at start-up:
tests/e2e/test_bad_inputs_cli.py). The tests run in file order: the last one stops Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import polars as pl
import pytest
from support.server import API_KEY, Server, perturbed_checkpoint, vector_item

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def hosts(trained_run, redis_server, tmp_path_factory) -> Iterator[tuple[Server, Server]]:
    """Host A and host B: one worker each, their own state directories, the same Redis."""
    started: list[Server] = []
    try:
        for name in ("a", "b"):
            root = tmp_path_factory.mktemp(f"host-{name}")
            started.append(
                Server(trained_run.checkpoint, root / "state", root / "serve.log", "--state-url", redis_server.url)
            )
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def score(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/score", json=body, timeout=30)


def scores(resp: httpx.Response) -> list[float]:
    assert resp.status_code == 200, resp.text
    return [s["score"] for s in resp.json()["scores"]]


def test_an_event_posted_to_one_host_is_used_by_a_score_on_the_other(hosts, trained_run) -> None:
    a, b = hosts
    clicks = pl.read_parquet(trained_run.data_dir / "interactions.parquet").filter(pl.col("label") == 1)
    user = int(clicks["user_id"][0])
    candidates = clicks["item_id"].unique().sort().head(30).to_list()
    before = score(b.url, user_id=user, candidates=candidates)
    assert before.json()["history_source"] == "store"
    posted = httpx.post(f"{a.url}/v1/users/{user}/events", json={"clicked": candidates[:3]}, headers=KEY)
    assert posted.status_code == 200, posted.text
    history = posted.json()["history"]
    assert history[-3:] == candidates[:3]
    assert httpx.get(f"{b.url}/v1/users/{user}").json()["history"] == history
    on_b = score(b.url, user_id=user, candidates=candidates)
    assert on_b.json()["history_source"] == "store" and scores(on_b) != scores(before)
    assert scores(on_b) == pytest.approx(scores(score(a.url, user_id=user, candidates=candidates, history=history)))
    # A history replaced on B is A's at once.
    replaced = httpx.put(f"{b.url}/v1/users/{user}", json={"history": candidates[5:7], "attributes": {}}, headers=KEY)
    assert replaced.status_code == 200, replaced.text
    assert httpx.get(f"{a.url}/v1/users/{user}").json()["history"] == candidates[5:7]


def test_an_item_registered_on_one_host_is_scored_on_the_other(hosts, trained_run) -> None:
    from recsys.checkpoint import load_checkpoint

    a, b = hosts
    known = int(load_checkpoint(trained_run.checkpoint).item_table.item_ids[0])
    body = vector_item(trained_run.checkpoint, 990101, "registered on host A", seed=3)
    unknown = score(b.url, user_id=1, candidates=[990101, known])
    assert unknown.status_code == 422 and unknown.json()["detail"]["ids"] == [990101]
    created = httpx.post(f"{a.url}/v1/items", json=body, headers=KEY, timeout=60)
    assert created.status_code == 201, created.text
    got = httpx.get(f"{b.url}/v1/items/990101")
    assert got.status_code == 200 and got.json()["cold"] is True and got.json()["title"] == "registered on host A"
    request = {"user_id": 1, "candidates": [990101, known], "history": [known]}
    assert scores(score(b.url, **request)) == pytest.approx(scores(score(a.url, **request)), abs=1e-6)


def test_a_model_swapped_on_one_host_is_served_by_the_other(hosts, trained_run, tmp_path) -> None:
    a, b = hosts
    new_dir = perturbed_checkpoint(trained_run.checkpoint, tmp_path / "new", scale=0.05)
    swapped = httpx.post(f"{a.url}/v1/admin/reload", json={"checkpoint": str(new_dir)}, headers=KEY, timeout=120)
    assert swapped.status_code == 200, swapped.text
    version = swapped.json()["model_version"]
    deadline = time.time() + 60
    while (served := score(b.url, user_id=1, candidates=[990101]).json()["model_version"]) != version:
        assert time.time() < deadline, f"host B still serves {served}, not {version}"
        time.sleep(0.2)
    assert httpx.get(f"{b.url}/v1/admin/model", headers=KEY).json()["checkpoint"] == str(new_dir)


def test_redis_gone_while_serving_is_a_503_naming_it(hosts, redis_server, trained_run) -> None:
    """Last: Redis stops; every request that needs the state gets 503 with the URL, none a 500."""
    a, b = hosts
    redis_server.stop()
    requests = [
        lambda: score(a.url, user_id=1, candidates=[990101]),
        lambda: httpx.post(f"{b.url}/v1/users/1/events", json={"clicked": [990101]}, headers=KEY),
        lambda: httpx.get(f"{a.url}/v1/users/1"),
        lambda: httpx.get(f"{b.url}/v1/users", params={"limit": 5}),
        lambda: httpx.get(f"{b.url}/v1/items/990101"),
    ]
    for send in requests:
        resp = send()
        assert resp.status_code == 503, (resp.status_code, resp.text)
        detail = resp.json()["detail"]
        assert detail["field"] == "state_url" and redis_server.url in detail["message"], detail
        assert resp.headers["retry-after"] == "1"
    for host in hosts:
        assert httpx.get(f"{host.url}/readyz").status_code == 200  # the process is up; the store is what is missing
        assert "Traceback" not in host.log.read_text()
