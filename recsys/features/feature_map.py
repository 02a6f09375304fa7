"""The feature map: vocabularies and normalisation fitted on the training split only.

Saved as JSON beside every checkpoint so that training, evaluation and serving turn raw values
into the same indices. Categorical index 0 is padding, 1 the out-of-vocabulary bucket (values
unseen in train, or seen fewer than ``min_count`` times), values start at 2.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from recsys.config import FeaturesConfig
from recsys.errors import RecsysError

PAD, OOV = 0, 1
FORMAT_VERSION = 1

Source = Literal["user", "item", "context"]
Kind = Literal["categorical", "list", "numeric"]


@dataclass
class Field:
    """One feature: where its raw column lives, its kind, and what was fitted."""

    name: str
    source: Source
    kind: Kind
    vocab: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def cardinality(self) -> int:
        """Embedding rows needed: padding + OOV + vocabulary."""
        return len(self.vocab) + 2

    def index_of(self) -> dict[str, int]:
        return {value: i + 2 for i, value in enumerate(self.vocab)}


@dataclass
class FeatureMap:
    """All features of an experiment, in a fixed order, fitted on train."""

    fields: dict[str, Field]
    max_history: int
    max_list_len: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------- selection
    def by(self, source: Source, kind: Kind) -> list[Field]:
        """Fields of one source and kind, in config order."""
        return [f for f in self.fields.values() if f.source == source and f.kind == kind]

    # ---------------------------------------------------------------- encoding
    def _index(self, name: str) -> dict[str, int]:
        """The field's value -> index mapping, built once (vocabularies can hold millions of ids)."""
        cache = self.__dict__.setdefault("_index_cache", {})
        if name not in cache:
            cache[name] = self.fields[name].index_of()
        return cache[name]

    def encode_categorical(self, name: str, values: pl.Series) -> np.ndarray:
        """Raw values -> int64 indices (OOV for unseen, and for nulls)."""
        idx = values.cast(pl.String).replace_strict(self._index(name), default=OOV, return_dtype=pl.Int64)
        return idx.fill_null(OOV).to_numpy()

    def encode_value(self, name: str, value: object) -> int:
        """One raw value -> its index: the mapping of :meth:`encode_categorical` without building a
        column (serving encodes one user and one context per request). Values are compared as
        polars casts them to text: booleans as ``true``/``false``, numbers as written."""
        if value is None:
            return OOV
        key = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return self._index(name).get(key, OOV)

    def standardise(self, name: str, value: float | None) -> float:
        """One raw number -> its standardised value (None/NaN: the training mean, i.e. 0), as :meth:`encode_numeric`."""
        f = self.fields[name]
        x = f.mean if value is None or value != value else float(value)
        return float(np.float32((x - f.mean) / f.std))

    def encode_list(self, name: str, values: pl.Series) -> np.ndarray:
        """A list column -> (N, max_list_len) int64 indices, 0-padded, truncated."""
        f, width = self.fields[name], self.max_list_len[name]
        mapping = f.index_of()
        out = np.zeros((len(values), width), dtype=np.int64)
        for row, items in enumerate(values.to_list()):
            codes = [mapping.get(str(v), OOV) for v in (items or [])][:width]
            out[row, : len(codes)] = codes
        return out

    def encode_numeric(self, name: str, values: pl.Series) -> np.ndarray:
        """Raw numbers -> standardised float32 (nulls become the training mean, i.e. 0)."""
        f = self.fields[name]
        x = values.cast(pl.Float64).fill_null(f.mean).fill_nan(f.mean).to_numpy()
        return ((x - f.mean) / f.std).astype(np.float32)

    # ---------------------------------------------------------------- persistence
    def to_json(self) -> str:
        payload = {
            "format_version": FORMAT_VERSION,
            "max_history": self.max_history,
            "max_list_len": self.max_list_len,
            "fields": [asdict(f) for f in self.fields.values()],
        }
        return json.dumps(payload, indent=1)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            if payload.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
            fields = {f["name"]: Field(**f) for f in payload["fields"]}
            return cls(
                fields=fields, max_history=int(payload["max_history"]), max_list_len=dict(payload["max_list_len"])
            )
        except FileNotFoundError:
            raise RecsysError(f"{path}: feature map not found") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise RecsysError(f"{path}: not a valid feature map ({exc})") from None


def _vocab(counts: pl.DataFrame, min_count: int) -> list[str]:
    """Values seen at least ``min_count`` times, most frequent first (ties by value); ``counts`` is
    (value, n) as :class:`TrainCounts` keeps it."""
    texts = counts.select(pl.col("value").cast(pl.String), "n").group_by("value").agg(pl.col("n").sum())
    kept = texts.filter(pl.col("n") >= min_count).sort(["n", "value"], descending=[True, False])
    return kept["value"].to_list()


def _value_counts(values: pl.Series) -> pl.DataFrame:
    """(value, n) of the non-null values of a column, in the column's dtype."""
    return values.drop_nulls().rename("value").value_counts(name="n").with_columns(pl.col("n").cast(pl.Int64))


