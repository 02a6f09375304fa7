"""The FastAPI application: scoring, items, users, model swap, health and metrics.

Start it with ``recsys serve --checkpoint DIR`` (uvicorn; ``--workers N`` for several
processes). Each worker builds the app with :func:`create_app`, which loads the model once, at
start-up (lifespan). The routes live in :mod:`serving.api.routes`, one router per resource.
Every error is JSON ``{"detail": {"field", "message", "ids"?, "errors"?}}`` with a 4xx status
(:mod:`serving.api.errors`); JSON bodies are read strictly (:mod:`serving.api.bodies`); requests whose
Host header is not trusted (``serve.allowed_hosts``) get 400.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from recsys import __version__
from serving.api.errors import install_error_handlers
from serving.api.routes import ROUTERS
from serving.observability import ObservabilityMiddleware, configure_logging, set_model
from serving.service import ScoringService
from serving.settings import ServeSettings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model (and the registered items) before the first request; close the store at shutdown."""
    settings: ServeSettings = app.state.settings
    torch.set_num_threads(settings.torch_threads)
    service = await run_in_threadpool(ScoringService.start, settings)
    app.state.service = service
    set_model(service.model.version, None, service.model.catalogue.n - 1)
    yield
    service.store.close()


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The application for one worker (settings from ``recsys serve`` via the environment by default)."""
    settings = settings or ServeSettings.from_env()
    configure_logging()
    app = FastAPI(
        title="recsys scoring service",
        version=__version__,
        description="Click probabilities from a MARN (or baseline) checkpoint, "
        "for catalogue and newly registered items.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)
    for router in ROUTERS:
        app.include_router(router)
    return app
