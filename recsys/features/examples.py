"""Raw interactions -> model-ready arrays: the one path shared by training, evaluation and serving.

An example carries ids only: the candidate's item-table row, the behaviour sequence as rows,
user and context categorical indices, standardised numeric context, and the label. Item
content is gathered from the :class:`~recsys.features.item_table.ItemTable` inside the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemTable
from recsys.features.sequences import build_behaviour_sequences

#: Arrays a model batch is made of, with their dtype.
BATCH_KEYS = {
    "item": np.int64,  # (N,) candidate rows
    "hist": np.int64,  # (N, L) behaviour rows, 0 = padding, newest last
    "hist_mask": np.bool_,  # (N, L)
    "user": np.int64,  # (N, U) user_id + user_categorical indices
    "context": np.int64,  # (N, C) context_categorical indices
    "numeric": np.float32,  # (N, K) standardised context_numeric
    "label": np.float32,  # (N,)
}


@dataclass
class Examples:
    """Model inputs (``BATCH_KEYS``) plus raw columns kept for evaluation (``meta``)."""

    arrays: dict[str, np.ndarray]
    meta: pl.DataFrame  # user_id, item_id, split, (true_prob), is_cold

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def subset(self, rows: np.ndarray | pl.Series) -> Examples:
        rows = np.asarray(rows)
        return Examples({k: v[rows] for k, v in self.arrays.items()}, self.meta[rows])

    def split(self, name: str) -> Examples:
        return self.subset(np.flatnonzero(self.meta["split"].to_numpy() == name))

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Mini-batches as tensors (the last one may be smaller)."""
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            yield {k: torch.from_numpy(v[idx]) for k, v in self.arrays.items()}


def encode_users(users: pl.DataFrame | None, user_ids: pl.Series, feature_map: FeatureMap) -> np.ndarray:
    """(N, U) user field indices for ``user_ids``: user_id, then the user_categorical fields."""
    fields = feature_map.by("user", "categorical")
    columns = [feature_map.encode_categorical("user_id", user_ids)]
    extra = [f.name for f in fields if f.name != "user_id"]
    if extra:
        assert users is not None
        joined = pl.DataFrame({"user_id": user_ids}).join(
            users.select(["user_id", *extra]), on="user_id", how="left", maintain_order="left"
        )
        columns += [feature_map.encode_categorical(name, joined[name]) for name in extra]
    return np.stack(columns, axis=1)


def encode_context(frame: pl.DataFrame, feature_map: FeatureMap) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) categorical context indices and (N, K) standardised numeric context."""
    n = frame.height
    cat = [feature_map.encode_categorical(f.name, frame[f.name]) for f in feature_map.by("context", "categorical")]
    num = [feature_map.encode_numeric(f.name, frame[f.name]) for f in feature_map.by("context", "numeric")]
    return (
        np.stack(cat, axis=1) if cat else np.zeros((n, 0), np.int64),
        np.stack(num, axis=1) if num else np.zeros((n, 0), np.float32),
    )


def build_examples(
    interactions: pl.DataFrame, users: pl.DataFrame | None, feature_map: FeatureMap, item_table: ItemTable
) -> Examples:
    """Examples for every row of ``interactions`` (all splits: histories need earlier splits' clicks).

    ``interactions`` must carry a ``split`` column (see :func:`recsys.features.splits.assign_splits`).
    """
    hist_ids, hist_mask = build_behaviour_sequences(interactions, feature_map.max_history)
    hist_rows = np.where(hist_mask, item_table.rows(np.where(hist_mask, hist_ids, item_table.item_ids[0])), 0)
    context, numeric = encode_context(interactions, feature_map)
    item_rows = item_table.rows(interactions["item_id"].to_numpy(), what="interactions.item_id")
    arrays = {
        "item": item_rows,
        "hist": hist_rows.astype(np.int64),
        "hist_mask": hist_mask,
        "user": encode_users(users, interactions["user_id"], feature_map),
        "context": context,
        "numeric": numeric,
        "label": interactions["label"].cast(pl.Float32).to_numpy(),
    }
    meta_cols = ["user_id", "item_id", "split"] + (["true_prob"] if "true_prob" in interactions.columns else [])
    meta = interactions.select(meta_cols).with_columns(pl.Series("is_cold", item_table.id_index[item_rows] == 1))
    return Examples(arrays, meta)


def field_widths(feature_map: FeatureMap) -> dict[str, int]:
    """Real widths of the 2-D per-example fields (stored Parquet columns are at least 1 wide)."""
    return {
        "user": len(feature_map.by("user", "categorical")),
        "context": len(feature_map.by("context", "categorical")),
        "numeric": len(feature_map.by("context", "numeric")),
    }


def model_batch(columns: dict[str, torch.Tensor], widths: dict[str, int]) -> dict[str, torch.Tensor]:
    """Columns read back from prepared Parquet -> the model's batch (``BATCH_KEYS``), empty fields trimmed."""
    out = {k: columns[k] for k in BATCH_KEYS}
    for key, width in widths.items():
        out[key] = out[key][:, :width]
    return out
