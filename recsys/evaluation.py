"""Offline evaluation of a checkpoint on prepared examples: overall, per segment, and the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.checkpoint import Checkpoint, load_checkpoint
from recsys.data.examples import field_widths, model_batch
from recsys.metrics import compute_metrics
from recsys.models import ItemInputs


def predict_frame(checkpoint: Checkpoint, frame: pl.DataFrame, batch_size: int = 4096) -> np.ndarray:
    """Click probabilities for every row of a prepared-examples frame (see recsys.data.prepare)."""
    items = ItemInputs.from_table(checkpoint.item_table)
    widths = field_widths(checkpoint.feature_map)
    model = checkpoint.model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, frame.height, batch_size):
            chunk = frame.slice(start, batch_size)
            columns = {c: torch.from_numpy(chunk[c].to_numpy().copy()) for c in chunk.columns if not c.startswith("meta_")}
            out.append(torch.sigmoid(model(model_batch(columns, widths), items).logits).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def segment_metrics(frame: pl.DataFrame, probs: np.ndarray) -> dict[str, dict[str, float]]:
    """Metrics overall and for warm/cold items; with ``meta_true_prob``, the oracle's too."""
    users, labels = frame["meta_user_id"].to_numpy(), frame["label"].to_numpy()
    segments = {"all": np.ones(frame.height, bool)}
    if "meta_is_cold" in frame.columns:
        cold = frame["meta_is_cold"].to_numpy()
        segments |= {"warm_items": ~cold, "cold_items": cold}
    out: dict[str, dict[str, float]] = {}
    for name, keep in segments.items():
        if keep.any():
            out[name] = compute_metrics(users[keep], labels[keep], probs[keep])
            if "meta_true_prob" in frame.columns:
                oracle = compute_metrics(users[keep], labels[keep], frame["meta_true_prob"].to_numpy()[keep])
                out[f"oracle_{name}"] = oracle
    return out


def evaluate_checkpoint(checkpoint_dir: str | Path, examples_dir: str | Path) -> dict[str, dict[str, float]]:
    """Load a checkpoint and evaluate it on a directory of prepared-example Parquet files."""
    checkpoint = load_checkpoint(checkpoint_dir)
    frame = pl.read_parquet(Path(examples_dir))
    return segment_metrics(frame, predict_frame(checkpoint, frame))


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    """A console table: one row per segment."""
    lines = [f"{'segment':<20}{'AUC':>8}{'GAUC':>8}{'logloss':>9}{'pred CTR':>10}{'CTR':>8}{'rows':>8}"]
    for name, m in metrics.items():
        lines.append(f"{name:<20}{m['auc']:>8.4f}{m['gauc']:>8.4f}{m['logloss']:>9.4f}"
                     f"{m['mean_pred']:>10.4f}{m['mean_label']:>8.4f}{int(m['n']):>8}")
    return "\n".join(lines)
