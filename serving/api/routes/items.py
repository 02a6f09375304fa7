"""Items: register or update one from its content (JSON or multipart upload), read one back."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from serving.api.bodies import MULTIPART, StrictBodyRoute, media_type, parse_json
from serving.api.deps import AfterId, ItemIdPath, PageLimit, ServiceDep, SettingsDep, require_key
from serving.api.responses import BODY_ERRORS, error_responses, json_response, page_response
from serving.content import ItemContent
from serving.media import MEDIA_TYPES, OCTET_STREAM
from serving.model import ItemInfo, ServingError
from serving.schemas import ItemList, ItemRequest, ItemResponse

router = APIRouter(tags=["items"], route_class=StrictBodyRoute)

#: The request body in OpenAPI: the route reads it itself, as JSON or as multipart/form-data.
ITEM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ItemRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["item_id"],
                    "properties": {
                        "item_id": {"type": "integer"},
                        "title": {"type": "string"},
                        "attributes": {"type": "string", "description": "JSON object"},
                        "vectors": {"type": "string", "description": "JSON object: modality -> list of numbers"},
                        "image": {"type": "string", "format": "binary"},
                        "audio": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


def _item_body(info: ItemInfo, version: str | None, **extra: Any) -> dict[str, Any]:
    """What the item routes say about an item (``version`` None: without the model version, as in a listing)."""
    body = {"item_id": info.item_id, "source": info.source, "modalities": info.modalities, "cold": info.cold}
    return body if version is None else {**body, "model_version": version, **extra}


@router.post(
    "/v1/items",
    response_model=ItemResponse,
    status_code=201,
    responses=error_responses(401, *BODY_ERRORS, 503),
    dependencies=[Depends(require_key)],
    openapi_extra=ITEM_BODY,
    summary="Register or update an item from its content; scorable when this returns",
)
async def put_item(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    body, files = await _item_request(request, settings.max_body_bytes)
    image = files.get("image") or _b64(body.image_base64, "image_base64")
    audio = files.get("audio") or _b64(body.audio_base64, "audio_base64")
    content = ItemContent(body.title, image, audio, body.vectors)
    info = await run_in_threadpool(service.register_item, body.item_id, content, dict(body.attributes))
    return json_response(_item_body(info, service.model.version), 201)


@router.get(
    "/v1/items/{item_id}",
    response_model=ItemResponse,
    responses=error_responses(404, 422, 503),
    summary="A scorable item",
)
async def get_item(item_id: ItemIdPath, service: ServiceDep) -> Response:
    info, extra = service.item(item_id)
    return json_response(_item_body(info, service.model.version, **extra))


@router.get(
    "/v1/items",
    response_model=ItemList,
    responses=error_responses(422, 503),
    summary="Scorable items (catalogue and registered) by id, a page at a time",
)
async def list_items(service: ServiceDep, limit: PageLimit = 100, after: AfterId = None) -> Response:
    items = service.list_items(after, limit)
    return page_response("items", [_item_body(info, None) for info in items], limit)


@router.get(
    "/v1/items/{item_id}/media/{kind}",
    response_class=Response,
    responses={
        200: {
            "description": "The file as registered or as named by the dataset; its media type from its first bytes "
            "(application/octet-stream when it is not an image or audio)",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in MEDIA_TYPES},
        },
        **error_responses(404, 422, 503),
    },
    summary="An item's image or audio file",
)
async def get_media(item_id: ItemIdPath, kind: Literal["image", "audio"], service: ServiceDep) -> Response:
    data, kind_type = await run_in_threadpool(service.item_media, item_id, kind)
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox", "Cache-Control": "no-cache"}
    if kind_type == OCTET_STREAM:
        headers["Content-Disposition"] = f'attachment; filename="item-{item_id}-{kind}"'
    return Response(data, media_type=kind_type, headers=headers)


def _b64(value: str | None, field: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ServingError(422, field, "not valid base64") from None


async def _item_request(request: Request, max_bytes: int) -> tuple[ItemRequest, dict[str, bytes]]:
    """The item body from JSON, or from multipart/form-data (then also the media file parts' bytes)."""
    try:
        if media_type(request) == MULTIPART:
            form = await request.form(max_part_size=max_bytes)
            files: dict[str, bytes] = {}
            fields: dict[str, Any] = {}
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                else:
                    files[key] = await value.read()
            unknown = sorted(set(files) - {"image", "audio"})
            if unknown:
                raise ServingError(422, unknown[0], "unknown file part; expected image and/or audio")
            if re.fullmatch(r"\s*[+-]?\d{1,25}\s*", fields.get("item_id", "")):
                fields["item_id"] = int(fields["item_id"])  # form fields are text; JSON bodies must send a number
            for key in ("attributes", "vectors"):
                if key in fields:
                    try:
                        fields[key] = parse_json(fields[key].encode("utf-8", "surrogatepass"))
                    except ServingError as exc:
                        raise ServingError(422, key, exc.message) from None
            return ItemRequest.model_validate(fields), files
        return ItemRequest.model_validate(await request.json()), {}
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
