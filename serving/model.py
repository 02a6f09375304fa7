"""A checkpoint made ready to serve: the model, and every catalogue item's representation cached.

Scoring a request costs only the user side and the final layers: candidate-independent item
representations (``model.item_representations``, the same code as training) are computed once
for the whole catalogue when the model loads, and once per item registered later. Raw inputs
become tensors through the training code (``recsys.features``): the request encoders
(``encode_request_user`` / ``encode_request_context``, the layout and vocabularies of training's
column encoders), ``recent_history`` and ``build_item_table``; scores come from the model's own fast
path (``score_candidates``), or from that path compiled with ONNX Runtime (``serve.scorer: onnx``,
:mod:`serving.compiled`), checked against it when the model loads.

The cache is a :class:`Catalogue` snapshot that is replaced, never mutated in place, so a
request that started on one snapshot finishes on it while items are being added.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.checkpoint import Checkpoint, load_checkpoint
from recsys.config import ExperimentConfig
from recsys.errors import RecsysError
from recsys.features.examples import RequestFeatureError, encode_request_context, encode_request_user
from recsys.features.feature_map import OOV, FeatureMap
from recsys.features.item_table import ItemInputs, build_item_table
from recsys.features.sequences import recent_history
from recsys.models import ScoringModel, UserSide
from serving.compiled import (
    TOLERANCE,
    CompiledScorer,
    ScorerError,
    canary_requests,
    compile_scorer,
    runtime_missing,
    write_artefact,
)
from serving.content import ContentEncoders
from serving.store import StoredItem

log = logging.getLogger("recsys.serving")

#: Items whose representations are computed in one forward pass at load time.
CHUNK = 8192


class ServingError(RecsysError):
    """A request the service refuses: an HTTP status, the field at fault and (some of) the offending ids."""

    def __init__(self, status: int, field: str, message: str, ids: list | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message, self.ids = status, field, message, ids

    def body(self) -> dict:
        detail: dict[str, object] = {"field": self.field, "message": self.message}
        if self.ids is not None:
            detail["ids"] = self.ids
        return {"detail": detail}


def model_version(checkpoint: Checkpoint) -> str:
    """``<model>-<first 12 hex of model.pt's sha256>``: names the weights, not the directory."""
    digest = checkpoint.meta.get("files", {}).get("model.pt", "unknown")
    return f"{checkpoint.meta.get('model', checkpoint.config.model.name)}-{digest[:12]}"


