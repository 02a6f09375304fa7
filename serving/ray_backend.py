"""`recsys serve --backend ray`: the service's own app (:func:`serving.app.create_app`) as a Ray Serve deployment.

- **One app.** Each replica builds the app of :mod:`serving.app` once (``__serve_build_asgi_app__``, with the
  settings `recsys serve` resolved) and loads the model in its lifespan, as a local worker does: every route,
  error, header and metric is the local backend's. Ray Serve's ingress listens on ``serve.host:serve.port``
  (on every node with a replica, or on the head only: ``serve.proxy_location``) and spreads requests over the
  replicas.
- **Ingress.** ``serve.ingress: haproxy`` (the default): Ray Serve's HAProxy ingress, HAProxy on
  ``serve.host:serve.port`` of each proxy node forwarding to every replica's own HTTP server (Ray's direct
  ingress, with its throughput-optimised settings); ``proxy``: Ray Serve's Python HTTP proxy actor, which passes
  each request to a replica as Ray calls (several times the model's CPU per request: benchmarks/RESULTS.md). Ray
  Serve reads the choice from its processes' environment (:data:`INGRESS_ENV`): a local Ray is started with it; a
  cluster's nodes must have been started with it, and a replica on a node started otherwise refuses to start.
- **Replicas.** ``serve.min_replicas`` to ``serve.max_replicas`` (equal: that many; otherwise Serve's
  autoscaler keeps about ``serve.target_ongoing_requests`` requests in flight per replica), each reserving
  ``serve.replica_cpus`` CPUs.
- **State.** The store of ``serve.state_url``. Redis is every node's. A SQLite file is one node's: with SQLite
  the replicas are placed on the node that runs `recsys serve` (where :func:`serving.server.prepare_state` made
  the file), and more than one replica on a cluster of several nodes is refused (:func:`check_placement`). On
  one node SQLite is as safe as for the local backend's workers (one file, WAL, a writer at a time).
- **Model swap.** ``POST /v1/admin/reload`` on any replica verifies the checkpoint and records it in the store
  with a new generation before that replica serves it; every other replica catches up before its next request
  and, idle, within :data:`FOLLOW_SECONDS` (:func:`serving.app.follow_store`), loads it in the background (old
  model serving meanwhile) and swaps; a replica never follows an older generation.
- **Metrics.** The replicas of a node write Prometheus multiprocess files into one directory of that node
  (``<serve.state_dir>/prometheus``), so ``GET /metrics`` reports every replica of the node whose replica
  answers; Ray's own per-node metrics (``ray_serve_*``) cover the whole cluster (README).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from ray import serve
from starlette.types import ASGIApp

from recsys.errors import ConfigError
from serving.redis_store import PASSWORD_ENV
from serving.settings import ServeSettings

log = logging.getLogger("recsys.serving")

#: The Serve application and its one deployment.
APP_NAME = "recsys"
DEPLOYMENT_NAME = "recsys"
#: An idle replica catches up with the store (a swapped model, new items) this often, in seconds.
FOLLOW_SECONDS = 1.0
#: Requests a replica takes at once at least (Serve queues the rest at the proxy).
MIN_ONGOING_REQUESTS = 8
#: Seconds the replicas of a local Ray get to finish their requests when the command stops.
SHUTDOWN_S = 10.0

PROXY_LOCATIONS = {"every_node": "EveryNode", "head_only": "HeadOnly"}

#: The environment every Ray process must start with for each ``serve.ingress`` (Ray Serve reads it at import).
INGRESS_ENV: dict[str, dict[str, str]] = {
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
}


#: Fixed ports of the HAProxy ingress (Ray's defaults): HAProxy's stats page (8404) and Prometheus exporter (9101),
#: on every interface, and the fallback proxy actor HAProxy keeps as a backup server (8500, 9500 for gRPC).
HAPROXY_PORT_ENV = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)


def ingress_environment(ingress: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a local Ray starts with for ``ingress``: :data:`INGRESS_ENV`, its workers at niceness 0,
    and for HAProxy free ports for :data:`HAPROXY_PORT_ENV` where ``environ`` names none (Ray's fixed defaults
    collide with a second service on the host)."""
    from serving.net import free_port

    # Ray starts its workers at niceness 15 (for batch work, behind the raylet); replicas answer requests, so
    # they run at 0 like the local backend's workers.
    env = {"RAY_worker_niceness": environ.get("RAY_worker_niceness") or "0", **INGRESS_ENV[ingress]}
    if ingress == "haproxy":
        env.update({name: environ.get(name) or str(free_port("0.0.0.0")) for name in HAPROXY_PORT_ENV})
    return env


