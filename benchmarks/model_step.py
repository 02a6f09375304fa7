"""Forward+backward time per training batch and parameter count of every model, side by side.

Default sizes are those of configs/default.yaml (batch 512, history 30, item_dim 64, embedding 32,
MLP [200, 80]) with the default encoders' widths (title 384, image 1280, audio 512) over a
1,500-item catalogue with random content. Run:

    .venv/bin/python benchmarks/model_step.py [--steps 20] [--batch-size 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recsys.config import ExperimentConfig, load_config
from recsys.features.examples import build_examples
from recsys.features.feature_map import fit_feature_map
from recsys.features.item_table import build_item_table
from recsys.losses import total_loss
from recsys.models import MODELS, ItemInputs, build_model

CONTENT_DIMS = {"title": 384, "image": 1280, "audio": 512}


@dataclass
class Vectors:
    item_ids: np.ndarray
    vectors: np.ndarray


def synthetic_inputs(config: ExperimentConfig, n_items: int, n_users: int, n_rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    item_ids = np.arange(1, n_items + 1)
    items = pl.DataFrame({"item_id": item_ids, "department": rng.choice(["a", "b", "c", "d"], n_items)})
    users = pl.DataFrame(
        {
            "user_id": np.arange(n_users),
            "age_group": rng.choice(["x", "y"], n_users),
            "country": rng.choice(["p", "q"], n_users),
        }
    )
    interactions = pl.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n_rows),
            "item_id": rng.choice(item_ids, n_rows),
            "timestamp": np.sort(rng.integers(0, 10**6, n_rows)),
            "label": (rng.random(n_rows) < 0.3).astype(np.int8),
            "split": "train",
            "hour": rng.integers(0, 24, n_rows),
            "device": rng.choice(["m", "d"], n_rows),
        }
    )
    fm = fit_feature_map(interactions, items, users, config.features)
    vectors = {m: Vectors(item_ids, rng.normal(size=(n_items, d)).astype(np.float32)) for m, d in CONTENT_DIMS.items()}
    table = build_item_table(items, fm, vectors)
    return fm, table, build_examples(interactions, users, fm, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size of the config")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    batch_size = args.batch_size or config.train.batch_size
    fm, table, examples = synthetic_inputs(config, n_items=1500, n_users=600, n_rows=20 * batch_size)
    items = ItemInputs.from_table(table)
    batches = list(examples.batches(batch_size, shuffle=True))
    print(
        f"batch {batch_size}, history {config.features.max_history}, item_dim {config.model.item_dim}, "
        f"threads {args.threads}, steps {args.steps}\n"
    )
    print("| model | parameters | fwd+bwd ms/batch (median) | p90 ms | samples/s |")
    print("|---|---:|---:|---:|---:|")
    for name in MODELS:
        cfg = config.model.model_copy(update={"name": name})
        torch.manual_seed(0)
        model = build_model(cfg, fm, table.dims())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        times = []
        for step in range(args.steps + 3):
            batch = batches[step % len(batches)]
            start = time.perf_counter()
            loss, _ = total_loss(model(batch, items), batch["label"], cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 3:  # warm-up steps excluded
                times.append(time.perf_counter() - start)
        med = statistics.median(times) * 1000
        p90 = sorted(times)[int(0.9 * (len(times) - 1))] * 1000
        n_params = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {n_params:,} | {med:.1f} | {p90:.1f} | {batch_size / (med / 1000):,.0f} |")


if __name__ == "__main__":
    main()