@dataclass
class TrainCounts:
    """What fitting the feature map reads from the training rows: per id and context column its values'
    counts, per numeric column (count, mean, sum of squared deviations). Counts of disjoint parts of the
    training rows merge (:meth:`merge`) into the counts of the whole, so the rows can be counted where
    they lie (e.g. one Ray task per user partition, :mod:`recsys.features.prepare_on_ray`)."""

    values: dict[str, pl.DataFrame]  # column -> (value, n)
    numeric: dict[str, tuple[int, float, float]]  # column -> (count, mean, M2)

    @classmethod
    def of(cls, train: pl.DataFrame, config: FeaturesConfig) -> TrainCounts:
        """The counts of ``train`` (training interactions) for the fields ``config`` declares."""
        values = {name: _value_counts(train[name]) for name in ("user_id", "item_id", *config.context_categorical)}
        numeric = {}
        for name in config.context_numeric:
            x = train[name].cast(pl.Float64).drop_nulls()
            n = len(x)
            mean = float(x.mean() or 0.0) if n else 0.0  # type: ignore[arg-type]  # a Float64 column
            m2 = float(((x - mean) ** 2).sum()) if n else 0.0
            numeric[name] = (n, mean, m2)
        return cls(values, numeric)

    @classmethod
    def merge(cls, parts: list[TrainCounts]) -> TrainCounts:
        """The counts of the union of the disjoint row sets ``parts`` were counted on."""
        values = {
            name: pl.concat([p.values[name] for p in parts]).group_by("value").agg(pl.col("n").sum())
            for name in parts[0].values
        }
        numeric = {}
        for name in parts[0].numeric:
            n, mean, m2 = 0, 0.0, 0.0
            for part in parts:  # Chan et al.'s pairwise update
                nb, mb, m2b = part.numeric[name]
                if nb == 0:
                    continue
                delta, total = mb - mean, n + nb
                mean, m2, n = mean + delta * nb / total, m2 + m2b + delta * delta * n * nb / total, total
            numeric[name] = (n, mean, m2)
        return cls(values, numeric)

    def ids(self, name: str) -> pl.Series:
        """Every value of ``name`` in the counted rows (e.g. the training item ids)."""
        return self.values[name]["value"].unique()

    def rows_per_value(self, name: str) -> dict[int, int]:
        """Value -> training rows, for an integer id column (``item_id``: the item table's ``train_rows``)."""
        merged = self.values[name].group_by("value").agg(pl.col("n").sum())
        return {int(v): int(n) for v, n in merged.iter_rows()}


def fit_feature_map(
    train: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame | None, config: FeaturesConfig
) -> FeatureMap:
    """Fit vocabularies and numeric statistics on the TRAINING interactions only (:func:`feature_map_from_counts`)."""
    return feature_map_from_counts(TrainCounts.of(train, config), items, users, config)


def feature_map_from_counts(
    counts: TrainCounts, items: pl.DataFrame, users: pl.DataFrame | None, config: FeaturesConfig
) -> FeatureMap:
    """Vocabularies and numeric statistics from the training rows' :class:`TrainCounts`.

    Item and user attributes are fitted over the items/users that occur in the training rows, so a
    cold item's unseen attribute value falls into the OOV bucket exactly as its id does.
    """
    fields: dict[str, Field] = {}
    train_items = items.filter(pl.col("item_id").is_in(counts.ids("item_id").implode()))
    fields["user_id"] = Field("user_id", "user", "categorical", _vocab(counts.values["user_id"], config.min_count))
    fields["item_id"] = Field("item_id", "item", "categorical", _vocab(counts.values["item_id"], config.min_count))
    if config.user_categorical:
        assert users is not None  # validation guarantees users.parquet when user features are declared
        train_users = users.filter(pl.col("user_id").is_in(counts.ids("user_id").implode()))
        for name in config.user_categorical:
            fields[name] = Field(
                name, "user", "categorical", _vocab(_value_counts(train_users[name]), config.min_count)
            )
    for name in config.item_categorical:
        fields[name] = Field(name, "item", "categorical", _vocab(_value_counts(train_items[name]), config.min_count))
    max_list_len: dict[str, int] = {}
    for name in config.item_list:
        exploded = train_items[name].explode().rename(name)
        fields[name] = Field(name, "item", "list", _vocab(_value_counts(exploded), config.min_count))
        lengths = train_items[name].list.len().drop_nulls()
        # Cap at the 99th percentile: a handful of huge lists should not set every row's width.
        max_list_len[name] = max(1, int(np.percentile(lengths.to_numpy(), 99))) if len(lengths) else 1
    for name in config.context_categorical:
        fields[name] = Field(name, "context", "categorical", _vocab(counts.values[name], config.min_count))
    for name in config.context_numeric:
        n, mean, m2 = counts.numeric[name]
        std = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
        fields[name] = Field(name, "context", "numeric", mean=mean, std=std if std > 1e-12 else 1.0)
    return FeatureMap(fields=fields, max_history=config.max_history, max_list_len=max_list_len)