def check_ingress(ingress: str, environ: Mapping[str, str]) -> None:
    """Refuse (ConfigError naming ``serve.ingress``) a process whose Ray Serve runs another ingress than ``ingress``."""
    haproxy = environ.get("RAY_SERVE_ENABLE_HA_PROXY", "0") == "1"
    if haproxy != (ingress == "haproxy"):
        env = " ".join(f"{k}={v}" for k, v in INGRESS_ENV[ingress].items())
        raise ConfigError(
            f"serve.ingress: {ingress}, but this Ray node runs Ray Serve {'with' if haproxy else 'without'} HAProxy: "
            f"start the cluster's nodes with {env} (`{env} ray start ...`), or set serve.ingress to "
            f"{'haproxy' if haproxy else 'proxy'}"
        )


@serve.ingress()
class RecsysReplica:
    """One replica: the app of :mod:`serving.app`, built after this constructor with the resolved settings."""

    def __init__(self, settings_json: str) -> None:
        self._settings = ServeSettings.model_validate_json(settings_json)
        check_ingress(self._settings.ingress, os.environ)  # as the node's Ray Serve was started
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:  # on another node than `recsys serve`'s, nobody made it yet
            Path(metrics_dir).mkdir(parents=True, exist_ok=True)

    def __serve_build_asgi_app__(self) -> ASGIApp:
        """The service's app (imported here: its metrics are created after the metrics directory exists)."""
        from serving.app import create_app

        return create_app(self._settings, follow_seconds=FOLLOW_SECONDS, behind_ray_proxy=True)


def uses_redis(settings: ServeSettings) -> bool:
    """Whether the state is in a store every node reaches (Redis) rather than one node's SQLite file."""
    return settings.state_url is not None and not settings.state_url.startswith("sqlite:")


def check_placement(settings: ServeSettings, nodes: int) -> None:
    """Refuse (ConfigError naming the field) replicas that could land on nodes without the state
    (``serve.state_url``) or that the nodes cannot hold (``serve.max_replicas_per_node``)."""
    per_node = settings.max_replicas_per_node
    if per_node is not None and settings.min_replicas > per_node * nodes:
        raise ConfigError(
            f"serve.max_replicas_per_node: {settings.min_replicas} replicas (min_replicas) at most {per_node} per "
            f"node do not fit the Ray cluster's {nodes} node(s)"
        )
    if nodes > 1 and settings.max_replicas > 1 and not uses_redis(settings):
        raise ConfigError(
            f"serve.state_url: {settings.max_replicas} replicas on a Ray cluster of {nodes} nodes need state every "
            f"node reaches; a SQLite file ({settings.store_path}) is one node's: set serve.state_url "
            "(--state-url) to redis://HOST:PORT/DB"
        )


def deployment_options(settings: ServeSettings, metrics_dir: Path, pin: str | None) -> dict[str, Any]:
    """Serve deployment options from the ``serve`` section; ``pin``: a node resource every replica needs."""
    env_vars = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}  # before anything imports prometheus_client
    if os.environ.get(PASSWORD_ENV):  # the replicas' store (on every node) with the driver's password
        env_vars[PASSWORD_ENV] = os.environ[PASSWORD_ENV]
    actor: dict[str, Any] = {"num_cpus": settings.replica_cpus, "runtime_env": {"env_vars": env_vars}}
    if pin is not None:
        actor["resources"] = {pin: 0.001}
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": actor,
        "max_ongoing_requests": max(MIN_ONGOING_REQUESTS, math.ceil(2 * settings.target_ongoing_requests)),
        # The app writes its own access line per request (serving.observability); Serve's would be a second one.
        "logging_config": {"enable_access_log": False},
    }
    if settings.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = settings.max_replicas_per_node
    if settings.min_replicas == settings.max_replicas:
        options["num_replicas"] = settings.min_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing_requests,
        }
    return options


