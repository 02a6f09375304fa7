"""One loop from batches to click probabilities: evaluation, training validation, tests and benchmarks call it.

The model runs in eval mode without gradients; probabilities are ``sigmoid(logits)``. Models with
modal attention also return each candidate's modality shares, gathered here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from recsys.features.batch import BATCH_FIELDS, Batch, FieldWidths
from recsys.features.item_table import ItemInputs


@dataclass
class Predictions:
    """Row-aligned outputs of :func:`predict`."""

    probs: np.ndarray  # (N,) float32 click probabilities
    labels: np.ndarray  # (N,) float32, the batches' labels
    attention: np.ndarray | None = None  # (N, M) modality shares, for models with modal attention


def predict(model: nn.Module, items: ItemInputs, batches: Iterable[Batch]) -> Predictions:
    """Score every batch of ``batches`` with ``model`` (put in eval mode; no gradients)."""
    model.eval()
    probs, labels, attention = [], [], []
    with torch.no_grad():
        for batch in batches:
            out = model(batch, items)
            probs.append(torch.sigmoid(out.logits).numpy())
            labels.append(batch.label.numpy())
            if out.modal_attention is not None:
                attention.append(out.modal_attention.numpy())
    return Predictions(
        probs=np.concatenate(probs) if probs else np.zeros(0, np.float32),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.float32),
        attention=np.concatenate(attention) if attention else None,
    )


def frame_batches(frame: pl.DataFrame, batch_size: int, widths: FieldWidths) -> Iterator[Batch]:
    """Batches of ``batch_size`` rows from a prepared-examples frame (see :mod:`recsys.features.prepared`)."""
    for start in range(0, frame.height, batch_size):
        chunk = frame.slice(start, batch_size)
        yield Batch.from_columns({name: chunk[name].to_numpy() for name in BATCH_FIELDS}, widths)
