"""The FastAPI application: scoring, items, users, model swap, health and metrics.

Start it with ``recsys serve --checkpoint DIR`` (uvicorn; ``--workers N`` for several
processes). Each worker builds the app with :func:`create_app`, which loads the model once, at
start-up (lifespan). The routes live in :mod:`serving.api.routes`, one router per resource.
Every error is JSON ``{"detail": {"field", "message", "ids"?, "errors"?}}`` with a 4xx status
(:mod:`serving.api.errors`); JSON bodies are read strictly (:mod:`serving.api.bodies`); requests whose
Host header is not trusted (``serve.allowed_hosts``) get 400. The Ray backend (:mod:`serving.ray_backend`) serves
this same app from each replica, with ``follow_seconds`` set: a replica that gets no request still follows the
store (a model swapped in elsewhere, new items) at that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from recsys import __version__
from serving.api.errors import install_error_handlers
from serving.api.routes import ROUTERS
from serving.observability import ObservabilityMiddleware, configure_logging, forget_dead_processes, set_model
from serving.service import ScoringService
from serving.settings import ServeSettings
from serving.store import StoreUnavailable

log = logging.getLogger("recsys.serving")


async def follow_store(service: ScoringService, every_s: float) -> None:
    """Catch up with the store every ``every_s`` seconds (a new model loads in the background), until cancelled.

    Requests catch up on their own; this is for a worker that gets none (a replica the router skips), so that a
    swap reaches it too. An unreachable store is skipped: the next request that needs it gets the 503.
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            await run_in_threadpool(service.sync)
        except StoreUnavailable:
            continue
        except Exception:  # never let the follower die silently: log, try again next time
            log.exception("worker %d could not catch up with the store", service.pid)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model (and the registered items) before the first request; close the store at shutdown."""
    settings: ServeSettings = app.state.settings
    torch.set_num_threads(settings.torch_threads)
    service = await run_in_threadpool(ScoringService.start, settings)
    app.state.service = service
    set_model(service.model.version, None, service.model.catalogue.n - 1)
    every_s: float | None = app.state.follow_seconds
    follower = asyncio.create_task(follow_store(service, every_s)) if every_s else None
    yield
    if follower is not None:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    service.store.close()


def create_app(
    settings: ServeSettings | None = None, follow_seconds: float | None = None, behind_ray_proxy: bool = False
) -> FastAPI:
    """The application for one worker (settings from ``recsys serve`` via the environment by default).

    ``follow_seconds``: also catch up with the store at that interval when no request comes (None: only per
    request). ``behind_ray_proxy``: the app runs in a Ray Serve replica. Ray Serve sets ``X-Request-Id`` (the id in
    the request, or a new one), and the JSON log lines go to the process's own stderr (Ray's ``worker-*.err`` file
    of the replica), not through the ``sys.stderr`` Ray Serve may put in front of it, which turns every write into
    a log record with a stack walk (~0.5 ms of CPU per request: benchmarks/RESULTS.md).
    """
    settings = settings or ServeSettings.from_env()
    configure_logging(stream=sys.__stderr__ if behind_ray_proxy else None)
    forget_dead_processes()
    app = FastAPI(
        title="recsys scoring service",
        version=__version__,
        description="Click probabilities from a MARN (or baseline) checkpoint, "
        "for catalogue and newly registered items.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.follow_seconds = follow_seconds
    install_error_handlers(app)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    app.add_middleware(
        ObservabilityMiddleware,
        max_body_bytes=settings.max_body_bytes,
        access_log=settings.access_log,
        request_id_header=not behind_ray_proxy,
    )
    for router in ROUTERS:
        app.include_router(router)
    return app
