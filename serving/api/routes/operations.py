"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from serving.api.deps import MaybeServiceDep
from serving.api.responses import json_response
from serving.observability import render_metrics, set_model

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, Any]:  # dict[str, Any]: the OpenAPI schema of a free-form object
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="A model is loaded and the service can score",
    responses={503: {"description": "The model is still loading", "content": {"application/json": {}}}},
)
async def readyz(service: MaybeServiceDep) -> Response:
    if service is None:
        return json_response({"ready": False}, 503)
    return json_response(
        {
            "ready": True,
            "model_version": service.model.version,
            "catalogue_items": service.model.catalogue.n - 1,
            "scorer": service.model.scorer_name,  # "eager" also when serve.scorer onnx fell back (log line says why)
            "pid": service.pid,
        }
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (all workers)",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format", "content": {"text/plain": {}}}},
)
async def metrics(request: Request, service: MaybeServiceDep) -> Response:
    if service is not None:
        set_model(
            service.model.version,
            getattr(request.app.state, "reported_version", None),
            service.model.catalogue.n - 1,
        )
        request.app.state.reported_version = service.model.version
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
