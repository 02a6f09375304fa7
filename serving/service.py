"""The scoring service of one worker process: the served model, the shared store, hot swaps.

Every worker keeps its own :class:`~serving.model.ServedModel` and catches up with the shared
:class:`~serving.store.StateStore` (SQLite on one host, Redis across hosts) before each request (one
cheap query): items registered through any worker become scorable everywhere as soon as the registering
call returns, and a model swapped in by any worker is loaded by the others in the background, old model
serving meanwhile.

A swap is recorded in the store (with a new, larger generation) before the worker that performs it
starts serving the new model, and a worker only ever follows a generation newer than its own: once
a reload is acknowledged, that worker never answers with the old model again, and every other
worker switches within one model load after its next request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.errors import RecsysError
from recsys.features.sequences import recent_history
from serving.content import ContentError, ItemContent, MediaLimits
from serving.media import CatalogueMedia, media_type
from serving.model import Catalogue, ItemInfo, ServedModel, ServingError
from serving.settings import ServeSettings
from serving.state import open_store
from serving.store import StateStore, StoredItem, StoreUnavailable, UserState

log = logging.getLogger("recsys.serving")


@dataclass(frozen=True)
class ScoreResult:
    version: str
    item_ids: list[int]
    scores: np.ndarray
    history_source: str  # "request", "store" or "none"


@dataclass(frozen=True)
class ReloadResult:
    version: str
    previous: str
    path: str
    seconds: float


class ScoringService:
    """Everything a worker serves; thread-safe. Build it with :meth:`start`."""

    def __init__(
        self, settings: ServeSettings, store: StateStore, model: ServedModel, items_seq: int, generation: int = 0
    ) -> None:
        self.settings = settings
        self.store = store
        self.model = model  # replaced atomically by a swap; a request keeps the one it started with
        self.model_path = str(settings.checkpoint)
        self.generation = generation  # of the served model, as recorded in the store
        self.media_limits = MediaLimits(
            settings.max_image_pixels, settings.max_audio_seconds, settings.max_concurrent_decodes
        )
        self._items_seq = items_seq
        self._sync_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._background: threading.Thread | None = None
        self._failed_generations: set[int] = set()
        self.pid = os.getpid()
        self.media = CatalogueMedia(settings.data_dir)  # the catalogue's titles and media files
        self._sorted_ids: tuple[Catalogue, np.ndarray] | None = None  # GET /v1/items pages, per catalogue snapshot

    @classmethod
    def start(cls, settings: ServeSettings) -> ScoringService:
        """Open the store and load the active model with every registered item."""
        store = open_store(settings)
        versions = store.versions()
        path = versions.model_path or str(settings.checkpoint)
        items = store.items_since(0)
        model = ServedModel.load(path, items, store.vectors_of(i.item_id for i in items), scorer=settings.scorer)
        service = cls(settings, store, model, max((i.seq for i in items), default=0), versions.model_generation)
        service.model_path = path
        log.info(
            "worker %d serving %s from %s (%d catalogue items, %d registered; %s scorer)",
            service.pid,
            model.version,
            path,
            model.catalogue.n - 1,
            len(items),
            model.scorer_name,
        )
        return service

    # ---------------------------------------------------------------- catching up
    def sync(self) -> None:
        """Catch up with the store: new or updated items now, a new active model in the background."""
        versions = self.store.versions()
        if versions.items_seq > self._items_seq:
            with self._sync_lock:
                if versions.items_seq > self._items_seq:
                    items = self.store.items_since(self._items_seq)
                    if items:
                        self.model.add_items(items, self.store.vectors_of(i.item_id for i in items))
                    self._items_seq = max([self._items_seq, *(i.seq for i in items)])
        if (
            versions.model_path
            and versions.model_generation > self.generation
            and versions.model_generation not in self._failed_generations
            and not self._reload_lock.locked()  # this worker is swapping (and recording) a model right now
            and (self._background is None or not self._background.is_alive())
        ):
            self._background = threading.Thread(
                target=self._follow,
                args=(versions.model_path, versions.model_generation),
                daemon=True,
                name="model-follow",
            )
            self._background.start()

    def _follow(self, path: str, generation: int) -> None:
        """Load the model another worker swapped in (this worker keeps serving the old one meanwhile)."""
        try:
            self._swap(path, generation)
        except (RecsysError, OSError) as exc:
            if not isinstance(exc, StoreUnavailable):  # the store's outage is not the model's: a later request retries
                self._failed_generations.add(generation)
            log.error("worker %d could not follow the swap to %s (generation %d): %s", self.pid, path, generation, exc)

    # ---------------------------------------------------------------- model swap
    def _swap(self, path: str, generation: int | None) -> ReloadResult:
        """Load ``path`` and serve it. ``generation`` None: a reload here, recorded in the store (new
        generation) before this worker serves it; otherwise the recorded generation being followed."""
        with self._reload_lock:
            start = time.perf_counter()
            current = self.model
            items = self.store.items_since(0)
            new = ServedModel.load(
                path,
                items,
                self.store.vectors_of(i.item_id for i in items),
                serving_config=current.checkpoint.config,
                scorer=self.settings.scorer,
            )
            loaded_seq = max((i.seq for i in items), default=0)
            if generation is None:
                generation = self.store.set_active_model(path, new.version)  # the other workers follow
            with self._sync_lock:  # items registered while loading: add them before the swap
                if generation <= self.generation:  # a newer model was swapped in meanwhile: keep it
                    return ReloadResult(self.model.version, current.version, self.model_path, 0.0)
                late = self.store.items_since(loaded_seq)
                if late:
                    new.add_items(late, self.store.vectors_of(i.item_id for i in late))
                self._items_seq = max([self._items_seq, loaded_seq, *(i.seq for i in late)])
                # The swap: reference assignments, read by requests without a lock (each keeps the model it took).
                self.model, self.model_path, self.generation = new, path, generation
            log.info(
                "worker %d swapped %s -> %s (%s, generation %d)",
                self.pid,
                current.version,
                new.version,
                path,
                generation,
            )
            return ReloadResult(new.version, current.version, path, time.perf_counter() - start)

    def reload(self, path: str) -> ReloadResult:
        """Load, validate, record and swap in a checkpoint; on any problem the old model keeps serving."""
        if self._reload_lock.locked():
            raise ServingError(409, "checkpoint", "a reload is already in progress")
        try:
            return self._swap(path, None)
        except OSError as exc:  # e.g. a path the file system refuses (name too long)
            raise ServingError(422, "checkpoint", f"cannot read {path[:200]!r}: {exc.strerror or exc}") from None

    # ---------------------------------------------------------------- scoring
    def score(
        self, user_id: int, candidates: list[int], history: list[int] | None, context: dict, top_k: int | None
    ) -> ScoreResult:
        if len(candidates) > self.settings.max_candidates:
            raise ServingError(
                422,
                "candidates",
                f"{len(candidates)} candidates, more than the limit of "
                f"{self.settings.max_candidates} (serve.max_candidates)",
            )
        self.sync()
        model = self.model
        state = self.store.get_user(user_id)
        source = "request" if history is not None else ("store" if state and state.history else "none")
        if history is None:
            history = state.history if state else []
            catalogue = model.catalogue
            history = [i for i in history if i in catalogue.row_of]  # stored items may have left the catalogue
        probs = model.score(
            model.user_features(user_id, state.attributes if state else {}),
            model.context_features(context),
            history,
            candidates,
        )
        ids = list(candidates)
        if top_k is not None:
            order = np.argsort(-probs, kind="stable")[:top_k]
            ids, probs = [ids[i] for i in order], probs[order]
        return ScoreResult(model.version, ids, probs, source)

    # ---------------------------------------------------------------- items
    def register_item(self, item_id: int, content: ItemContent, attributes: dict) -> ItemInfo:
        """Encode and store an item; it is scorable by every worker when this returns."""
        model = self.model
        fields = model.attribute_fields()
        unknown = sorted(set(attributes) - set(fields))
        if unknown:
            raise ServingError(
                422, "attributes", f"unknown attribute(s) {unknown}; this model's item attributes: {sorted(fields)}"
            )
        for name, value in attributes.items():
            if fields[name] == "list" and not (value is None or isinstance(value, list)):
                raise ServingError(422, f"attributes.{name}", f"must be a list, got {type(value).__name__}")
            if fields[name] == "categorical" and isinstance(value, (list, dict)):
                raise ServingError(422, f"attributes.{name}", f"must be a single value, got {type(value).__name__}")
        try:
            vectors = model.encoders.encode(content, self.media_limits)
        except ContentError as exc:
            raise ServingError(exc.status, exc.field, exc.message) from None
        if not vectors and not attributes:
            raise ServingError(422, "item", "no content: give a title, an image, audio, vectors or attributes")
        keyed = {(m, model.encoders.fingerprint(m)): v for m, v in vectors.items()}
        self.store.put_item(item_id, content.title, attributes, content.image, content.audio, keyed)
        self.sync()
        info = self.model.item_info(item_id)
        assert info is not None
        return info

    def item(self, item_id: int) -> tuple[ItemInfo, dict]:
        self.sync()
        info = self.model.item_info(item_id)
        if info is None:
            raise ServingError(404, "item_id", f"unknown item id {item_id}", [item_id])
        stored = self.store.get_item(item_id)
        extra = {"title": stored.title, "attributes": stored.attributes} if stored else {}
        if stored is None and (entry := self.media.entry(item_id)) is not None:
            extra["title"] = entry.title
        extra["media"] = {
            kind: f"/v1/items/{item_id}/media/{kind}" if self._media_source(item_id, kind, stored) is not None else None
            for kind in ("image", "audio")
        }
        shares = self.model.modality_shares([item_id])
        extra["modality_shares"] = shares[0] if shares else None
        return info, extra

    def item_media(self, item_id: int, kind: str) -> tuple[bytes, str]:
        """An item's image or audio file (registered: as uploaded; catalogue: from the dataset) and its media type;
        404 naming the item id for an unknown item, or the kind for an item without that medium."""
        self.sync()
        if self.model.item_info(item_id) is None:
            raise ServingError(404, "item_id", f"unknown item id {item_id}", [item_id])
        source = self._media_source(item_id, kind, self.store.get_item(item_id))
        try:
            data = source.read_bytes() if isinstance(source, Path) else source
        except OSError:  # removed or unreadable since it was checked
            data = None
        if data is None:
            raise ServingError(404, "kind", f"item {item_id} has no {kind}", [item_id])
        return data, media_type(data)

    def _media_source(self, item_id: int, kind: str, stored: StoredItem | None) -> bytes | Path | None:
        """A registered item's uploaded bytes, else the catalogue item's dataset file (when it exists)."""
        if stored is not None:
            return stored.image if kind == "image" else stored.audio
        path = self.media.file(item_id, kind)
        return path if path is not None and path.is_file() else None

    def list_users(self, after: int | None, limit: int) -> list[tuple[int, int]]:
        """(user id, history length) of the first ``limit`` stored users with an id above ``after``, by id."""
        return self.store.users_after(after, limit)

    def list_items(self, after: int | None, limit: int) -> list[ItemInfo]:
        """The first ``limit`` scorable items (catalogue and registered) with an id above ``after``, by id."""
        self.sync()
        model = self.model
        cached = self._sorted_ids
        if cached is None or cached[0] is not model.catalogue:
            catalogue = model.catalogue
            cached = self._sorted_ids = (catalogue, np.sort(np.fromiter(catalogue.row_of, np.int64)))
        ids = cached[1]
        start = 0 if after is None else int(np.searchsorted(ids, after, side="right"))
        infos = [model.item_info(int(i)) for i in ids[start : start + limit]]
        return [info for info in infos if info is not None]

    # ---------------------------------------------------------------- users
    def user(self, user_id: int) -> UserState:
        state = self.store.get_user(user_id)
        if state is None:
            raise ServingError(404, "user_id", f"unknown user id {user_id}", [user_id])
        return state

    def _check_items(self, item_ids: list[int], field: str) -> None:
        self.sync()
        self.model.catalogue.rows(item_ids, field)  # raises naming unknown ids

    def put_user(self, user_id: int, history: list[int], attributes: dict) -> UserState:
        self._check_items(history, "history")
        fields = {f.name for f in self.model.feature_map.by("user", "categorical") if f.name != "user_id"}
        unknown = sorted(set(attributes) - fields)
        if unknown:
            raise ServingError(
                422, "attributes", f"unknown user attribute(s) {unknown}; this model's: {sorted(fields)}"
            )
        history = recent_history(history, self.model.feature_map.max_history)
        self.store.put_user(user_id, history, attributes)
        return UserState(user_id, history, attributes)

    def add_events(self, user_id: int, clicked: list[int]) -> UserState:
        self._check_items(clicked, "clicked")
        return self.store.append_history(user_id, clicked, self.model.feature_map.max_history)
