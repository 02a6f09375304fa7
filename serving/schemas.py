"""Request and response bodies of the HTTP API (they are also its OpenAPI documentation)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import Strict as StrictType

#: Ids are signed 64-bit integers (what the dataset's Parquet columns and the state store hold).
ID_MIN, ID_MAX = -(2**63), 2**63 - 1

#: An item or user id in a JSON body: an integer (not a float, string or boolean) in the 64-bit range.
Id = Annotated[int, StrictType(), Field(ge=ID_MIN, le=ID_MAX)]

#: A feature value: finite numbers only (NaN/Infinity are refused like any other invalid value).
Scalar = float | int | str | bool | None


def _unique(ids: list[int]) -> list[int]:
    seen: set[int] = set()
    duplicates = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if duplicates:
        raise ValueError(f"duplicate item id(s) {sorted(set(duplicates))[:20]}: list each candidate once")
    return ids


class Strict(BaseModel):
    """A request body: unknown fields and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ScoreRequest(Strict):
    """Candidates to score for one user."""

    user_id: Id = Field(description="the user; unknown users are scored as new users (no stored history)")
    candidates: Annotated[list[Id], AfterValidator(_unique)] = Field(
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="item ids to score (catalogue or registered items), each once; at most serve.max_candidates",
    )
    history: list[Id] | None = Field(
        None, description="the user's clicked items, oldest first; omitted: the history the service keeps"
    )
    context: dict[str, Scalar] = Field(default_factory=dict, description="context features, e.g. hour, device")
    top_k: Annotated[int, StrictType()] | None = Field(
        None, ge=1, description="return only the k best candidates, best first"
    )
    explain: Annotated[bool, StrictType()] = Field(
        False, description="also return each item's modality shares under modal attention and whether it is cold"
    )


#: An item's share of its representation per modality under modal attention (|a_m s_m| normalised, summing to 1).
MODALITY_SHARES = "modality -> share of the item representation under modal attention; null: the model has none"


class ScoredItem(BaseModel):
    item_id: int
    score: float = Field(description="click probability")
    cold: bool | None = Field(None, description="with explain: id unseen in training, scored from content")
    modality_shares: dict[str, float] | None = Field(None, description=f"with explain: {MODALITY_SHARES}")


class ScoreResponse(BaseModel):
    model_version: str
    user_id: int
    history_source: str = Field(description="request, store or none")
    scores: list[ScoredItem]


class ItemRequest(Strict):
    """A new or updated item as JSON (multipart/form-data uploads take the same fields, media as files)."""

    item_id: Id
    title: str | None = Field(None, max_length=10_000)
    attributes: dict[str, Scalar | list[str | int]] = Field(default_factory=dict)
    vectors: dict[str, list[float]] | None = Field(None, description="precomputed vectors by modality")
    image_base64: str | None = Field(None, description="image file bytes, base64")
    audio_base64: str | None = Field(None, description="audio file bytes, base64")


class ItemMedia(BaseModel):
    image: str | None = Field(None, description="URL of the item's image (GET), null: none")
    audio: str | None = Field(None, description="URL of the item's audio (GET), null: none")


class ItemResponse(BaseModel):
    item_id: int
    source: str = Field(description="catalogue (in the checkpoint) or registered (through the API)")
    modalities: list[str]
    cold: bool = Field(description="id unseen in training: scored from content and attributes")
    model_version: str
    title: str | None = None
    attributes: dict | None = None
    media: ItemMedia | None = None
    modality_shares: dict[str, float] | None = Field(None, description=MODALITY_SHARES)


class ItemSummary(BaseModel):
    item_id: int
    source: str = Field(description="catalogue (in the checkpoint) or registered (through the API)")
    modalities: list[str]
    cold: bool


class ItemList(BaseModel):
    items: list[ItemSummary] = Field(description="scorable items by id")
    next_after: int | None = Field(description="pass as after for the next page; null: this is the last page")


class UserSummary(BaseModel):
    user_id: int
    history_length: int


class UserList(BaseModel):
    users: list[UserSummary] = Field(description="users with stored state, by id")
    next_after: int | None = Field(description="pass as after for the next page; null: this is the last page")


class UserRequest(Strict):
    history: list[Id] = Field(default_factory=list, description="clicked items, oldest first")
    attributes: dict[str, Scalar] = Field(default_factory=dict)


class EventsRequest(Strict):
    clicked: list[Id] = Field(min_length=1, description="items the user clicked, oldest first")


class UserResponse(BaseModel):
    user_id: int
    history: list[int]
    attributes: dict


class ReloadRequest(Strict):
    checkpoint: str = Field(min_length=1, max_length=4096, description="checkpoint directory, readable by the service")


class ReloadResponse(BaseModel):
    status: str
    model_version: str
    previous_version: str
    checkpoint: str
    seconds: float


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class ErrorDetail(BaseModel):
    field: str = Field(
        description="the request field at fault, dotted (candidates.2), or body, content-type, X-API-Key"
    )
    message: str
    ids: list[int] | None = Field(None, description="the offending ids, when ids are at fault")
    errors: list[FieldError] | None = Field(None, description="every validation problem, when the body is invalid")


class ErrorBody(BaseModel):
    """Every error the service returns (4xx): what is wrong and where."""

    detail: ErrorDetail
