"""Responses: JSON written directly, and the error responses each route documents in OpenAPI."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

from serving.schemas import ErrorBody

#: What each error status means, as documented on the routes that can return it.
ERROR_MEANINGS = {
    400: "The body is not UTF-8 JSON (or holds NaN/Infinity, or is nested too deeply)",
    401: "Missing or wrong API key (write and admin routes, when the service has a key)",
    404: "Unknown id",
    409: "Conflict: another reload is in progress",
    413: "Request body (or an item's image/audio) over the service's limits",
    415: "Content type not accepted by this route",
    422: "The request is well-formed but invalid: the field at fault is named",
    503: "The state store (serve.state_url) cannot be reached; try again",
}

#: The statuses every route with a JSON body can return.
BODY_ERRORS = (400, 413, 415, 422)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the service's error body."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    """``payload`` as an ``application/json`` response with status ``status``.

    ``ensure_ascii`` JSON: any Python string renders, including one that is not valid Unicode.
    """
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def page_response(name: str, entries: list[dict[str, Any]], limit: int) -> Response:
    """One page of a listing by id: ``{name: entries, "next_after": id}``, the last entry's id (the first field)
    when the page is full (there may be more), else null."""
    next_after = next(iter(entries[-1].values())) if entries and len(entries) == limit else None
    return json_response({name: entries, "next_after": next_after})