def _init_ray(settings: ServeSettings, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray that fits the replicas; True when started here."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    # address="local": always a new local instance, never a cluster someone else started here. Logical CPUs
    # enough for every replica, or Serve would wait for a CPU that never comes. Its processes inherit the ingress.
    os.environ.update(ingress_environment(settings.ingress, os.environ))
    cpus = max(os.cpu_count() or 1, math.ceil(settings.max_replicas * settings.replica_cpus))
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        object_store_memory=256 * 1024**2,
        log_to_driver=False,
    )
    return True


def run_ray(settings: ServeSettings, address: str | None = None) -> int:
    """Deploy the service on Ray Serve and keep it running until SIGINT/SIGTERM; returns the exit code.

    Bad settings for the cluster (SQLite for replicas on several nodes, a port in use here) fail before any
    replica starts, with one line naming the field.
    """
    import ray

    from serving.net import check_port

    if settings.workers > 1:
        log.info("serve.workers (%d) is the local backend's: the ray backend runs replicas", settings.workers)
    if not address:
        check_port(settings.host, settings.port)  # the proxy of a local Ray listens here
    started = _init_ray(settings, address)
    node_id = ray.get_runtime_context().get_node_id()
    stop = StopSignals()  # after ray.init, whose handlers would abort the driver on SIGTERM
    deployed = False
    try:
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        check_placement(settings, nodes)
        pin = None if uses_redis(settings) else f"node:{ray.util.get_node_ip_address()}"
        metrics_dir = settings.state_path / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        serve.start(
            proxy_location=PROXY_LOCATIONS[settings.proxy_location],
            http_options={"host": settings.host, "port": settings.port},
        )
        deployment = serve.deployment(**deployment_options(settings, metrics_dir, pin))(RecsysReplica)
        replicas = settings.min_replicas if settings.min_replicas == settings.max_replicas else None
        log.info(
            "deploying %s on Ray Serve (%d node(s), %s replica(s))",
            settings.checkpoint,
            nodes,
            replicas or f"{settings.min_replicas}-{settings.max_replicas}",
        )
        deployed = True
        try:
            serve.run(deployment.bind(settings.model_dump_json()), name=APP_NAME, route_prefix="/")
        except RuntimeError as exc:
            raise ConfigError(
                f"serve.backend ray: the deployment failed to start: {str(exc).splitlines()[0]}"
            ) from None
        if not stop.event.is_set():
            log.info(
                "serving on http://%s:%d (Ray Serve app %r); docs at /docs", settings.host, settings.port, APP_NAME
            )
        while not stop.event.wait(1.0):
            pass
        return 0
    finally:
        stop.restore()
        if started:  # the whole local Ray goes: Serve first (replicas finish their requests), then Ray
            _bounded(serve.shutdown, SHUTDOWN_S)
            ray.shutdown()
            stop_haproxy(node_id)
        elif deployed:
            serve.delete(APP_NAME)  # a cluster's Serve stays for its other applications


def stop_haproxy(node_id: str, wait_s: float = 5.0) -> list[int]:
    """Stop the HAProxy processes of the local Ray node ``node_id`` that outlived it; returns their pids.

    Ray Serve's HAProxy manager (an actor) runs HAProxy as a process of its own session. When the manager is
    killed with the rest of the Ray (Ctrl-C reaches the whole process group; Serve's shutdown did not finish),
    HAProxy stays, holding ``serve.port``, and the next `recsys serve` cannot listen there. Its config file lies
    under a directory named by the node id (``RAY_SERVE_HAPROXY_CONFIG_FILE_LOC``'s directory / node id).
    """
    import time

    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if argv[0].endswith(b"haproxy") and any(f"/{node_id}/".encode() in arg for arg in argv[1:]):
            pids.append(int(cmdline.parent.name))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        log.info("stopped %d HAProxy process(es) the local Ray left behind", len(pids))
    return pids


class StopSignals:
    """From construction to :meth:`restore`, SIGINT and SIGTERM set :attr:`event` (and nothing else)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping the Ray Serve app %r", signal.Signals(signum).name, APP_NAME)
        self.event.set()

    def restore(self) -> None:
        """Put the previous handlers back."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _bounded(call: Callable[[], object], seconds: float) -> None:
    """Run ``call``, giving up on it after ``seconds`` (Serve cannot shut down once its local Ray got the signal
    too, as Ctrl-C and a process-group kill do)."""
    worker = threading.Thread(target=call, daemon=True, name="serve-shutdown")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        log.warning("Ray Serve did not shut down within %.0f s: stopping Ray", seconds)
