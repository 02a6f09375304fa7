"""Forward+backward time per training batch and parameter count of every model, side by side.

Each step is the training loop's own (``training.step.train_step``, the config's optimizer from
``build_optimizer``).
Default sizes are those of configs/default.yaml (batch 512, history 30, item_dim 64, embedding 32,
MLP [200, 80]) with the default encoders' widths (title 384, image 1280, audio 512) over a
1,500-item catalogue with random content. Run:

    .venv/bin/python benchmarks/model_step.py [--steps 20] [--batch-size 512] [--threads 2]

``--variant NAME:key=value,...`` adds a model variant by ``model.*`` overrides (e.g.
``--variant bags:name=marn,id_path=beside,content_merge=add,content_gate=true,simtier_bins=20``);
a variant's ``content_dim=K`` sets ``features.content_dim`` (the item table's content projected to K
numbers per modality) instead of a model key. ``--max-history`` sets the history length (ml-100k-mm's
config: 50). The models take turns, a few steps each, so that a machine's load changes touch all of
them alike; the time is the process's CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml
from harness import synthetic_inputs

from recsys.config import ModelConfig, load_config
from recsys.features.item_table import ItemInputs
from recsys.models import MODELS, build_model
from training.step import build_optimizer, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size of the config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-history", type=int, default=None, help="default: features.max_history of the config")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...", help="a model variant (repeatable)"
    )
    parser.add_argument("--only-variants", action="store_true", help="time din and the variants, not every model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    if args.max_history:
        config = config.model_copy(
            update={"features": config.features.model_copy(update={"max_history": args.max_history})}
        )
    batch_size = args.batch_size or config.train.batch_size
    fm, table, examples = synthetic_inputs(config, n_items=1500, n_users=600, n_rows=20 * batch_size)
    items = ItemInputs.from_table(table)
    batches = list(examples.batches(batch_size, shuffle=True))
    print(
        f"batch {batch_size}, history {config.features.max_history}, item_dim {config.model.item_dim}, "
        f"threads {args.threads}, steps {args.steps}\n"
    )
    print("| model | parameters | fwd+bwd CPU ms/batch (median) | p90 ms | samples/s | time vs din |")
    print("|---|---:|---:|---:|---:|---:|")
    variants = {name: {"name": name} for name in (["din"] if args.only_variants else MODELS)}
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        variants[name] = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in overrides.split(",") if kv)}
    runs = {}
    tables = {config.features.content_dim: (table, items)}
    for name, update in variants.items():
        content_dim = update.pop("content_dim", config.features.content_dim)
        if content_dim not in tables:  # the same seeded rows and vectors, projected
            features = config.features.model_copy(update={"content_dim": content_dim})
            _, projected, _ = synthetic_inputs(
                config.model_copy(update={"features": features}), n_items=1500, n_users=600, n_rows=20 * batch_size
            )
            tables[content_dim] = (projected, ItemInputs.from_table(projected))
        cfg = config.model.model_copy(update=update)
        ModelConfig.model_validate(cfg.model_dump())  # a bad override fails here, naming the field
        torch.manual_seed(0)
        model = build_model(cfg, fm, tables[content_dim][0].dims())
        runs[name] = (model, build_optimizer(model, config.train), cfg, [], tables[content_dim][1])
    rounds, per_turn = 1 + -(-args.steps // 4), 4  # the first round is warm-up
    for r in range(rounds):
        for model, optimizer, cfg, times, run_items in runs.values():
            for step in range(per_turn):
                batch = batches[(r * per_turn + step) % len(batches)]
                start = time.process_time()
                train_step(model, batch, run_items, optimizer, cfg)
                if r:
                    times.append(time.process_time() - start)
    din = statistics.median(runs["din"][3]) if "din" in runs else None
    for name, (model, _, _, times, _) in runs.items():
        med = statistics.median(times) * 1000
        p90 = sorted(times)[int(0.9 * (len(times) - 1))] * 1000
        n_params = sum(p.numel() for p in model.parameters())
        ratio = f"{med / 1000 / din:.2f}x" if din else "-"
        print(f"| {name} | {n_params:,} | {med:.1f} | {p90:.1f} | {batch_size / (med / 1000):,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
