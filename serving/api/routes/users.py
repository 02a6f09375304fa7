"""A user's stored state: clicked history and attributes (writes need the API key when one is set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from serving.api.bodies import StrictBodyRoute
from serving.api.deps import AfterId, PageLimit, ServiceDep, UserIdPath, require_key
from serving.api.responses import BODY_ERRORS, error_responses, json_response, page_response
from serving.schemas import EventsRequest, UserList, UserRequest, UserResponse
from serving.store import UserState

router = APIRouter(tags=["users"], route_class=StrictBodyRoute)


def _user_body(state: UserState) -> Response:
    payload: dict[str, Any] = {"user_id": state.user_id, "history": state.history, "attributes": state.attributes}
    return json_response(payload)


@router.get(
    "/v1/users",
    response_model=UserList,
    responses=error_responses(422, 503),
    summary="Users with stored state, by id, a page at a time",
)
async def list_users(service: ServiceDep, limit: PageLimit = 100, after: AfterId = None) -> Response:
    users = [{"user_id": user_id, "history_length": length} for user_id, length in service.list_users(after, limit)]
    return page_response("users", users, limit)


@router.get(
    "/v1/users/{user_id}",
    response_model=UserResponse,
    responses=error_responses(404, 422, 503),
    summary="A user's stored state",
)
async def get_user(user_id: UserIdPath, service: ServiceDep) -> Response:
    return _user_body(service.user(user_id))


@router.put(
    "/v1/users/{user_id}",
    response_model=UserResponse,
    responses=error_responses(401, *BODY_ERRORS, 503),
    dependencies=[Depends(require_key)],
    summary="Replace a user's history and attributes",
)
async def put_user(user_id: UserIdPath, body: UserRequest, service: ServiceDep) -> Response:
    return _user_body(service.put_user(user_id, body.history, dict(body.attributes)))


@router.post(
    "/v1/users/{user_id}/events",
    response_model=UserResponse,
    responses=error_responses(401, *BODY_ERRORS, 503),
    dependencies=[Depends(require_key)],
    summary="Append clicked items to a user's history",
)
async def add_events(user_id: UserIdPath, body: EventsRequest, service: ServiceDep) -> Response:
    return _user_body(service.add_events(user_id, body.clicked))
