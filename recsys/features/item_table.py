"""The item table: every catalogue item's model inputs, so that batches carry item rows only.

Row 0 is padding (used by behaviour sequences); item ``item_ids[r]`` lives at row ``r + 1``.
Per item it holds the feature-map index of its id (OOV for items unseen in training: cold
items), its categorical and list attributes, and for every content modality the frozen vector
(standardised per dimension, and with ``features.content_dim`` projected onto its first principal
components) and a presence mask. The model gathers from it by row.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import torch

from recsys.errors import RecsysError
from recsys.features.feature_map import FeatureMap


def _tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` without a copy, also of a read-only array (an item table shared through Ray's object
    store, see ``training/launch.py``): the tensors are read, never written."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


FORMAT_VERSION = 1


class HasVectors(Protocol):
    """What the encoders hand over per modality (see recsys.encoders.pipeline)."""

    item_ids: np.ndarray
    vectors: np.ndarray


@dataclass
class ItemTable:
    """Model inputs of every item; see the module docstring for the row layout."""

    item_ids: np.ndarray  # (N,) int64
    id_index: np.ndarray  # (N+1,) int64, feature-map index of item_id
    categorical: np.ndarray  # (N+1, C) int64, item_categorical fields in feature-map order
    lists: dict[str, np.ndarray]  # name -> (N+1, W) int64, 0-padded
    vectors: dict[str, np.ndarray]  # modality -> (N+1, dim) float32, zeros where absent
    masks: dict[str, np.ndarray]  # modality -> (N+1,) bool
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # modality -> (mean, std)
    # modality -> (encoder width, content_dim) float32, applied after standardisation; absent: full width
    projections: dict[str, np.ndarray] = field(default_factory=dict)
    # (N+1,) int64: the item's training rows (how established its id is; 0 for cold items and padding)
    train_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._row_of = {int(i): r + 1 for r, i in enumerate(self.item_ids)}
        if self.train_rows is None:
            self.train_rows = np.zeros(len(self.item_ids) + 1, np.int64)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def modalities(self) -> list[str]:
        return list(self.vectors)

    def dims(self) -> dict[str, int]:
        """Per modality, the width of the vectors the model reads (projected where projected)."""
        return {m: int(v.shape[1]) for m, v in self.vectors.items()}

    def encoder_dims(self) -> dict[str, int]:
        """Per modality, the width of the encoders' vectors (what serving accepts for a new item)."""
        return {m: int(self.projections[m].shape[0]) if m in self.projections else d for m, d in self.dims().items()}

    def rows(self, item_ids: np.ndarray | list[int], what: str = "item_id") -> np.ndarray:
        """Raw item ids -> table rows; unknown ids raise a RecsysError naming them."""
        ids = np.asarray(item_ids, dtype=np.int64)
        rows = np.fromiter((self._row_of.get(int(i), -1) for i in ids.ravel()), dtype=np.int64, count=ids.size)
        if (rows < 0).any():
            unknown = sorted({int(i) for i in ids.ravel()[rows < 0]})
            raise RecsysError(f"{what}: {len(unknown)} unknown item id(s): {unknown[:10]}")
        return rows.reshape(ids.shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything as tensors, flat-keyed (``vector.<m>``, ``mask.<m>``, ``list.<name>``)."""
        assert self.train_rows is not None  # set in __post_init__
        out = {
            "id_index": _tensor(self.id_index),
            "categorical": _tensor(self.categorical),
            "train_rows": _tensor(self.train_rows),
        }
        for name, arr in self.lists.items():
            out[f"list.{name}"] = _tensor(arr)
        for m in self.vectors:
            out[f"vector.{m}"] = _tensor(self.vectors[m])
            out[f"mask.{m}"] = _tensor(self.masks[m])
        return out

    def projected(self, projections: Mapping[str, np.ndarray]) -> ItemTable:
        """This (unprojected) table with each listed modality's vectors projected ((width, k) matrices,
        e.g. from :func:`fit_projections`); missing modalities stay zero, other modalities unchanged."""
        if self.projections and projections:
            raise ValueError(f"the item table is already projected ({sorted(self.projections)})")
        vectors = dict(self.vectors)
        for m, projection in projections.items():
            vectors[m] = np.where(self.masks[m][:, None], self.vectors[m] @ projection, 0.0).astype(np.float32)
        return replace(self, vectors=vectors, projections=dict(projections) or dict(self.projections))

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Save as a plain dict of tensors and lists (loadable with ``weights_only=True``)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "item_ids": _tensor(self.item_ids),
            "id_index": _tensor(self.id_index),
            "categorical": _tensor(self.categorical),
            "lists": {k: _tensor(v) for k, v in self.lists.items()},
            "vectors": {k: _tensor(v) for k, v in self.vectors.items()},
            "masks": {k: _tensor(v) for k, v in self.masks.items()},
            "stats": {k: (_tensor(m), _tensor(s)) for k, (m, s) in self.stats.items()},
            "projections": {k: _tensor(v) for k, v in self.projections.items()},
            "train_rows": _tensor(self.train_rows) if self.train_rows is not None else None,
        }
        torch.save(payload, path)

    @classmethod
    def load(cls, path: str | Path) -> ItemTable:
        try:
            p = torch.load(path, weights_only=True, map_location="cpu")
            if p.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {p.get('format_version')!r}, expected {FORMAT_VERSION}")
            return cls(
                item_ids=p["item_ids"].numpy(),
                id_index=p["id_index"].numpy(),
                categorical=p["categorical"].numpy(),
                lists={k: v.numpy() for k, v in p["lists"].items()},
                vectors={k: v.numpy() for k, v in p["vectors"].items()},
                masks={k: v.numpy() for k, v in p["masks"].items()},
                stats={k: (m.numpy(), s.numpy()) for k, (m, s) in p["stats"].items()},
                projections={k: v.numpy() for k, v in p.get("projections", {}).items()},
                train_rows=p["train_rows"].numpy() if p.get("train_rows") is not None else None,
            )
        except FileNotFoundError:
            raise RecsysError(f"{path}: item table not found") from None
        except Exception as exc:  # truncated/corrupt file: torch raises several types
            raise RecsysError(f"{path}: cannot load the item table ({type(exc).__name__}: {exc})") from None


def _standardise(
    vectors: np.ndarray, present: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-dimension standardisation over the items that have a vector (frozen features vary wildly in scale).

    With ``stats`` (mean, std) fitted earlier, those are applied instead of fitting new ones.
    """
    if stats is not None:
        mean, std = stats
    elif present.any():
        mean = vectors[present].mean(axis=0)
        std = vectors[present].std(axis=0)
    else:
        mean, std = np.zeros(vectors.shape[1], np.float32), np.ones(vectors.shape[1], np.float32)
    std = np.where(std > 1e-6, std, 1.0)
    out = np.where(present[:, None], (vectors - mean) / std, 0.0).astype(np.float32)
    return out, mean.astype(np.float32), std.astype(np.float32)


