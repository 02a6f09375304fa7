"""The FastAPI application: scoring, items, users, model swap, health and metrics.

Start it with ``recsys serve --checkpoint DIR`` (uvicorn; ``--workers N`` for several
processes). Each worker builds the app with :func:`create_app`, which loads the model once, at
start-up (lifespan). Errors are JSON ``{"detail": {"field", "message", "ids"?}}`` with a 4xx
status; request-validation errors keep FastAPI's ``{"detail": [{"loc", "msg", ...}]}`` form.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from contextlib import asynccontextmanager

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from recsys import __version__
from recsys.errors import RecsysError
from serving.content import ItemContent
from serving.model import ServingError
from serving.observability import SWAPS, ObservabilityMiddleware, configure_logging, render_metrics, set_model
from serving.schemas import (
    EventsRequest,
    ItemRequest,
    ItemResponse,
    ReloadRequest,
    ReloadResponse,
    ScoreRequest,
    ScoreResponse,
    UserRequest,
    UserResponse,
)
from serving.service import ScoringService
from serving.settings import ServeSettings

log = logging.getLogger("recsys.serving")

_ITEM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ItemRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["item_id"],
                    "properties": {
                        "item_id": {"type": "integer"},
                        "title": {"type": "string"},
                        "attributes": {"type": "string", "description": "JSON object"},
                        "vectors": {"type": "string", "description": "JSON object: modality -> list of numbers"},
                        "image": {"type": "string", "format": "binary"},
                        "audio": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


def _json(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The application for one worker (settings from ``recsys serve`` via the environment by default)."""
    settings = settings or ServeSettings.from_env()
    configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.torch_threads)
        service = await run_in_threadpool(ScoringService.start, settings)
        app.state.service = service
        set_model(service.model.version, None, service.model.catalogue.n - 1)
        yield
        service.store.close()

    app = FastAPI(
        title="recsys scoring service",
        version=__version__,
        description="Click probabilities from a MARN (or baseline) checkpoint, "
        "for catalogue and newly registered items.",
        lifespan=lifespan,
    )
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)

    async def service_of(request: Request) -> ScoringService:  # async: no threadpool hop per request
        return request.app.state.service

    async def require_admin(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ServingError(401, "X-API-Key", "missing or wrong API key for an admin route")

    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RecsysError)
    async def _recsys_error(request: Request, exc: RecsysError) -> JSONResponse:
        return JSONResponse({"detail": {"field": "request", "message": str(exc)}}, status_code=422)

    # ------------------------------------------------------------------ operations
    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz", tags=["operations"], summary="A model is loaded and the service can score")
    async def readyz(request: Request) -> Response:
        service = getattr(request.app.state, "service", None)
        if service is None:
            return _json({"ready": False}, 503)
        return _json(
            {
                "ready": True,
                "model_version": service.model.version,
                "catalogue_items": service.model.catalogue.n - 1,
                "pid": service.pid,
            }
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (all workers)")
    async def metrics(request: Request) -> Response:
        service = getattr(request.app.state, "service", None)
        if service is not None:
            set_model(
                service.model.version,
                getattr(request.app.state, "reported_version", None),
                service.model.catalogue.n - 1,
            )
            request.app.state.reported_version = service.model.version
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    # ------------------------------------------------------------------ scoring
    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        tags=["scoring"],
        summary="Click probabilities of candidates for a user",
    )
    async def score(body: ScoreRequest, service: ScoringService = Depends(service_of)) -> Response:
        result = service.score(body.user_id, body.candidates, body.history, body.context, body.top_k)
        scores = [{"item_id": i, "score": float(p)} for i, p in zip(result.item_ids, result.scores.tolist())]
        return _json(
            {
                "model_version": result.version,
                "user_id": body.user_id,
                "history_source": result.history_source,
                "scores": scores,
            }
        )

    # ------------------------------------------------------------------ items
    @app.post(
        "/v1/items",
        response_model=ItemResponse,
        tags=["items"],
        openapi_extra=_ITEM_BODY,
        summary="Register or update an item from its content; scorable when this returns",
    )
    async def put_item(request: Request, service: ScoringService = Depends(service_of)) -> Response:
        body, files = await _item_request(request, settings.max_body_bytes)
        image = files.get("image") or _b64(body.image_base64, "image_base64")
        audio = files.get("audio") or _b64(body.audio_base64, "audio_base64")
        content = ItemContent(body.title, image, audio, body.vectors)
        info = await run_in_threadpool(service.register_item, body.item_id, content, dict(body.attributes))
        return _json(
            {
                "item_id": info.item_id,
                "source": info.source,
                "modalities": info.modalities,
                "cold": info.cold,
                "model_version": service.model.version,
            },
            201,
        )

    @app.get("/v1/items/{item_id}", response_model=ItemResponse, tags=["items"], summary="A scorable item")
    async def get_item(item_id: int, service: ScoringService = Depends(service_of)) -> Response:
        info, extra = service.item(item_id)
        return _json(
            {
                "item_id": info.item_id,
                "source": info.source,
                "modalities": info.modalities,
                "cold": info.cold,
                "model_version": service.model.version,
                **extra,
            }
        )

    # ------------------------------------------------------------------ users
    @app.get("/v1/users/{user_id}", response_model=UserResponse, tags=["users"], summary="A user's stored state")
    async def get_user(user_id: int, service: ScoringService = Depends(service_of)) -> dict:
        state = service.user(user_id)
        return {"user_id": state.user_id, "history": state.history, "attributes": state.attributes}

    @app.put(
        "/v1/users/{user_id}",
        response_model=UserResponse,
        tags=["users"],
        summary="Replace a user's history and attributes",
    )
    async def put_user(user_id: int, body: UserRequest, service: ScoringService = Depends(service_of)) -> dict:
        state = service.put_user(user_id, body.history, dict(body.attributes))
        return {"user_id": state.user_id, "history": state.history, "attributes": state.attributes}

    @app.post(
        "/v1/users/{user_id}/events",
        response_model=UserResponse,
        tags=["users"],
        summary="Append clicked items to a user's history",
    )
    async def add_events(user_id: int, body: EventsRequest, service: ScoringService = Depends(service_of)) -> dict:
        state = service.add_events(user_id, body.clicked)
        return {"user_id": state.user_id, "history": state.history, "attributes": state.attributes}

    # ------------------------------------------------------------------ admin
    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        tags=["admin"],
        dependencies=[Depends(require_admin)],
        summary="Load, validate and atomically swap in a checkpoint; a bad one is refused, the old keeps serving",
    )
    async def reload(body: ReloadRequest, service: ScoringService = Depends(service_of)) -> dict:
        try:
            result = await run_in_threadpool(service.reload, body.checkpoint)
        except ServingError as exc:
            SWAPS.labels(outcome="refused").inc()
            raise ServingError(
                exc.status, exc.field, f"refused, still serving {service.model.version}: {exc.message}", exc.ids
            ) from None
        except RecsysError as exc:  # CheckpointError: missing, corrupt, incompatible files
            SWAPS.labels(outcome="refused").inc()
            raise ServingError(422, "checkpoint", f"refused, still serving {service.model.version}: {exc}") from None
        SWAPS.labels(outcome="swapped").inc()
        return {
            "status": "swapped",
            "model_version": result.version,
            "previous_version": result.previous,
            "checkpoint": result.path,
            "seconds": round(result.seconds, 3),
        }

    @app.get("/v1/admin/model", tags=["admin"], dependencies=[Depends(require_admin)], summary="The served model")
    async def model_info(service: ScoringService = Depends(service_of)) -> dict:
        model = service.model
        return {
            "model_version": model.version,
            "checkpoint": service.model_path,
            "model": model.checkpoint.config.model.name,
            "catalogue_items": model.catalogue.n - 1,
            "registered_items": len(model.registered),
            "pid": service.pid,
        }

    return app


def _b64(value: str | None, field: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ServingError(422, field, "not valid base64") from None


async def _item_request(request: Request, max_bytes: int) -> tuple[ItemRequest, dict[str, bytes]]:
    """The item body from JSON, or from multipart/form-data (then also the media file parts' bytes)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_part_size=max_bytes)
            files, fields = {}, {}
            for key, value in form.multi_items():
                if hasattr(value, "read"):
                    files[key] = await value.read()
                else:
                    fields[key] = value
            unknown = sorted(set(files) - {"image", "audio"})
            if unknown:
                raise ServingError(422, unknown[0], "unknown file part; expected image and/or audio")
            for key in ("attributes", "vectors"):
                if key in fields:
                    try:
                        fields[key] = json.loads(fields[key])
                    except ValueError as exc:
                        raise ServingError(422, key, f"not valid JSON ({exc})") from None
            return ItemRequest.model_validate(fields), files
        return ItemRequest.model_validate_json(await request.body()), {}
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
