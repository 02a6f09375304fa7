"""Typed dependencies of the routes: the worker's scoring service, the settings and the admin-key check.

The functions are ``async`` so that FastAPI resolves them on the event loop (a plain ``def`` would
cost a threadpool hop per request).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from serving.model import ServingError
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


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """Refuse (401) an admin request without the configured API key (none configured: everyone is admin)."""
    if settings.api_key is None:
        return
    given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
        raise ServingError(401, "X-API-Key", "missing or wrong API key for an admin route")
