"""One error renderer for every refusal: ``{"detail": {"field", "message", "ids"?, "errors"?}}`` with a 4xx status.

Every error the service returns has this shape (:class:`serving.schemas.ErrorBody`): the service's own
refusals (:class:`ServingError`), request-validation errors (each pydantic error becomes one entry of
``errors``; the first is also ``field``/``message``), HTTP errors of the framework (404 unknown route,
405 method), user-input errors of the library (:class:`RecsysError`, 422) and a state store that cannot be
reached (:class:`StoreUnavailable`, 503 naming ``serve.state_url``'s store; the client may try again).

The client's input is never echoed back: a body can hold anything (NaN, lone surrogates, bytes that
are not UTF-8, megabytes of data), and an error renderer that copies it can fail on it, turning a 4xx
into a 500. Bodies are written with ``ensure_ascii`` JSON, which can render any Python string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from recsys.errors import RecsysError
from serving.model import ServingError
from serving.store import StoreUnavailable


def error_response(
    status: int, field: str, message: str, ids: list | None = None, errors: list | None = None
) -> Response:
    """The service's error body with status ``status``."""
    detail: dict[str, Any] = {"field": field, "message": message}
    if ids is not None:
        detail["ids"] = ids
    if errors is not None:
        detail["errors"] = errors
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else {"Retry-After": "1"} if status == 503 else None
    return Response(json.dumps({"detail": detail}), status_code=status, media_type="application/json", headers=headers)


def field_name(loc: Sequence[Any]) -> str:
    """A pydantic error location as the dotted request field (``("body", "candidates", 2)`` -> ``candidates.2``).

    The source (body, path, query, header) is kept only when nothing else names the field.
    """
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """pydantic/FastAPI errors as ``{"field", "message", "type"}`` entries (no input echoed)."""
    out = []
    for error in errors:
        message = str(error.get("msg", "invalid value"))
        ctx = error.get("ctx") or {}
        if error.get("type") == "json_invalid" and "error" in ctx:
            message = f"invalid JSON: {ctx['error']}"
        out.append({"field": field_name(error.get("loc", ())), "message": message, "type": str(error.get("type", ""))})
    return out


async def serving_error(request: Request, exc: Exception) -> Response:
    """A :class:`ServingError`: its status, field, message and ids."""
    assert isinstance(exc, ServingError)
    return error_response(exc.status, exc.field, exc.message, exc.ids)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """The state store (``serve.state_url``) cannot be reached: 503, nothing was read or written half-way."""
    assert isinstance(exc, StoreUnavailable)
    return error_response(503, "state_url", f"{exc}; try again")


async def recsys_error(request: Request, exc: Exception) -> Response:
    """Any other user-input error of the library as a 422 naming the request."""
    return error_response(422, "request", str(exc))


async def request_validation_error(request: Request, exc: Exception) -> Response:
    """Request validation: 422, the first problem as ``field``/``message``, all of them in ``errors``."""
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors()) or [{"field": "body", "message": "invalid request", "type": ""}]
    first = errors[0]
    return error_response(422, first["field"], first["message"], errors=errors)


async def http_error(request: Request, exc: Exception) -> Response:
    """Framework HTTP errors (unknown route, method not allowed, ...) in the same shape."""
    assert isinstance(exc, HTTPException)
    field = {404: "path", 405: "method"}.get(exc.status_code, "request")
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    response = error_response(exc.status_code, field, message)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Route every refusal of ``app`` through the one renderer."""
    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(StoreUnavailable, store_unavailable)  # before RecsysError's handler, of which it is one
    app.add_exception_handler(RecsysError, recsys_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.add_exception_handler(HTTPException, http_error)
