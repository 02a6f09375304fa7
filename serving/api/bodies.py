"""Request bodies read once and strictly, before the route validates them.

Routes built with :class:`StrictBodyRoute` accept only the content types their OpenAPI document
declares (``application/json``; ``multipart/form-data`` where a route says so): anything else is a
415 naming the content type, so a web page cannot post a ``text/plain`` "simple request" to a write
route without a CORS preflight. A JSON body must be UTF-8 and strict JSON (no ``NaN``/``Infinity``
literals, no lone surrogates, at most 200 levels deep); otherwise it is a 400 naming the body and the
position. The parsed value is handed to FastAPI, which does not parse it again.

A route whose endpoint takes only its JSON body and dependencies that need nothing but the request
(``ServiceDep``), and returns a :class:`Response` itself (``POST /v1/score``), is called directly: the body
validated by FastAPI's own body field (the same errors, with ``body`` in front of each location), the
dependencies awaited with the request. FastAPI's generic request handler (content-type parsing, dependency
solving, response serialisation) cost ~0.1 ms of CPU per request (benchmarks/RESULTS.md); any other route,
or any request while ``app.dependency_overrides`` is set, goes through it as before.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
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
        handler = self.direct_handler(super().get_route_handler())
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

    def direct_handler(
        self, generic: Callable[[Request], Coroutine[Any, Any, Response]]
    ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The endpoint called directly when FastAPI's ``generic`` handler would do no more than validate the JSON
        body and await request-only dependencies (see the module doc); else ``generic``."""
        dependant, field = self.dependant, self.body_field
        simple = (
            field is not None
            and self.accepted_types() == (JSON,)
            and len(dependant.body_params) == 1
            and not (dependant.path_params or dependant.query_params or dependant.header_params)
            and not (dependant.cookie_params or _special_params(dependant))
            and inspect.iscoroutinefunction(self.endpoint)
            and _returns_response(self.endpoint)
            and all(_request_only(d) for d in dependant.dependencies)
        )
        if not simple:
            return generic
        assert field is not None
        body_name = dependant.body_params[0].name
        dependencies: list[tuple[str, str | None, Callable[..., Awaitable[Any]]]] = [
            (d.name, d.request_param_name, d.call) for d in dependant.dependencies if d.name and d.call
        ]
        endpoint: Callable[..., Awaitable[Response]] = self.endpoint

        async def direct(request: Request) -> Response:
            if request.app.dependency_overrides:
                return await generic(request)
            body = await request.json()
            value, errors = field.validate(body, {}, loc=("body",))
            if errors:
                raise RequestValidationError(errors, body=body)
            kwargs = {body_name: value}
            for name, param, call in dependencies:
                kwargs[name] = await (call(**{param: request}) if param else call())
            response = await endpoint(**kwargs)
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: the endpoint returned {type(response).__name__}, not a Response")
            return response

        return direct


def _special_params(dependant: Dependant, request: bool = True) -> bool:
    """Whether ``dependant`` takes the request (``request``: counted), the response, background tasks, a
    websocket, the connection or security scopes."""
    names = (
        dependant.request_param_name if request else None,
        dependant.websocket_param_name,
        dependant.http_connection_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    )
    return any(names) or bool(dependant.own_oauth_scopes or dependant.parent_oauth_scopes)


def _request_only(dependant: Dependant) -> bool:
    """A dependency that is an ``async def`` of the request alone (no parameters, sub-dependencies, security)."""
    call = dependant.call
    return (
        call is not None
        and inspect.iscoroutinefunction(call)
        and not isinstance(call, SecurityBase)
        and dependant.name is not None
        and not dependant.dependencies
        and not (dependant.body_params or dependant.path_params or dependant.query_params)
        and not (dependant.header_params or dependant.cookie_params or _special_params(dependant, request=False))
    )


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    """Whether ``endpoint`` is annotated to return a :class:`Response` (then FastAPI hands it back as it is)."""
    try:
        returned = typing.get_type_hints(endpoint).get("return")
    except Exception:  # an annotation that does not resolve: leave the route to FastAPI
        return False
    return isinstance(returned, type) and issubclass(returned, Response)
