"""One loop from batches to click probabilities: evaluation, training validation, tests and benchmarks call it.

The model runs in eval mode without gradients; probabilities are ``sigmoid(logits)``. Models with
modal attention also return each candidate's modality shares, gathered here. :class:`RowScorer`
turns a prepared split's rows into the scored rows evaluation computes its metrics from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch
from torch import nn

from recsys.features.batch import BATCH_FIELDS, Batch, FieldWidths, field_widths
from recsys.features.item_table import ItemInputs
from recsys.features.prepared import META_IS_COLD, META_IS_COLD_USER, META_ITEM_ID, META_TRUE_PROB, META_USER_ID
from recsys.models.output import ModelOutput

if TYPE_CHECKING:
    from recsys.checkpoint import Checkpoint


@dataclass
class Predictions:
    """Row-aligned outputs of :func:`predict`."""

    probs: np.ndarray  # (N,) float32 click probabilities
    labels: np.ndarray  # (N,) float32, the batches' labels
    attention: np.ndarray | None = None  # (N, M) modality shares, for models with modal attention


class OnDevice(nn.Module):
    """``model`` on an accelerator, seen from the CPU: batches go to ``device``, logits and modal attention
    come back (what :func:`recsys.features.predict.predict` reads with ``.numpy()``)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device = model, device

    def forward(self, batch: Batch, items: ItemInputs) -> ModelOutput:
        out = self.model(batch.to(self.device), items)
        attention = None if out.modal_attention is None else out.modal_attention.cpu()
        return ModelOutput(logits=out.logits.cpu(), modal_attention=attention)


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


#: Columns of a prepared split that evaluation reads besides the batch fields, where present.
META_COLUMNS: tuple[str, ...] = (META_USER_ID, META_ITEM_ID, META_IS_COLD, META_IS_COLD_USER, META_TRUE_PROB)
#: The scored-rows column of each row's behaviour-sequence length (what the history segments read).
HISTORY_LENGTH = "history_length"


class RowScorer:
    """A checkpoint's model and item inputs, built once, scoring prepared-example frames into *scored rows*:
    the metadata columns evaluation reads, ``label``, ``item``, ``history_length``, ``prob`` and, for models
    with modal attention, ``attention`` (the modality shares). The same rows, whether a split is scored in
    this process or in Ray Data's actors (:mod:`recsys.score_on_ray`); :mod:`recsys.evaluation` computes the
    metrics from them."""

    def __init__(self, checkpoint: Checkpoint, batch_size: int = 4096, device: str = "cpu") -> None:
        self.checkpoint, self.batch_size = checkpoint, batch_size
        self.widths = field_widths(checkpoint.feature_map)
        self.items = ItemInputs.from_table(checkpoint.item_table, device)
        self.model: nn.Module = checkpoint.model
        if device != "cpu":
            self.model = OnDevice(checkpoint.model.to(device), torch.device(device))

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        predicted = predict(self.model, self.items, frame_batches(frame, self.batch_size, self.widths))
        length = np.asarray(frame["hist_mask"].to_numpy()).reshape(frame.height, -1).sum(axis=1)
        scored = frame.select([c for c in (*META_COLUMNS, "label", "item") if c in frame.columns]).with_columns(
            pl.Series(HISTORY_LENGTH, length.astype(np.int32)), pl.Series("prob", predicted.probs)
        )
        if predicted.attention is not None:
            shares = predicted.attention.astype(np.float32)
            scored = scored.with_columns(pl.Series("attention", shares, dtype=pl.Array(pl.Float32, shares.shape[1])))
        return scored
