"""Forward+backward time per training batch and parameter count of every model, side by side.

Each step is the training loop's own (``training.step.train_step``, the config's optimizer from
``build_optimizer``).
Default sizes are those of configs/default.yaml (batch 512, history 30, item_dim 64, embedding 32,
MLP [200, 80]) with the default encoders' widths (title 384, image 1280, audio 512) over a
1,500-item catalogue with random content. Run:

    .venv/bin/python benchmarks/model_step.py [--steps 20] [--batch-size 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from harness import synthetic_inputs

from recsys.config import load_config
from recsys.features.item_table import ItemInputs
from recsys.models import MODELS, build_model
from training.step import build_optimizer, train_step


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
        optimizer = build_optimizer(model, config.train)
        times = []
        for step in range(args.steps + 3):
            batch = batches[step % len(batches)]
            start = time.perf_counter()
            train_step(model, batch, items, optimizer, cfg)
            if step >= 3:  # warm-up steps excluded
                times.append(time.perf_counter() - start)
        med = statistics.median(times) * 1000
        p90 = sorted(times)[int(0.9 * (len(times) - 1))] * 1000
        n_params = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {n_params:,} | {med:.1f} | {p90:.1f} | {batch_size / (med / 1000):,.0f} |")


if __name__ == "__main__":
    main()
