"""Typed dependencies of the routes: the worker's scoring service, the settings, the API-key check and ids.

The functions are ``async`` so that FastAPI resolves them on the event loop (a plain ``def`` would
cost a threadpool hop per request).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import APIKeyHeader

from serving.model import ServingError
from serving.schemas import ID_MAX, ID_MIN
from serving.service import ScoringService
from serving.settings import ServeSettings


async def get_settings(request: Request) -> ServeSettings:
    """The settings the app was built with."""
    settings: ServeSettings = request.app.state.settings
    return settings


async def find_service(request: Request) -> ScoringService | None:
    """The worker's scoring service, None while the model is still loading."""
    return getattr(request.app.state, "service", None)


async def get_service(request: Request) -> ScoringService:
    """The worker's scoring service (loaded at start-up, before any request is accepted)."""
    service: ScoringService = request.app.state.service
    return service


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ServiceDep = Annotated[ScoringService, Depends(get_service)]
MaybeServiceDep = Annotated[ScoringService | None, Depends(find_service)]


#: The API key header, declared in OpenAPI as the service's security scheme.
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="needed by write and admin routes when the service has a key (RECSYS_API_KEY or --api-key-file)",
)


async def require_key(
    request: Request, settings: SettingsDep, given: Annotated[str | None, Security(API_KEY_HEADER)] = None
) -> None:
    """Refuse (401) a write or admin request without the configured API key (no key configured: open).

    The key may also come as ``Authorization: Bearer <key>``.
    """
    if settings.api_key is None:
        return
    key = given or request.headers.get("authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise ServingError(401, "X-API-Key", "missing or wrong API key (needed for write and admin routes)")


#: A user or item id in a path: a 64-bit signed integer.
UserIdPath = Annotated[int, Path(ge=ID_MIN, le=ID_MAX, description="the user id")]
ItemIdPath = Annotated[int, Path(ge=ID_MIN, le=ID_MAX, description="the item id")]

#: A page of a listing: how many entries (at most 1000), and the id the previous page ended with (``next_after``).
PageLimit = Annotated[int, Query(ge=1, le=1000, description="how many entries, at most 1000")]
AfterId = Annotated[int | None, Query(ge=ID_MIN, le=ID_MAX, description="list ids above this one (a next_after)")]
