"""`recsys serve`: check the checkpoint, prepare the shared state, run uvicorn with N workers (or, with
``serve.backend: ray``, the same app on Ray Serve: :mod:`serving.ray_backend`)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.checkpoint import Checkpoint, load_checkpoint
from recsys.errors import ConfigError
from serving.compiled import read_artefact
from serving.model import model_version
from serving.net import check_port
from serving.settings import ServeSettings
from serving.state import open_store
from serving.store import StateStore, StoreUnavailable
from serving.users import initial_user_states

log = logging.getLogger("recsys.serving")


def prepare_state(
    checkpoint_dir: str | Path, overrides: Mapping[str, object] | None = None, data_dir: str | Path | None = None
) -> ServeSettings:
    """Validate the checkpoint and the settings, create the state store, make the checkpoint the active model,
    seed user state from ``data_dir`` (default: the checkpoint config's ``data.path``).

    ``overrides``: ServeConfig field names -> values that replace the checkpoint's ``serve`` section
    (see :meth:`ServeSettings.resolve`). Everything that can fail on bad input fails here, before any
    server process starts.
    """
    checkpoint_dir = Path(checkpoint_dir).resolve()
    checkpoint = load_checkpoint(checkpoint_dir)  # CheckpointError names the file and the reason
    settings = ServeSettings.resolve(checkpoint_dir, checkpoint.config.serve, overrides or {})
    if settings.scorer == "onnx":
        read_artefact(checkpoint)  # a corrupt or stale scorer.onnx: ScorerError naming it, before any worker starts
    state_dir = settings.state_path
    try:
        state_dir.mkdir(parents=True, exist_ok=True)  # the workers' metrics, and the SQLite store by default
        store = open_store(settings, create=True)
    except OSError as exc:
        where = "serve.state_url" if settings.state_url else "serve.state_dir"
        raise ConfigError(
            f"{where}: cannot create the serving state in {settings.store_path}: {exc.strerror or exc}"
        ) from None
    except StoreUnavailable as exc:
        raise ConfigError(f"serve.state_url: cannot reach the state store {exc.url}: {exc.reason}") from None
    try:
        _prepare_store(store, settings, checkpoint, checkpoint_dir, data_dir)
    except StoreUnavailable as exc:
        raise ConfigError(f"serve.state_url: the state store {exc.url} failed: {exc.reason}") from None
    finally:
        store.close()
    return settings


def _prepare_store(
    store: StateStore,
    settings: ServeSettings,
    checkpoint: Checkpoint,
    checkpoint_dir: Path,
    data_dir: str | Path | None,
) -> None:
    """Make the checkpoint the active model (unless it already is: a host joining a deployment that shares the
    store does not make the others reload it) and seed the user state from the dataset."""
    version = model_version(checkpoint)
    active = store.versions()
    if (active.model_path, active.model_version) != (str(checkpoint_dir), version):
        store.set_active_model(str(checkpoint_dir), version)
    data = Path(data_dir or checkpoint.config.data.path)
    if (data / "items.parquet").is_file():
        settings.data_dir = data.resolve()  # the catalogue's titles and media (GET /v1/items/{id}/media/{kind})
    if (data / "interactions.parquet").is_file():
        added = store.seed_users(initial_user_states(data, checkpoint.feature_map))
        log.info("user state: %d users (%d new from %s)", store.count_users(), added, data)
    elif data_dir:
        raise ConfigError(f"--data: {data} has no interactions.parquet")
    else:
        log.warning("no dataset at %s: users start without stored history (pass --data DIR)", data)


def run_server(settings: ServeSettings) -> int:
    """Run the service (blocking) with ``settings.workers`` processes, each building the app once.

    Several workers: each listens on its own SO_REUSEPORT socket (:mod:`serving.workers`), so the
    kernel spreads connections across them. Returns the exit code.
    """
    import uvicorn

    from serving.workers import Supervisor, reuseport_supported

    own_sockets = settings.workers > 1 and reuseport_supported()
    host, port = settings.host, settings.port
    check_port(host, port)  # a port in use fails here, in one line, before any worker starts
    metrics_dir = settings.state_path / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # set before any worker imports prometheus_client
    uvicorn_kwargs: dict[str, Any] = {
        "app": "serving.app:create_app",
        "factory": True,
        "http": "serving.protocol:NoDelayHTTPProtocol",
        "loop": "auto",
        "access_log": False,
        "log_level": "warning",
        "timeout_graceful_shutdown": 10,
    }
    settings.to_env()
    log.info(
        "serving %s on http://%s:%d with %d worker(s); docs at /docs",
        settings.checkpoint,
        host,
        port,
        settings.workers,
    )
    if own_sockets:
        return Supervisor(settings.workers, host, port, {**uvicorn_kwargs, "host": host, "port": port}).run()
    uvicorn.run(**uvicorn_kwargs, host=host, port=port, workers=settings.workers)
    return 0


def serve(
    checkpoint_dir: str | Path,
    overrides: Mapping[str, object] | None = None,
    data_dir: str | Path | None = None,
    address: str | None = None,
) -> int:
    """The `recsys serve` command (arguments as :func:`prepare_state`'s; ``address``: the Ray cluster of the
    ray backend, None for a local Ray); its exit code."""
    settings = prepare_state(checkpoint_dir, overrides, data_dir)
    if settings.backend == "ray":
        from serving.ray_backend import run_ray

        return run_ray(settings, address)
    if address:
        raise ConfigError("--address: a Ray cluster is for --backend ray (serve.backend); the local backend runs here")
    return run_server(settings)
