"""Request and response bodies of the HTTP API (they are also its OpenAPI documentation)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreRequest(Strict):
    """Candidates to score for one user."""

    user_id: int = Field(description="the user; unknown users are scored as new users (no stored history)")
    candidates: list[int] = Field(min_length=1, description="item ids to score (catalogue or registered items)")
    history: list[int] | None = Field(
        None, description="the user's clicked items, oldest first; omitted: the history the service keeps"
    )
    context: dict[str, Scalar] = Field(default_factory=dict, description="context features, e.g. hour, device")
    top_k: int | None = Field(None, ge=1, description="return only the k best candidates, best first")


class ScoredItem(BaseModel):
    item_id: int
    score: float = Field(description="click probability")


class ScoreResponse(BaseModel):
    model_version: str
    user_id: int
    history_source: str = Field(description="request, store or none")
    scores: list[ScoredItem]


class ItemRequest(Strict):
    """A new or updated item as JSON (multipart/form-data uploads take the same fields, media as files)."""

    item_id: int
    title: str | None = None
    attributes: dict[str, Scalar | list[str | int]] = Field(default_factory=dict)
    vectors: dict[str, list[float]] | None = Field(None, description="precomputed vectors by modality")
    image_base64: str | None = Field(None, description="image file bytes, base64")
    audio_base64: str | None = Field(None, description="audio file bytes, base64")


class ItemResponse(BaseModel):
    item_id: int
    source: str = Field(description="catalogue (in the checkpoint) or registered (through the API)")
    modalities: list[str]
    cold: bool = Field(description="id unseen in training: scored from content and attributes")
    model_version: str
    title: str | None = None
    attributes: dict | None = None


class UserRequest(Strict):
    history: list[int] = Field(default_factory=list, description="clicked items, oldest first")
    attributes: dict[str, Scalar] = Field(default_factory=dict)


class EventsRequest(Strict):
    clicked: list[int] = Field(min_length=1, description="items the user clicked, oldest first")


class UserResponse(BaseModel):
    user_id: int
    history: list[int]
    attributes: dict


class ReloadRequest(Strict):
    checkpoint: str = Field(description="checkpoint directory, readable by the service")


class ReloadResponse(BaseModel):
    status: str
    model_version: str
    previous_version: str
    checkpoint: str
    seconds: float