def fit_projection(vectors: np.ndarray, present: np.ndarray, dim: int, max_rows: int = 200_000) -> np.ndarray | None:
    """(d, dim) projection onto the first ``dim`` principal components of the present rows of standardised
    ``vectors``, scaled so the projected values have mean variance 1 per dimension (the geometry, and so
    cosine similarities, of the leading components is kept). None where ``dim`` >= d (nothing to save).

    Fitted on the item content alone (no labels), over the whole catalogue so that cold items share the
    basis; beyond ``max_rows`` items on an evenly spaced sample. Signs are fixed (largest loading
    positive), so the same vectors give the same projection.
    """
    d = vectors.shape[1]
    if dim >= d:
        return None
    x = vectors[present].astype(np.float64)
    if len(x) > max_rows:
        x = x[np.linspace(0, len(x) - 1, max_rows).astype(np.int64)]
    if len(x) < 2:
        return np.eye(d, dim, dtype=np.float32)
    x = x - x.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(x.T @ x / (len(x) - 1))  # ascending
    top = eigvec[:, ::-1][:, :dim]
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(dim)])
    variance = float(np.clip(eigval[::-1][:dim], 0, None).mean())
    return (top / np.sqrt(variance if variance > 1e-12 else 1.0)).astype(np.float32)


def fit_projections(table: ItemTable, content_dim: int) -> dict[str, np.ndarray]:
    """Per modality of an unprojected ``table``, :func:`fit_projection` to ``content_dim`` (where it saves width)."""
    fitted = {m: fit_projection(table.vectors[m][1:], table.masks[m][1:], content_dim) for m in table.modalities}
    return {m: p for m, p in fitted.items() if p is not None}


