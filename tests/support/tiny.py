"""A tiny in-memory dataset (no media, no encoders) for fast model and pipeline tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.config import ExperimentConfig
from recsys.features.examples import Examples, build_examples
from recsys.features.feature_map import FeatureMap, fit_feature_map
from recsys.features.item_table import ItemTable, build_item_table, item_train_rows


@dataclass
class Vectors:
    item_ids: np.ndarray
    vectors: np.ndarray


@dataclass
class Tiny:
    config: ExperimentConfig
    items: pl.DataFrame
    users: pl.DataFrame
    interactions: pl.DataFrame
    feature_map: FeatureMap
    table: ItemTable
    examples: Examples


def tiny_config(**model: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "features": {
                "user_categorical": ["gender"],
                "item_categorical": ["dept"],
                "item_list": ["tags"],
                "context_categorical": ["device"],
                "context_numeric": ["price"],
                "max_history": 5,
            },
            "model": {
                "embedding_dim": 8,
                "item_dim": 16,
                "mlp_hidden": [32],
                "dropout": 0.0,
                "id_dropout": 0.0,
                **model,
            },
        }
    )


def make_tiny(n_items: int = 24, n_users: int = 12, n_rows: int = 400, seed: int = 0, **model: object) -> Tiny:
    """Items 1..n_items (the last quarter only in test: cold), two content modalities, some missing."""
    rng = np.random.default_rng(seed)
    item_ids = np.arange(1, n_items + 1)
    items = pl.DataFrame(
        {
            "item_id": item_ids,
            "dept": rng.choice(["a", "b", "c"], n_items),
            "tags": [list(rng.choice(["x", "y", "z", "w"], rng.integers(0, 3))) for _ in item_ids],
        }
    )
    users = pl.DataFrame({"user_id": np.arange(100, 100 + n_users), "gender": rng.choice(["F", "M"], n_users)})
    ts = np.sort(rng.integers(0, 10_000, n_rows))
    n_cold = n_items // 4
    warm = item_ids[:-n_cold]
    split = np.where(ts < 8000, "train", np.where(ts < 9000, "valid", "test"))
    item = np.where(split == "test", rng.choice(item_ids, n_rows), rng.choice(warm, n_rows))
    interactions = pl.DataFrame(
        {
            "user_id": rng.choice(users["user_id"].to_numpy(), n_rows),
            "item_id": item,
            "timestamp": ts,
            "label": (rng.random(n_rows) < 0.4).astype(np.int8),
            "split": split,
            "device": rng.choice(["mobile", "desktop"], n_rows),
            "price": rng.normal(10, 3, n_rows),
        }
    )
    config = tiny_config(**model)
    train = interactions.filter(pl.col("split") == "train")
    fm = fit_feature_map(train, items, users, config.features)
    vec_a = Vectors(item_ids, rng.normal(size=(n_items, 6)).astype(np.float32))
    keep = item_ids % 5 != 0  # every fifth item has no "audio"
    vec_b = Vectors(item_ids[keep], rng.normal(size=(int(keep.sum()), 4)).astype(np.float32))
    table = build_item_table(items, fm, {"image": vec_a, "audio": vec_b}, train_rows=item_train_rows(train))
    examples = build_examples(interactions, users, fm, table)
    return Tiny(config, items, users, interactions, fm, table, examples)
