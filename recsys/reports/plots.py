"""PNG plots of a comparison (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from recsys.metrics import calibration_curve

#: label -> (labels, scores) of one scored test split
Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _style(label: str) -> dict[str, Any]:
    return {"linestyle": "--", "color": "black"} if label.startswith("oracle") else {}


def roc_plot(curves: Curves, path: Path) -> Path:
    """ROC curve of every model (one run each) and the oracle."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=label, **_style(label))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def calibration_plot(curves: Curves, path: Path, n_bins: int = 10) -> Path:
    """Reliability curves: mean predicted vs observed CTR over equal-frequency bins."""
    fig, ax = plt.subplots(figsize=(6, 5))
    top = 0.0
    for label, (y, p) in curves.items():
        table = calibration_curve(y, p, n_bins=n_bins)
        ax.plot(table["mean_pred"], table["mean_label"], marker="o", markersize=3, label=label, **_style(label))
        top = max(top, float(table["mean_pred"].to_numpy().max()), float(table["mean_label"].to_numpy().max()))
    ax.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="mean predicted CTR", ylabel="observed CTR", title=f"Calibration ({n_bins} equal-frequency bins)")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def val_auc_plot(histories: dict[str, list[list[dict[str, Any]]]], path: Path) -> Path:
    """Validation AUC per epoch: one line per run, one colour per model."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (model, runs) in enumerate(histories.items()):
        color = f"C{i % 10}"
        for j, history in enumerate(runs):
            epochs = [h["epoch"] for h in history]
            ax.plot(
                epochs,
                [h["val_auc"] for h in history],
                color=color,
                marker="o",
                markersize=3,
                alpha=0.8,
                label=model if j == 0 else None,
            )
    ax.set(xlabel="epoch", ylabel="validation AUC", title="Validation AUC per epoch (one line per seed)")
    locator = ax.xaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):  # the default AutoLocator is one: keep its settings, whole epochs only
        locator.set_params(integer=True)
    ax.legend(fontsize=8)
    return _save(fig, path)


def attention_plot(attention: dict[str, dict[str, Any]], path: Path, max_categories: int = 12) -> Path | None:
    """Mean modal attention share per modality and item category, one panel per model; None if none has it."""
    models = {m: a for m, a in attention.items() if a and a.get("by_category")}
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 1, figsize=(8, 3.2 * len(models)), squeeze=False)
    for ax, (model, att) in zip(axes[:, 0], models.items()):
        by = att["by_category"]
        cats = list(by["values"])[:max_categories]
        mods = att["modalities"]
        width = 0.8 / len(mods)
        x = np.arange(len(cats) + 1)
        for j, m in enumerate(mods):
            heights = [att["overall"][m]] + [by["values"][c]["weights"][m] for c in cats]
            ax.bar(x + j * width - 0.4 + width / 2, np.nan_to_num(np.array(heights, dtype=float)), width, label=m)
        ax.set_xticks(x, ["all", *cats], rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="share of the fused feature", title=f"{model}: modal attention by {by['field']}")
        ax.legend(fontsize=8, ncol=len(mods))
    return _save(fig, path)
