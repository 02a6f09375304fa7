"""Model administration (API key required when one is configured): hot swap and the served model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from recsys.errors import RecsysError
from serving.api.bodies import StrictBodyRoute
from serving.api.deps import ServiceDep, require_key
from serving.api.responses import BODY_ERRORS, error_responses
from serving.model import ServingError
from serving.observability import SWAPS
from serving.schemas import ReloadRequest, ReloadResponse
from serving.store import StoreUnavailable

router = APIRouter(tags=["admin"], dependencies=[Depends(require_key)], route_class=StrictBodyRoute)


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    responses=error_responses(401, 409, *BODY_ERRORS, 503),
    summary="Load, validate and atomically swap in a checkpoint; a bad one is refused, the old keeps serving",
)
async def reload(body: ReloadRequest, service: ServiceDep) -> dict[str, Any]:
    try:
        result = await run_in_threadpool(service.reload, body.checkpoint)
    except StoreUnavailable:  # 503: the checkpoint was not refused, the store could not record it
        SWAPS.labels(outcome="refused").inc()
        raise
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


@router.get("/v1/admin/model", responses=error_responses(401), summary="The served model")
async def model_info(service: ServiceDep) -> dict[str, Any]:
    model = service.model
    return {
        "model_version": model.version,
        "checkpoint": service.model_path,
        "model": model.checkpoint.config.model.name,
        "scorer": model.scorer_name,
        "catalogue_items": model.catalogue.n - 1,
        "registered_items": len(model.registered),
        "pid": service.pid,
    }