def item_train_rows(train: pl.DataFrame) -> dict[int, int]:
    """Item id -> its number of rows in ``train`` (the interactions' training split): ``train_rows``."""
    return {int(i): int(n) for i, n in train.group_by("item_id").len().iter_rows()}


def build_item_table(
    items: pl.DataFrame,
    feature_map: FeatureMap,
    modality_vectors: Mapping[str, HasVectors],
    fitted: ItemTable | None = None,
    content_dim: int | None = None,
    train_rows: Mapping[int, int] | None = None,
) -> ItemTable:
    """Assemble the table for every item of ``items`` (the whole catalogue, cold items included).

    ``content_dim`` projects each modality's standardised vectors onto their first principal
    components (:func:`fit_projection`; ``features.content_dim``). ``fitted``, an existing table,
    transforms with its statistics and projections instead of fitting new ones: how serving builds
    rows for items registered after training (see ``ItemTable.stats``, ``ItemTable.projections``).
    ``train_rows`` (item id -> training rows) says how established each item is; without it a
    ``fitted`` table's counts are kept for the items it knows, and every other item has 0.
    """
    item_ids = items["item_id"].to_numpy().astype(np.int64)
    n = len(item_ids)

    def padded(arr: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1, *arr.shape[1:]), dtype=arr.dtype), arr])

    id_index = padded(feature_map.encode_categorical("item_id", items["item_id"]))
    cat_fields = feature_map.by("item", "categorical")[1:]  # [0] is item_id itself
    categorical = padded(
        np.stack([feature_map.encode_categorical(f.name, items[f.name]) for f in cat_fields], axis=1)
        if cat_fields
        else np.zeros((n, 0), np.int64)
    )
    lists = {f.name: padded(feature_map.encode_list(f.name, items[f.name])) for f in feature_map.by("item", "list")}
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    vectors, masks, stats = {}, {}, {}
    for name, mv in modality_vectors.items():
        dim = int(mv.vectors.shape[1])
        dense = np.zeros((n, dim), np.float32)
        present = np.zeros(n, bool)
        for iid, vec in zip(mv.item_ids.tolist(), mv.vectors):
            r = row_of.get(int(iid))
            if r is not None:
                dense[r], present[r] = vec, True
        dense, mean, std = _standardise(dense, present, None if fitted is None else fitted.stats[name])
        vectors[name], masks[name], stats[name] = padded(dense), padded(present), (mean, std)
    if train_rows is None and fitted is not None:
        assert fitted.train_rows is not None
        train_rows = {int(i): int(fitted.train_rows[r + 1]) for r, i in enumerate(fitted.item_ids)}
    counts = padded(np.array([(train_rows or {}).get(int(i), 0) for i in item_ids], dtype=np.int64))
    table = ItemTable(item_ids, id_index, categorical, lists, vectors, masks, stats, train_rows=counts)
    if fitted is not None:
        return table.projected(fitted.projections)
    return table if content_dim is None else table.projected(fit_projections(table, content_dim))


class ItemInputs:
    """The item table's tensors on one device; the model gathers item content from it by row."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    @classmethod
    def from_table(cls, table: ItemTable, device: torch.device | str = "cpu") -> ItemInputs:
        return cls({k: v.to(device) for k, v in table.tensors().items()})

    def to(self, device: torch.device | str) -> ItemInputs:
        return ItemInputs({k: v.to(device) for k, v in self.tensors.items()})

    @property
    def id_index(self) -> torch.Tensor:
        return self.tensors["id_index"]  # (N+1,)

    @property
    def categorical(self) -> torch.Tensor:
        return self.tensors["categorical"]  # (N+1, C)

    def list(self, name: str) -> torch.Tensor:
        return self.tensors[f"list.{name}"]  # (N+1, W)

    def vector(self, modality: str) -> torch.Tensor:
        return self.tensors[f"vector.{modality}"]  # (N+1, dim)

    def mask(self, modality: str) -> torch.Tensor:
        return self.tensors[f"mask.{modality}"]  # (N+1,)

    @property
    def train_rows(self) -> torch.Tensor:
        return self.tensors["train_rows"]  # (N+1,)
