"""`recsys serve`: check the checkpoint, prepare the shared state, run uvicorn with N workers."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from recsys.checkpoint import load_checkpoint
from recsys.errors import ConfigError
from serving.model import model_version
from serving.settings import ServeSettings
from serving.store import Store
from serving.users import initial_user_states

log = logging.getLogger("recsys.serving")


@dataclass(frozen=True)
class ServeOptions:
    """Command-line overrides of the checkpoint's ``serve`` config section (None: keep the config's)."""

    host: str | None = None
    port: int | None = None
    workers: int | None = None
    state_dir: str | None = None
    data_dir: str | None = None
    api_key: str | None = None
    max_candidates: int | None = None
    max_body_mb: float | None = None


def prepare_state(checkpoint_dir: str | Path, options: ServeOptions) -> ServeSettings:
    """Validate the checkpoint, create the state store, make it the active model, seed user state.

    Everything that can fail on bad input fails here, before any server process starts.
    """
    checkpoint_dir = Path(checkpoint_dir).resolve()
    checkpoint = load_checkpoint(checkpoint_dir)  # CheckpointError names the file and the reason
    serve = checkpoint.config.serve
    workers = options.workers if options.workers is not None else serve.workers
    if workers < 1:
        raise ConfigError(f"serve.workers: must be >= 1, got {workers}")
    state_dir = Path(options.state_dir or serve.state_dir).resolve()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        store = Store.create(state_dir / "serving.db")
    except OSError as exc:
        raise ConfigError(
            f"serve.state_dir: cannot create the serving state in {state_dir}: {exc.strerror or exc}"
        ) from None
    store.set_active_model(str(checkpoint_dir), model_version(checkpoint))
    data_dir = Path(options.data_dir or checkpoint.config.data.path)
    if (data_dir / "interactions.parquet").is_file():
        added = store.seed_users(initial_user_states(data_dir, checkpoint.feature_map))
        log.info("user state: %d users (%d new from %s)", store.count_users(), added, data_dir)
    elif options.data_dir:
        raise ConfigError(f"--data: {data_dir} has no interactions.parquet")
    else:
        log.warning("no dataset at %s: users start without stored history (pass --data DIR)", data_dir)
    store.close()
    return ServeSettings(
        checkpoint=checkpoint_dir,
        state_dir=state_dir,
        host=options.host or serve.host,
        port=options.port if options.port is not None else serve.port,
        workers=workers,
        max_candidates=options.max_candidates or serve.max_candidates,
        max_body_bytes=int((options.max_body_mb or serve.max_body_mb) * 1024 * 1024),
        api_key=options.api_key or serve.api_key,
        torch_threads=serve.torch_threads,
    )


def _check_port(host: str, port: int) -> int:
    """The port ``host:port`` can be bound on (``port`` 0: a free one the kernel picks), checked now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"serve.port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return sock.getsockname()[1]


def run_server(settings: ServeSettings) -> int:
    """Run the service (blocking) with ``settings.workers`` processes, each building the app once.

    Several workers: each listens on its own SO_REUSEPORT socket (:mod:`serving.workers`), so the
    kernel spreads connections across them. Returns the exit code.
    """
    import uvicorn

    from serving.workers import Supervisor, reuseport_supported

    own_sockets = settings.workers > 1 and reuseport_supported()
    port = settings.port
    if port or own_sockets:  # port 0 with own sockets: one free port, which every worker then binds
        port = _check_port(settings.host, port)
        settings = settings.model_copy(update={"port": port})
    metrics_dir = settings.state_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # set before any worker imports prometheus_client
    uvicorn_kwargs = dict(
        app="serving.app:create_app",
        factory=True,
        http="serving.protocol:NoDelayHTTPProtocol",
        loop="auto",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    settings.to_env()
    log.info(
        "serving %s on http://%s:%d with %d worker(s); docs at /docs",
        settings.checkpoint,
        settings.host,
        port,
        settings.workers,
    )
    if own_sockets:
        return Supervisor(
            settings.workers, settings.host, port, {**uvicorn_kwargs, "host": settings.host, "port": port}
        ).run()
    uvicorn.run(**uvicorn_kwargs, host=settings.host, port=port, workers=settings.workers)
    return 0


def serve(checkpoint_dir: str | Path, options: ServeOptions) -> int:
    """The `recsys serve` command; its exit code."""
    return run_server(prepare_state(checkpoint_dir, options))
