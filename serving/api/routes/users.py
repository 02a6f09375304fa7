"""A user's stored state: clicked history and attributes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.api.deps import ServiceDep
from serving.schemas import EventsRequest, UserRequest, UserResponse
from serving.store import UserState

router = APIRouter(tags=["users"])


def _user_body(state: UserState) -> dict[str, Any]:
    return {"user_id": state.user_id, "history": state.history, "attributes": state.attributes}


@router.get("/v1/users/{user_id}", response_model=UserResponse, summary="A user's stored state")
async def get_user(user_id: int, service: ServiceDep) -> dict[str, Any]:
    return _user_body(service.user(user_id))


@router.put("/v1/users/{user_id}", response_model=UserResponse, summary="Replace a user's history and attributes")
async def put_user(user_id: int, body: UserRequest, service: ServiceDep) -> dict[str, Any]:
    return _user_body(service.put_user(user_id, body.history, dict(body.attributes)))


@router.post(
    "/v1/users/{user_id}/events", response_model=UserResponse, summary="Append clicked items to a user's history"
)
async def add_events(user_id: int, body: EventsRequest, service: ServiceDep) -> dict[str, Any]:
    return _user_body(service.add_events(user_id, body.clicked))
