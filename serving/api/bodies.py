"""Request bodies read once and strictly, before the route validates them.

Routes built with :class:`StrictBodyRoute` accept only the content types their OpenAPI document
declares (``application/json``; ``multipart/form-data`` where a route says so): anything else is a
415 naming the content type, so a web page cannot post a ``text/plain`` "simple request" to a write
route without a CORS preflight. A JSON body must be UTF-8 and strict JSON (no ``NaN``/``Infinity``
literals, no lone surrogates, at most 200 levels deep); otherwise it is a 400 naming the body and the
position. The parsed value is handed to FastAPI, which does not parse it again.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic_core import from_json

from serving.model import ServingError

JSON = "application/json"
MULTIPART = "multipart/form-data"


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ("" when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; raises a 400 :class:`ServingError` naming the body and what is wrong."""
    if not raw.strip():
        raise ServingError(400, "body", "empty body: send a JSON object")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServingError(400, "body", f"not UTF-8 (invalid byte at position {exc.start}): send UTF-8 JSON") from None
    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        message = str(exc)
        if "recursion limit" in message:
            raise ServingError(400, "body", "JSON nested too deeply (more than 200 levels)") from None
        raise ServingError(400, "body", f"invalid JSON: {message}") from None


class ParsedJsonRequest(Request):
    """A request whose body was already read and parsed."""

    def __init__(self, request: Request, raw: bytes, parsed: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._raw, self._parsed = raw, parsed

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


class StrictBodyRoute(APIRoute):
    """An API route that refuses undeclared content types and reads JSON strictly (see the module doc)."""

    def accepted_types(self) -> tuple[str, ...]:
        """The media types this route's body may have (none: the route takes no body)."""
        declared = (self.openapi_extra or {}).get("requestBody", {}).get("content")
        if declared:
            return tuple(declared)
        return (JSON,) if self.body_field is not None else ()

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        accepted = self.accepted_types()
        if not accepted:
            return handler

        async def strict_handler(request: Request) -> Response:
            kind = media_type(request)
            if kind not in accepted:
                given = f"content type {kind!r}" if kind else "no content type"
                raise ServingError(415, "content-type", f"{given} is not accepted here: send {' or '.join(accepted)}")
            if kind == JSON:
                raw = await request.body()
                request = ParsedJsonRequest(request, raw, parse_json(raw))
            return await handler(request)

        return strict_handler
