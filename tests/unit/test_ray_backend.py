"""The Ray backend's settings: the replica fields of the ``serve`` section are checked like every other field, a
SQLite store is refused for replicas a cluster may spread over nodes, and the deployment options follow the section.
(The backend serving real traffic: tests/e2e/test_ray_serving.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsys.config import ServeConfig, load_config
from recsys.errors import ConfigError
from serving.ray_backend import (
    HAPROXY_PORT_ENV,
    check_ingress,
    check_placement,
    deployment_options,
    ingress_environment,
)
from serving.settings import ServeSettings


def settings(**serve: object) -> ServeSettings:
    return ServeSettings.resolve(Path("/models/best"), ServeConfig(), serve)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("serve:\n  min_replicas: 3\n  max_replicas: 2\n", "max_replicas: 2 is below min_replicas (3)"),
        ("serve:\n  backend: kubernetes\n", "serve.backend: Input should be 'local' or 'ray'"),
        ("serve:\n  replica_cpus: 0\n", "serve.replica_cpus: Input should be greater than 0"),
        ("serve:\n  min_replicas: 0\n", "serve.min_replicas: Input should be greater than or equal to 1"),
        ("serve:\n  target_ongoing_requests: .nan\n", "serve.target_ongoing_requests: Input should be a finite number"),
        ("serve:\n  proxy_location: everywhere\n", "serve.proxy_location: Input should be 'every_node' or 'head_only'"),
        ("serve:\n  ingress: nginx\n", "serve.ingress: Input should be 'haproxy' or 'proxy'"),
        ("serve:\n  max_replicas_per_node: 0\n", "serve.max_replicas_per_node: Input should be greater than or"),
    ],
)
def test_replica_fields_are_checked_and_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(path)


def test_a_command_line_override_out_of_range_names_the_field_without_the_section() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(min_replicas=4, max_replicas=2, api_key="secret-key-123")
    assert str(caught.value) == "serve.max_replicas: 2 is below min_replicas (4)"  # one line, no API key


@pytest.mark.parametrize(
    ("serve", "nodes", "refused"),
    [
        ({"max_replicas": 2}, 2, True),  # SQLite in state_dir: one node's file
        ({"max_replicas": 2, "state_url": "sqlite:///state.db"}, 3, True),
        ({"max_replicas": 2}, 1, False),  # one node: the replicas share the file as local workers do
        ({"max_replicas": 1}, 2, False),  # one replica, placed on the node with the file
        ({"max_replicas": 4, "state_url": "redis://redis.internal:6379/0"}, 5, False),
    ],
)
def test_sqlite_for_replicas_on_several_nodes_is_refused(serve: dict, nodes: int, refused: bool) -> None:
    if not refused:
        check_placement(settings(**serve), nodes)
        return
    with pytest.raises(ConfigError) as caught:
        check_placement(settings(**serve), nodes)
    message = str(caught.value)
    assert message.startswith("serve.state_url: ") and "redis://" in message and "\n" not in message


def test_replicas_the_nodes_cannot_hold_at_max_replicas_per_node_are_refused() -> None:
    redis = {"state_url": "redis://redis.internal:6379/0"}
    check_placement(settings(min_replicas=2, max_replicas=4, max_replicas_per_node=1, **redis), 2)
    with pytest.raises(ConfigError) as caught:
        check_placement(settings(min_replicas=3, max_replicas=3, max_replicas_per_node=1, **redis), 2)
    assert str(caught.value) == (
        "serve.max_replicas_per_node: 3 replicas (min_replicas) at most 1 per node do not fit the Ray cluster's "
        "2 node(s)"
    )
    assert deployment_options(settings(max_replicas_per_node=1), Path("/m"), None)["max_replicas_per_node"] == 1
    assert "max_replicas_per_node" not in deployment_options(settings(), Path("/m"), None)


def test_deployment_options_follow_the_serve_section(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RECSYS_REDIS_PASSWORD", raising=False)
    fixed = deployment_options(settings(min_replicas=3, max_replicas=3, replica_cpus=0.5), tmp_path, None)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"]["num_cpus"] == 0.5
    assert fixed["ray_actor_options"]["runtime_env"]["env_vars"]["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    scaled = deployment_options(
        settings(min_replicas=1, max_replicas=4, target_ongoing_requests=3), tmp_path, "node:10.0.0.5"
    )
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3.0}
    assert scaled["ray_actor_options"]["resources"] == {"node:10.0.0.5": 0.001}
    assert scaled["max_ongoing_requests"] >= 2 * 3
    assert "RECSYS_REDIS_PASSWORD" not in scaled["ray_actor_options"]["runtime_env"]["env_vars"]
    monkeypatch.setenv("RECSYS_REDIS_PASSWORD", "pw")  # the replicas' store gets the driver's password
    with_password = deployment_options(settings(), tmp_path, None)
    assert with_password["ray_actor_options"]["runtime_env"]["env_vars"]["RECSYS_REDIS_PASSWORD"] == "pw"


@pytest.mark.parametrize(
    ("ingress", "environ", "refused"),
    [
        ("haproxy", {"RAY_SERVE_ENABLE_HA_PROXY": "1"}, False),
        ("haproxy", {}, True),  # a node started without the HAProxy environment
        ("proxy", {"RAY_SERVE_ENABLE_HA_PROXY": "0"}, False),
        ("proxy", {"RAY_SERVE_ENABLE_HA_PROXY": "1"}, True),
    ],
)
def test_a_replica_on_a_node_started_for_the_other_ingress_refuses_to_start(
    ingress: str, environ: dict, refused: bool
) -> None:
    if not refused:
        check_ingress(ingress, environ)
        return
    with pytest.raises(ConfigError) as caught:
        check_ingress(ingress, environ)
    message = str(caught.value)
    assert message.startswith(f"serve.ingress: {ingress}, ") and "\n" not in message
    assert "RAY_SERVE_ENABLE_HA_PROXY=" + ("1" if ingress == "haproxy" else "0") in message  # how to start the nodes


def test_a_local_ray_gets_the_ingress_environment_and_free_haproxy_ports() -> None:
    env = ingress_environment("haproxy", {})
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    ports = {int(env[name]) for name in HAPROXY_PORT_ENV}
    assert len(ports) == 4 and ports.isdisjoint({8404, 9101, 8500, 9500})  # not Ray's fixed defaults
    chosen = {"RAY_SERVE_HAPROXY_STATS_PORT": "18404", "RAY_SERVE_HAPROXY_METRICS_PORT": "19101"}
    assert ingress_environment("haproxy", chosen).items() >= chosen.items()  # the user's ports are kept
    assert ingress_environment("proxy", {}) == {
        "RAY_worker_niceness": "0",  # replicas answer requests: not behind everything else as Ray's batch workers
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0",
    }
    assert ingress_environment("proxy", {"RAY_worker_niceness": "5"})["RAY_worker_niceness"] == "5"
