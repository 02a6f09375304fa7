"""Raw rows -> model-ready arrays: the one path shared by training, evaluation and serving.

:func:`build_examples` turns interactions into :class:`Examples` (the arrays of a
:class:`~recsys.features.batch.Batch` plus evaluation metadata). The user and context layout is
defined once, here: :func:`encode_users` / :func:`encode_context` encode whole columns, and
:func:`encode_request_user` / :func:`encode_request_context` encode the one user and context of a
scoring request with the same vocabularies, in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.errors import RecsysError
from recsys.features.batch import Batch
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemTable
from recsys.features.sequences import build_behaviour_sequences


@dataclass
class Examples:
    """Model inputs (the arrays of :data:`~recsys.features.batch.BATCH_FIELDS`) plus raw columns kept for
    evaluation (``meta``)."""

    arrays: dict[str, np.ndarray]
    meta: pl.DataFrame  # user_id, item_id, split, (true_prob), is_cold, is_cold_user

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def subset(self, rows: np.ndarray | pl.Series) -> Examples:
        rows = np.asarray(rows)
        return Examples({k: v[rows] for k, v in self.arrays.items()}, self.meta[rows])

    def split(self, name: str) -> Examples:
        return self.subset(np.flatnonzero(self.meta["split"].to_numpy() == name))

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        """Mini-batches (the last one may be smaller)."""
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            yield Batch.from_columns({k: v[idx] for k, v in self.arrays.items()})

    def batch(self) -> Batch:
        """Every example as one batch."""
        return Batch.from_columns(self.arrays)


class RequestFeatureError(RecsysError):
    """A value of a scoring request that cannot be encoded; ``field`` names it (e.g. ``context.hour``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def user_attribute_names(feature_map: FeatureMap) -> list[str]:
    """The user's categorical fields after ``user_id``, in the order of the ``user`` batch field."""
    return [f.name for f in feature_map.by("user", "categorical") if f.name != "user_id"]


def context_field_kinds(feature_map: FeatureMap) -> dict[str, str]:
    """Context field name -> ``categorical`` | ``numeric`` (what a scoring request may send)."""
    categorical = {f.name: "categorical" for f in feature_map.by("context", "categorical")}
    return categorical | {f.name: "numeric" for f in feature_map.by("context", "numeric")}


def encode_users(users: pl.DataFrame | None, user_ids: pl.Series, feature_map: FeatureMap) -> np.ndarray:
    """(N, U) user field indices for ``user_ids``: user_id, then the user_categorical fields."""
    columns = [feature_map.encode_categorical("user_id", user_ids)]
    extra = user_attribute_names(feature_map)
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


def encode_request_user(feature_map: FeatureMap, user_id: int, attributes: Mapping[str, object]) -> np.ndarray:
    """(U,) the one user of a request: the layout and vocabularies of :func:`encode_users`, one value at a time
    (:meth:`FeatureMap.encode_value`); a missing attribute is OOV, as a user absent from users.parquet."""
    values = [feature_map.encode_value(name, attributes.get(name)) for name in user_attribute_names(feature_map)]
    return np.array([feature_map.encode_value("user_id", user_id), *values], dtype=np.int64)


def encode_request_context(feature_map: FeatureMap, context: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
    """(C,) categorical indices and (K,) standardised numbers of one request: the layout of :func:`encode_context`.

    Raises :class:`RequestFeatureError` for a field the feature map does not know and for a numeric
    value that is not a finite number (a missing or null one is the training mean, as in training).
    """
    kinds = context_field_kinds(feature_map)
    unknown = sorted(set(context) - set(kinds))
    if unknown:
        raise RequestFeatureError(
            "context", f"unknown field(s) {unknown}; this model's context fields: {sorted(kinds)}"
        )
    numeric = []
    for f in feature_map.by("context", "numeric"):
        value = context.get(f.name)
        number = _finite_number(value)
        if value is not None and number is None:
            raise RequestFeatureError(f"context.{f.name}", f"must be a finite number or null, got {value!r}")
        numeric.append(feature_map.standardise(f.name, number))
    categorical = [
        feature_map.encode_value(f.name, context.get(f.name)) for f in feature_map.by("context", "categorical")
    ]
    return np.array(categorical, dtype=np.int64), np.array(numeric, dtype=np.float32)


def _finite_number(value: object) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if np.isfinite(number) else None


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
    train_users = interactions.filter(pl.col("split") == "train")["user_id"].unique().implode()
    meta = interactions.select(meta_cols).with_columns(
        pl.Series("is_cold", item_table.id_index[item_rows] == 1),  # the item id was not seen in training
        (~pl.col("user_id").is_in(train_users)).alias("is_cold_user"),  # the user has no training rows
    )
    return Examples(arrays, meta)
