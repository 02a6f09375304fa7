"""The Ray backend on a two-node Ray cluster: `recsys serve --backend ray --address HEAD:PORT` on a head node plus a
second `ray start` node (tests/support/ray_cluster.py), one replica per node (``--max-replicas-per-node 1``), the
state in a real redis-server started here (skipped when it is not installed).

Both nodes are this machine, so their proxies could not both take the port: Serve's proxy runs on the head only
(``--proxy-location head_only``, ``--ingress proxy``) and forwards to the replicas of both nodes (the nodes start
with ``RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING=0``). Which node a
replica runs on is its parent process, the node's raylet. What the replica of one node is told (a click, a new
item, a model swap), the other node's replica uses: the cross-replica tests of test_ray_serving.py run here again
against this service (imported below; the last one swaps the model).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.ray_cluster import two_node_cluster
from support.redis_server import RedisServer
from support.server import CATALOGUE_LIMITS, Server
from test_ray_serving import (  # noqa: F401  # the fixture and the tests, collected here for this service
    REPLICAS,
    by_replica,
    known,
    replicas,
    test_an_event_posted_through_one_replica_is_used_by_a_score_on_another,
    test_an_item_registered_through_one_replica_is_scored_by_every_replica,
    test_reload_under_load_reaches_every_replica_with_no_failed_request,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # The head's proxy would otherwise send every request to the head's own replica (README)
    env = {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}
    with two_node_cluster(tmp_path_factory.mktemp("ray-logs"), cpus_per_node=2, env=env) as address:
        yield address


@pytest.fixture(scope="module")
def ray_service(
    cluster, trained_run, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """2 replicas, one per node (half a CPU each), the proxy on the head, the state in Redis."""
    root = tmp_path_factory.mktemp("ray-serve-cluster")
    srv = Server(
        trained_run.checkpoint,
        root / "state",
        root / "serve.log",
        "--backend",
        "ray",
        "--address",
        cluster,
        "--min-replicas",
        str(REPLICAS),
        "--max-replicas",
        str(REPLICAS),
        "--max-replicas-per-node",
        "1",
        "--replica-cpus",
        "0.5",
        "--proxy-location",
        "head_only",
        "--ingress",
        "proxy",
        "--state-url",
        redis_server.url,
        *CATALOGUE_LIMITS,
        ready_timeout=420,
    )
    try:  # /readyz answers once one replica is up; the other may still be loading its model
        deadline = time.time() + 180
        while len(replicas(srv.url)) < REPLICAS and time.time() < deadline:
            time.sleep(0.5)
    except BaseException:
        srv.stop()
        raise
    yield srv
    try:  # SIGTERM: the command deletes its Serve application; the cluster's nodes stop after it
        if srv.proc.poll() is None:
            os.kill(srv.proc.pid, signal.SIGTERM)
            srv.proc.wait(timeout=60)
    finally:
        srv.stop()


def raylet_of(pid: str) -> str:
    """The pid and command of a process's parent: a Ray worker's is the raylet of its node."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    parent = stat.rsplit(")", 1)[1].split()[1]  # the fields after "(comm)": state, ppid, ...
    command = Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return f"{parent} {command}"


def test_one_replica_runs_on_each_node_and_both_answer(ray_service) -> None:
    pids = replicas(ray_service.url)
    assert len(pids) == REPLICAS, pids
    raylets = {raylet_of(pid) for pid in pids}
    assert len(raylets) == REPLICAS and all("raylet" in r for r in raylets), raylets  # two nodes' raylets
    answers = by_replica(ray_service.url, "/v1/score", {"user_id": 1, "candidates": [], "top_k": 1}, pids)
    assert all(r.status_code == 422 for r in answers.values())  # answered by each replica, in the service's shape
    assert httpx.get(f"{ray_service.url}/healthz").status_code == 200
