"""The FastAPI application: scoring, items, users, model swap, health and metrics.

Start it with ``recsys serve --checkpoint DIR`` (uvicorn; ``--workers N`` for several
processes). Each worker builds the app with :func:`create_app`, which loads the model once, at
start-up (lifespan). The routes live in :mod:`serving.api.routes`, one router per resource.
Errors are JSON ``{"detail": {"field", "message", "ids"?}}`` with a 4xx status; request-validation
errors keep FastAPI's ``{"detail": [{"loc", "msg", ...}]}`` form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from recsys import __version__
from recsys.errors import RecsysError
from serving.api.routes import ROUTERS
from serving.model import ServingError
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


async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
    """A :class:`ServingError` as its 4xx status and ``{"detail": {"field", "message", "ids"?}}``."""
    return JSONResponse(exc.body(), status_code=exc.status)


async def recsys_error(request: Request, exc: RecsysError) -> JSONResponse:
    """Any other user-input error (:class:`RecsysError`) as a 422 naming the request."""
    return JSONResponse({"detail": {"field": "request", "message": str(exc)}}, status_code=422)


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
        exception_handlers={ServingError: serving_error, RecsysError: recsys_error},
    )
    app.state.settings = settings
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)
    for router in ROUTERS:
        app.include_router(router)
    return app
