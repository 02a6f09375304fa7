"""Model variants side by side on a dataset's VALIDATION split (choices are made here, never on test).

Every variant is the experiment config with some ``model.*`` / ``train.*`` fields overridden; each is
trained in process with the project's own feature path, models, loss and training step, and scored on
the validation split every epoch with the project's ``predict``. Reported: the best epoch's validation
AUC overall and on the evaluation's segments (cold items, cold users, history lengths).

    .venv/bin/python studies/content_ids/validate.py --config configs/ml-100k-mm.yaml \\
        --variant din:model.name=din --variant marn \\
        --variant beside:model.id_path=beside --seeds 42,43 --epochs 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import yaml

from recsys.config import ExperimentConfig, load_config, parse_config
from recsys.evaluation import segment_masks
from recsys.features.item_table import ItemInputs
from recsys.features.predict import predict
from recsys.features.prepare import PreparedData, prepare_data
from recsys.features.prepared import examples_frame
from recsys.metrics import compute_metrics
from recsys.models import build_model
from training.step import build_optimizer, decay_on_plateau, train_step


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``name:model.id_path=beside,train.epochs=8`` -> (name, {"model.id_path": "beside", ...})."""
    name, _, rest = text.partition(":")
    overrides: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def with_overrides(config: ExperimentConfig, overrides: dict[str, object]) -> ExperimentConfig:
    raw = config.model_dump(mode="json")
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if section not in ("model", "train") or not field:
            # the features are prepared once from the base config: other sections would be ignored
            raise SystemExit(f"--variant: {key!r}: only model.* and train.* fields can vary")
        raw[section][field] = value
    return parse_config(raw, source="--variant")


def run_variant(config: ExperimentConfig, prepared: PreparedData, epochs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(config.train.seed)
    np.random.seed(config.train.seed)
    model = build_model(config.model, prepared.feature_map, prepared.item_table.dims())
    optimizer = build_optimizer(model, config.train)
    items = ItemInputs.from_table(prepared.item_table)
    train, valid = prepared.examples.split("train"), prepared.examples.split("valid")
    valid_frame = examples_frame(valid)
    masks = segment_masks(valid_frame, prepared.item_table)
    users = valid.meta["user_id"].to_numpy()
    history, best, best_epoch, stale = [], None, 0, 0
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        for batch in train.batches(config.train.batch_size, shuffle=True, seed=config.train.seed + epoch):
            train_step(model, batch, items, optimizer, config.model)
        probs = predict(model, items, valid.batches(4096)).probs
        labels = valid.arrays["label"]
        segments = {
            name: compute_metrics(users[keep], labels[keep], probs[keep])["auc"] for name, keep in masks.items()
        }
        history.append({"epoch": epoch + 1, "val_auc": segments["all"], "seconds": time.perf_counter() - started})
        print(f"  epoch {epoch + 1}: val AUC {segments['all']:.4f} ({history[-1]['seconds']:.0f} s)", flush=True)
        if best is None or segments["all"] > best["all"] + config.train.early_stopping_min_delta:
            best, best_epoch, stale = segments, epoch + 1, 0
        else:
            stale += 1
            if stale >= config.train.early_stopping_patience:
                break
            decay_on_plateau(optimizer, config.train)
    return {"best_epoch": best_epoch, "epochs_run": len(history), "segments": best, "history": history}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--variant", action="append", default=[], help="name:section.field=value,... (repeatable)")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--epochs", type=int, help="epoch cap (default train.epochs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="append one JSON line per run to this file")
    args = parser.parse_args(argv)
    base = load_config(args.config)
    prepared = prepare_data(base, validate=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"valid rows {len(prepared.examples.split('valid'))}, train rows {len(prepared.examples.split('train'))}")
    for spec in args.variant or ["marn"]:
        name, overrides = parse_variant(spec)
        for seed in seeds:
            config = with_overrides(base, {**overrides, "train.seed": seed})
            started = time.perf_counter()
            result = run_variant(config, prepared, args.epochs or config.train.epochs, args.threads)
            seg = result["segments"]
            cells = "  ".join(f"{k} {v:.4f}" for k, v in seg.items() if k != "all")
            seconds = time.perf_counter() - started
            print(
                f"{name:<24} seed {seed}  val AUC {seg['all']:.4f} "
                f"(epoch {result['best_epoch']}/{result['epochs_run']}, {seconds:.0f} s)  {cells}",
                flush=True,
            )
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps({"variant": name, "overrides": overrides, "seed": seed, **result}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
