"""The tiny dataset (tests/support/tiny.py) as a dataset directory: precomputed vectors, no media, no encoders.

Clicks carry a learnable signal (a user preference dotted with the item's "image" vector) and a
``true_prob`` column, so evaluation reports an oracle. Training on it takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import yaml

from recsys.config import ExperimentConfig
from support.tiny import make_tiny
from training.launch import TrainResult


def write_tiny_dataset(root: Path, seed: int = 0, n_users: int = 40, n_items: int = 32, n_rows: int = 3000) -> Path:
    """Write ``root/data`` (the dataset) and ``root/tiny.yaml`` (its config); returns the config path."""
    tiny = make_tiny(n_items=n_items, n_users=n_users, n_rows=n_rows, seed=seed)
    rng = np.random.default_rng(seed + 1)
    data = root / "data"
    (data / "item_features").mkdir(parents=True, exist_ok=True)
    inter = tiny.interactions
    rows = tiny.table.rows(inter["item_id"].to_numpy())
    image = tiny.table.vectors["image"]
    prefs = rng.normal(size=(n_users, image.shape[1]))
    user_index = inter["user_id"].to_numpy() - tiny.users["user_id"].min()
    logit = 1.5 * (prefs[user_index] * image[rows]).sum(axis=1) / np.sqrt(image.shape[1]) - 0.5
    true_prob = 1.0 / (1.0 + np.exp(-logit))
    inter = inter.with_columns(
        pl.Series("true_prob", true_prob), pl.Series("label", (rng.random(len(true_prob)) < true_prob).astype(np.int8))
    )
    inter.write_parquet(data / "interactions.parquet")
    tiny.items.write_parquet(data / "items.parquet")
    tiny.users.write_parquet(data / "users.parquet")
    for modality, vectors in tiny.table.vectors.items():
        present = tiny.table.masks[modality][1:]
        pl.DataFrame(
            {
                "item_id": tiny.table.item_ids[present],
                "vector": pl.Series(vectors[1:][present].tolist(), dtype=pl.List(pl.Float32)),
            }
        ).write_parquet(data / "item_features" / f"{modality}.parquet")
    config = tiny.config.model_dump(mode="json")
    config["data"] = {"path": str(data), "split": {"method": "column"}}
    config["encoders"].update({"title": None, "image": None, "audio": None, "cache_dir": str(root / "cache")})
    config["train"].update(
        {"epochs": 1, "batch_size": 256, "workers": 1, "max_failures": 0, "storage_path": str(root / "runs"), "seed": 0}
    )
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_without_ray(config: ExperimentConfig, data_dir: Path, run_dir: Path, steps: int = 20) -> TrainResult:
    """A stand-in for ``training.launch.run_training`` without Ray: the same files, a few SGD steps
    (:func:`training.step.train_step`).

    Writes ``run_dir/prepared`` and a ``run_dir/best`` checkpoint and returns a TrainResult.
    """
    import torch

    from recsys.checkpoint import save_checkpoint
    from recsys.features.item_table import ItemInputs
    from recsys.features.predict import predict
    from recsys.features.prepare import prepare_data
    from recsys.features.prepared import PreparedDir
    from recsys.metrics import compute_metrics
    from recsys.models import build_model
    from training.step import train_step

    prepared = prepare_data(config, data_dir, validate=False)
    PreparedDir.of_run(run_dir).write(prepared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: more threads only contend (as in the Ray workers)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, prepared.feature_map, prepared.item_table.dims())
    items = ItemInputs.from_table(prepared.item_table)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # plain SGD: a few steps must already learn
    train, valid = prepared.examples.split("train"), prepared.examples.split("valid")
    batches = train.batches(256, shuffle=True, seed=config.train.seed)
    model.train()
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = train.batches(256, shuffle=True, seed=config.train.seed + 1)
            batch = next(batches)
        train_step(model, batch, items, optimizer, config.model)
    torch.set_num_threads(threads)
    probs = predict(model, items, [valid.batch()]).probs
    val = {
        f"val_{k}": float(v) for k, v in compute_metrics(valid.meta["user_id"], valid.arrays["label"], probs).items()
    }
    report = {**val, "epoch": 1, "step": steps, "samples_per_s": 1000.0}
    save_checkpoint(run_dir / "best", model, config, prepared.feature_map, prepared.item_table, metrics=report)
    return TrainResult(run_dir, run_dir / "best", run_dir / "best", report, [report], PreparedDir.of_run(run_dir).path)
