"""A real two-node Ray cluster on this machine: a head node plus a second node, each its own raylet started with
`ray start`, reached by address as on a real cluster (the training and the Ray Serve end-to-end tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving.net import free_port

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}


def start_node(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`ray start ... --block` in its own process group: stopping it kills exactly this node."""
    return subprocess.Popen(
        [RAY, "start", "--block", *args],
        env={**ENV, **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def two_node_cluster(logs: Path, cpus_per_node: int = 3, env: dict[str, str] | None = None) -> Iterator[str]:
    """`ray start --head` on 127.0.0.1 plus a second `ray start --address` node; yields the head's address.

    The nodes carry the custom resources ``head_node`` and ``second_node`` (1 each) and ``env`` in their
    environment (their workers inherit it); both stop on exit.
    """
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = [
        "--disable-usage-stats",
        "--num-cpus",
        str(cpus_per_node),
        "--object-store-memory",
        str(300 * 1024**2),
        "--node-ip-address",
        "127.0.0.1",
    ]
    head = ["--head", "--port", str(port), "--include-dashboard", "false", "--resources", '{"head_node": 1}']
    nodes = [start_node([*head, *common], logs / "head.log", env)]
    try:
        deadline = time.time() + 120
        while subprocess.run([RAY, "status", "--address", address], env=ENV, capture_output=True).returncode != 0:
            assert time.time() < deadline and nodes[0].poll() is None, (logs / "head.log").read_text()[-3000:]
            time.sleep(1)
        nodes.append(
            start_node(["--address", address, "--resources", '{"second_node": 1}', *common], logs / "node2.log", env)
        )
        while (
            "second_node"
            not in subprocess.run([RAY, "status", "--address", address], env=ENV, capture_output=True, text=True).stdout
        ):
            assert time.time() < deadline and nodes[1].poll() is None, (logs / "node2.log").read_text()[-3000:]
            time.sleep(1)
        yield address
    finally:
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(node.pid, signal.SIGKILL)
