"""Click probabilities of candidate items for a user."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from serving.api.bodies import StrictBodyRoute
from serving.api.deps import ServiceDep
from serving.api.responses import BODY_ERRORS, error_responses
from serving.schemas import ScoreRequest, ScoreResponse
from serving.service import ScoringService

router = APIRouter(tags=["scoring"], route_class=StrictBodyRoute)


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    responses=error_responses(*BODY_ERRORS, 503),
    summary="Click probabilities of candidates for a user",
)
async def score(body: ScoreRequest, service: ServiceDep) -> Response:
    result = service.score(body.user_id, body.candidates, body.history, body.context, body.top_k)
    # orjson: the same JSON as json.dumps (shortest round-trip floats), 4-7x faster for 100-1000 scores.
    scores = [{"item_id": i, "score": p} for i, p in zip(result.item_ids, result.scores.tolist())]
    if body.explain:
        explain(service, scores)
    payload = {
        "model_version": result.version,
        "user_id": body.user_id,
        "history_source": result.history_source,
        "scores": scores,
    }
    return Response(orjson.dumps(payload), media_type="application/json")


def explain(service: ScoringService, scores: list[dict[str, Any]]) -> None:
    """Add each scored item's ``cold`` flag and ``modality_shares`` (null for a model without modal attention)."""
    model = service.model
    shares = model.modality_shares([s["item_id"] for s in scores])
    for k, entry in enumerate(scores):
        info = model.item_info(entry["item_id"])
        entry["cold"] = bool(info and info.cold)
        entry["modality_shares"] = shares[k] if shares is not None else None