def serving_differences(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Config fields a hot swap must keep: request features and item encoders (the model may change)."""
    diffs = []
    for section in ("features", "encoders"):
        a = getattr(old, section).model_dump(exclude={"cache_dir", "batch_size"})
        b = getattr(new, section).model_dump(exclude={"cache_dir", "batch_size"})
        diffs += [f"{section}.{k}: serving {a[k]!r}, new checkpoint {b[k]!r}" for k in a if a[k] != b.get(k)]
    return diffs


@dataclass(frozen=True)
class Catalogue:
    """Item representations by row (row 0: padding) and item id -> row; replaced as a whole."""

    reps: torch.Tensor  # (capacity, D); rows >= n are free
    row_of: dict[int, int]
    n: int

    def rows(self, item_ids: list[int], field: str) -> np.ndarray:
        get = self.row_of.get
        rows = [get(i, -1) for i in item_ids]
        if -1 in rows:
            unknown = list(dict.fromkeys(i for i, r in zip(item_ids, rows) if r < 0))
            raise ServingError(
                422,
                field,
                f"{len(unknown)} unknown item id(s) (not in the catalogue; register new items with POST /v1/items)",
                unknown[:20],
            )
        return np.asarray(rows, dtype=np.int64)


@dataclass(frozen=True)
class ItemInfo:
    """What GET /v1/items/{id} reports about a scorable item."""

    item_id: int
    source: str  # "catalogue" (in the checkpoint) or "registered" (through the API)
    modalities: list[str]
    cold: bool  # its id was not seen in training: scored from content and attributes
    shares: tuple[float, ...] | None = None  # registered items: modality shares (ServedModel.modality_shares)


@dataclass
class ServedModel:
    """A loaded checkpoint plus the cached item representations of its catalogue and registered items."""

    checkpoint: Checkpoint
    encoders: ContentEncoders
    version: str
    catalogue: Catalogue
    registered: dict[int, ItemInfo] = field(default_factory=dict)
    compiled: CompiledScorer | None = None  # serve.scorer onnx, checked against the eager model; None: eager
    _write_lock: threading.Lock = field(default_factory=threading.Lock)

    # ---------------------------------------------------------------- building
    @classmethod
    def load(
        cls,
        path: str | Path,
        registered: Sequence[StoredItem] = (),
        vectors: dict | None = None,
        serving_config: ExperimentConfig | None = None,
        scorer: str = "eager",
    ) -> ServedModel:
        """Load, check and warm a checkpoint. Raises CheckpointError / ServingError with the reason.

        With ``serving_config`` (the config being served), a checkpoint whose features or
        encoders differ is refused: requests and registered items must keep their meaning.
        ``scorer`` ("eager" or "onnx", ``serve.scorer``): with "onnx" the per-request part is compiled
        (:func:`serving.compiled.compile_scorer`) and serves only if it scores the canaries as the eager
        model does; a corrupt or stale exported artefact is refused (422, field "scorer").
        """
        checkpoint = load_checkpoint(path)  # hashes verified, weights_only, config rebuilt
        if serving_config is not None:
            diffs = serving_differences(serving_config, checkpoint.config)
            if diffs:
                raise ServingError(409, "checkpoint", "does not match the served config: " + "; ".join(diffs))
        torch_model = checkpoint.model.eval()
        if not isinstance(torch_model, ScoringModel):
            raise ServingError(422, "checkpoint", f"model {checkpoint.config.model.name!r} cannot be served")
        table = checkpoint.item_table
        items = ItemInputs.from_table(table)
        with torch.inference_mode():
            rows = torch.arange(table.n_items + 1)
            reps = torch.cat(
                [torch_model.item_representations(rows[s : s + CHUNK], items).rep for s in range(0, len(rows), CHUNK)]
            )
        bad = (~torch.isfinite(reps).all(dim=1)).nonzero().flatten()
        if len(bad):
            ids = [int(table.item_ids[r - 1]) for r in bad.tolist() if r > 0][:10]
            raise ServingError(422, "checkpoint", f"non-finite item representations for {len(bad)} item(s)", ids)
        row_of = {int(i): r + 1 for r, i in enumerate(table.item_ids)}
        served = cls(
            checkpoint,
            ContentEncoders(checkpoint.config.encoders, table.encoder_dims()),
            model_version(checkpoint),
            Catalogue(reps, row_of, len(reps)),
        )
        if registered:
            served.add_items(list(registered), vectors or {})
        served.canary()
        if scorer == "onnx":
            served.compile()
        return served

    def compile(self) -> float:
        """Compile the per-request part and keep it if it agrees with the eager model within TOLERANCE on every
        canary request (the largest difference is returned); a bad artefact raises a 422 ServingError, a model
        that cannot be compiled stays eager (one log line)."""
        try:
            compiled = compile_scorer(self.checkpoint, self.catalogue.reps.shape[1])
        except ScorerError as exc:
            raise ServingError(422, "scorer", str(exc)) from None
        if compiled is None:
            return float("nan")
        user, context, cat = self.user_features(-1, {}), self.context_features({}), self.catalogue
        worst = 0.0
        for history, candidates in canary_requests(list(cat.row_of), self.feature_map.max_history):
            eager = self._score_with(None, user, context, history, candidates, cat)
            fast = self._score_with(compiled, user, context, history, candidates, cat)
            worst = max(worst, float(np.abs(fast - eager).max()))
        if worst <= TOLERANCE:
            self.compiled = compiled
            return worst
        message = f"compiled scorer ({compiled.origin}) differs from the eager model by {worst:.2e} > {TOLERANCE:g}"
        if compiled.origin == "exported at load time":
            log.warning("serve.scorer onnx: %s; scoring with the eager model", message)
            return worst
        raise ServingError(422, "scorer", message)

    def canary(self) -> None:
        """Score a few items for a user without and with history; refuse non-finite or out-of-range output."""
        ids = list(self.catalogue.row_of)[:8]
        if not ids:
            raise ServingError(422, "checkpoint", "the catalogue is empty")
        for history in ([], ids[:3]):
            probs = self.score(self.user_features(-1, {}), self.context_features({}), history, ids)
            if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
                raise ServingError(422, "checkpoint", f"canary batch gave invalid probabilities {probs.tolist()}")

    # ---------------------------------------------------------------- items
    @property
    def feature_map(self) -> FeatureMap:
        return self.checkpoint.feature_map

    @property
    def model(self) -> ScoringModel:
        """The checkpoint's model (checked servable when loaded)."""
        model = self.checkpoint.model
        assert isinstance(model, ScoringModel)
        return model

    def attribute_fields(self) -> dict[str, str]:
        """Item attribute name -> 'categorical' | 'list' (what POST /v1/items accepts)."""
        fm = self.feature_map
        out = {f.name: "categorical" for f in fm.by("item", "categorical") if f.name != "item_id"}
        return out | {f.name: "list" for f in fm.by("item", "list")}

    def add_items(self, items: list[StoredItem], vectors: dict[int, dict[tuple[str, str], np.ndarray]]) -> None:
        """Compute and cache the representations of registered items (new ids, or updates of known ones)."""
        if not items:
            return
        fm, table = self.feature_map, self.checkpoint.item_table
        fields = self.attribute_fields()
        columns: dict[str, pl.Series] = {"item_id": pl.Series("item_id", [it.item_id for it in items], dtype=pl.Int64)}
        for name, kind in fields.items():
            values = [it.attributes.get(name) for it in items]
            if kind == "list":
                columns[name] = pl.Series(name, [[str(v) for v in (x or [])] for x in values], dtype=pl.List(pl.String))
            else:
                columns[name] = _categorical_series(name, values)
        frame = pl.DataFrame(columns)
        per_modality = {}
        for modality, dim in table.encoder_dims().items():
            fingerprint = self.encoders.fingerprint(modality)
            found = [(it.item_id, vectors.get(it.item_id, {}).get((modality, fingerprint))) for it in items]
            usable = [(i, v) for i, v in found if v is not None and len(v) == dim]
            per_modality[modality] = _Vectors(
                np.array([i for i, _ in usable], dtype=np.int64),
                np.stack([v for _, v in usable]).astype(np.float32) if usable else np.zeros((0, dim), np.float32),
            )
        new_table = build_item_table(frame, fm, per_modality, fitted=table)
        with torch.inference_mode():
            computed = self.model.item_representations(
                torch.arange(1, len(items) + 1), ItemInputs.from_table(new_table)
            )
        reps, shares = computed.rep, computed.attention
        if not torch.isfinite(reps).all():
            raise ServingError(422, "item", "non-finite item representation", [it.item_id for it in items][:20])
        with self._write_lock:
            old = self.catalogue
            buffer, n = old.reps, old.n
            if n + len(items) > len(buffer):
                grown = torch.empty((max(2 * len(buffer), n + len(items)), buffer.shape[1]), dtype=buffer.dtype)
                grown[:n] = buffer[:n]
                buffer = grown
            buffer[n : n + len(items)] = reps  # rows beyond the old snapshot's n: nobody reads them yet
            row_of = dict(old.row_of)
            for k, it in enumerate(items):
                row_of[it.item_id] = n + k
                present = [m for m in new_table.modalities if new_table.masks[m][k + 1]]
                self.registered[it.item_id] = ItemInfo(
                    it.item_id,
                    "registered",
                    present,
                    bool(new_table.id_index[k + 1] == OOV),
                    None if shares is None else tuple(shares[k].tolist()),
                )
            self.catalogue = Catalogue(buffer, row_of, n + len(items))

    def item_info(self, item_id: int) -> ItemInfo | None:
        if item_id in self.registered:
            return self.registered[item_id]
        table = self.checkpoint.item_table
        row = table._row_of.get(item_id)
        if row is None:
            return None
        return ItemInfo(
            item_id, "catalogue", [m for m in table.modalities if table.masks[m][row]], bool(table.id_index[row] == OOV)
        )

    @property
    def share_names(self) -> list[str]:
        """The modalities of :meth:`modality_shares`, in order ([] for a model without modal attention)."""
        return list(getattr(self.model, "modalities", []))

    def modality_shares(self, item_ids: list[int]) -> list[dict[str, float]] | None:
        """Each item's share of its representation per modality under modal attention (``|a_m s_m|`` normalised,
        as ``recsys evaluate`` reports them; 0 for an absent modality), computed by the model's item encoder
        from the item table; None for a model without modal attention. Unknown ids: 422 naming them."""
        names, table = self.share_names, self.checkpoint.item_table
        self.catalogue.rows(item_ids, "candidates")
        rows = [0 if i in self.registered else table._row_of[i] for i in item_ids]
        with torch.inference_mode():
            computed = self.model.item_representations(torch.tensor(rows), ItemInputs.from_table(table)).attention
        if computed is None or computed.shape[1] != len(names):
            return None
        out = []
        for item_id, values in zip(item_ids, computed.tolist()):
            info = self.registered.get(item_id)
            if info is not None:
                values = list(info.shares or [0.0] * len(names))
            out.append({m: round(v, 6) for m, v in zip(names, values)})
        return out

    # ---------------------------------------------------------------- request features
    def user_features(self, user_id: int, attributes: dict) -> np.ndarray:
        """(U,) user field indices (:func:`recsys.features.examples.encode_request_user`)."""
        return encode_request_user(self.feature_map, user_id, attributes)

    def context_features(self, context: dict) -> tuple[np.ndarray, np.ndarray]:
        """(C,) categorical indices and (K,) standardised numbers (``encode_request_context``); 422 naming the
        field for an unknown field or a non-finite number."""
        try:
            return encode_request_context(self.feature_map, context)
        except RequestFeatureError as exc:
            raise ServingError(422, exc.field, exc.message) from None

    # ---------------------------------------------------------------- scoring
    def score(
        self,
        user: np.ndarray,
        context: tuple[np.ndarray, np.ndarray],
        history: list[int],
        candidates: list[int],
        catalogue: Catalogue | None = None,
    ) -> np.ndarray:
        """Click probabilities of ``candidates`` (item ids) for one user, history oldest first."""
        return self._score_with(self.compiled, user, context, history, candidates, catalogue or self.catalogue)

    @property
    def scorer_name(self) -> str:
        """What scores requests: "onnx" (the compiled scorer) or "eager" (the model itself)."""
        return self.compiled.name if self.compiled is not None else "eager"

    def _score_with(
        self,
        compiled: CompiledScorer | None,
        user: np.ndarray,
        context: tuple[np.ndarray, np.ndarray],
        history: list[int],
        candidates: list[int],
        cat: Catalogue,
    ) -> np.ndarray:
        """:meth:`score` with ``compiled`` (None: the eager model)."""
        cand_rows = cat.rows(candidates, "candidates")
        recent = recent_history(history, self.feature_map.max_history)
        hist_rows = cat.rows(recent, "history") if recent else np.zeros(0, np.int64)
        if compiled is not None:
            reps = cat.reps.numpy()
            return compiled(user, context, reps[hist_rows], reps[cand_rows])
        # Only the real history positions: padding has weight exactly 0 in every sequence encoder
        # (and carries the GRU state through), so a short history costs less and scores the same.
        # One padded position stands for an empty history.
        if not len(hist_rows):
            hist_rows = np.zeros(1, np.int64)
        hist_mask = np.full(len(hist_rows), bool(recent))
        categorical, numeric = context
        with torch.inference_mode():
            side = UserSide.one_user(
                torch.from_numpy(user),
                torch.from_numpy(categorical),
                torch.from_numpy(numeric),
                cat.reps[torch.from_numpy(hist_rows)],  # (L, D)
                torch.from_numpy(hist_mask),
            )
            logits = self.model.score_candidates(side, cat.reps[torch.from_numpy(cand_rows)])  # candidates (B, D)
            return torch.sigmoid(logits).numpy()


def export_scorer(checkpoint_dir: str | Path) -> tuple[Path, float]:
    """`recsys export`: write the checkpoint's compiled scorer (``scorer.onnx``, ``scorer.json``) and load it back
    as the service would; its path and the largest difference from the eager model on the canary requests."""
    missing = runtime_missing()
    if missing is not None:  # checked first: an artefact that cannot be checked here is not written
        raise RecsysError(f"recsys export: ONNX Runtime cannot be imported ({missing}); nothing written")
    served = ServedModel.load(checkpoint_dir)
    path = write_artefact(served.checkpoint, served.catalogue.reps.shape[1])
    worst = served.compile()  # reads the artefact back: ServingError when it does not score as the model does
    return path, worst


@dataclass
class _Vectors:
    item_ids: np.ndarray
    vectors: np.ndarray


def _categorical_series(name: str, values: list) -> pl.Series:
    """Raw categorical values as a polars column, as they would come from a Parquet file."""
    try:
        return pl.Series(name, values)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):  # mixed types: compare as text
        return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)
