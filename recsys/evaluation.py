"""Offline evaluation of a checkpoint: metrics overall and per segment, the oracle, modal attention.

Segments (each a subset of the evaluated rows):

- ``all``; ``warm_items`` / ``cold_items`` (candidate id seen in training or not);
- ``warm_users`` / ``cold_users`` (the user has training rows or not), where some users are new;
- ``history_0``, ``history_1-4``, ``history_5-19``, ``history_20+``: users by the length of the
  behaviour sequence of the impression (capped at ``features.max_history``);
- ``missing_<modality>``: candidates without that content modality (from the item table masks).

Per segment: AUC, GAUC, logloss, mean predicted CTR, observed CTR and their ratio (calibration).
With ``true_prob`` (the built-in dataset) the same metrics for the oracle that scores with the
true click probability. For models with modal attention, the mean attention weight of each
modality (over candidates that have it), overall and per value of the first item categorical
feature.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.checkpoint import Checkpoint, load_checkpoint
from recsys.config import EvaluationConfig
from recsys.errors import RecsysError
from recsys.features.batch import field_widths
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemInputs, ItemTable
from recsys.features.predict import HISTORY_LENGTH, Predictions, RowScorer, frame_batches, predict
from recsys.features.prepared import (
    META_IS_COLD,
    META_IS_COLD_USER,
    META_ITEM_ID,
    META_TRUE_PROB,
    META_USER_ID,
    PreparedDir,
    examples_frame,
)
from recsys.metrics import compute_metrics

#: (lowest, highest or None, segment name) of the history-length buckets.
HISTORY_BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (0, 0, "history_0"),
    (1, 4, "history_1-4"),
    (5, 19, "history_5-19"),
    (20, None, "history_20+"),
)


@dataclass
class Evaluation:
    """One checkpoint evaluated on one split; ``predictions`` holds the row-level scores."""

    model: str
    checkpoint: str
    source: str  # the prepared split directory or the dataset directory evaluated
    split: str
    segments: dict[str, dict[str, float]]
    oracle: dict[str, dict[str, float]] = field(default_factory=dict)
    attention: dict | None = None
    predictions: pl.DataFrame | None = None  # user_id, item_id, label, prob (, true_prob)
    rows_per_node: dict[str, int] | None = None  # scored on Ray: rows each Ray node scored (None: in process)

    def to_json(self) -> dict:
        """JSON-ready dict (NaN -> null), without the row-level predictions."""
        return json_safe(  # type: ignore[return-value]  # a dict in, a dict out
            {
                "model": self.model,
                "checkpoint": self.checkpoint,
                "source": self.source,
                "split": self.split,
                "segments": self.segments,
                "oracle": self.oracle,
                "modal_attention": self.attention,
            }
            | ({"rows_per_node": self.rows_per_node} if self.rows_per_node is not None else {})
        )

    def write(self, out_dir: str | Path) -> Path:
        """Write ``metrics.json`` into ``out_dir`` (created); returns its path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "metrics.json"
        path.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        return path


def json_safe(obj: object) -> object:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- scoring


def predict_frame(checkpoint: Checkpoint, frame: pl.DataFrame, batch_size: int = 4096) -> Predictions:
    """Click probabilities (and modality shares) for every row of a prepared-examples frame."""
    batches = frame_batches(frame, batch_size, field_widths(checkpoint.feature_map))
    return predict(checkpoint.model, ItemInputs.from_table(checkpoint.item_table), batches)


# --------------------------------------------------------------------------- segments


def segment_masks(frame: pl.DataFrame, item_table: ItemTable | None = None) -> dict[str, np.ndarray]:
    """Boolean row masks of every segment present in ``frame``, prepared examples or scored rows (see the
    module docstring)."""
    masks = {"all": np.ones(frame.height, bool)}
    if META_IS_COLD in frame.columns:
        cold = frame[META_IS_COLD].to_numpy().astype(bool)
        masks |= {"warm_items": ~cold, "cold_items": cold}
    if META_IS_COLD_USER in frame.columns:
        cold_user = frame[META_IS_COLD_USER].to_numpy().astype(bool)
        if cold_user.any():  # only where some evaluated users are new (else warm_users repeats "all")
            masks |= {"warm_users": ~cold_user, "cold_users": cold_user}
    length = None
    if HISTORY_LENGTH in frame.columns:
        length = frame[HISTORY_LENGTH].to_numpy()
    elif "hist_mask" in frame.columns:
        length = np.asarray(frame["hist_mask"].to_numpy()).reshape(frame.height, -1).sum(axis=1)
    if length is not None:
        for low, high, name in HISTORY_BUCKETS:
            masks[name] = (length >= low) & (length <= high if high is not None else True)
    if item_table is not None and "item" in frame.columns:
        rows = frame["item"].to_numpy()
        for modality, present in item_table.masks.items():
            masks[f"missing_{modality}"] = ~present[rows]
    return {name: keep for name, keep in masks.items() if keep.any()}


def segment_metrics(
    frame: pl.DataFrame, scores: np.ndarray, masks: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """:func:`recsys.metrics.compute_metrics` plus the calibration ratio, for every segment mask."""
    users, labels = frame[META_USER_ID].to_numpy(), frame["label"].to_numpy()
    out = {}
    for name, keep in masks.items():
        m = compute_metrics(users[keep], labels[keep], scores[keep])
        m["ratio"] = m["mean_pred"] / m["mean_label"] if m["mean_label"] > 0 else float("nan")
        out[name] = m
    return out


def category_labels(item_table: ItemTable, feature_map: FeatureMap, rows: np.ndarray) -> tuple[str, np.ndarray] | None:
    """(field name, value per row) of the first item categorical feature; None without one."""
    fields = feature_map.by("item", "categorical")[1:]  # [0] is item_id
    if not fields or item_table.categorical.shape[1] == 0:
        return None
    vocab = np.array(["<pad>", "<other>", *fields[0].vocab], dtype=object)
    return fields[0].name, vocab[item_table.categorical[rows, 0]]


def attention_summary(
    attention: np.ndarray, modalities: list[str], rows: np.ndarray, item_table: ItemTable, feature_map: FeatureMap
) -> dict:
    """Mean modal attention weight per modality, over the candidates that have it; overall and per category."""
    present = np.stack(
        [np.ones(len(rows), bool) if m == "id" else item_table.masks[m][rows] for m in modalities], axis=1
    )

    def means(keep: np.ndarray) -> dict[str, float]:
        sel = present & keep[:, None]
        total = np.where(sel, attention, 0.0).sum(axis=0)
        count = sel.sum(axis=0)
        return {m: float(total[j] / count[j]) if count[j] else float("nan") for j, m in enumerate(modalities)}

    summary: dict = {"modalities": list(modalities), "overall": means(np.ones(len(rows), bool))}
    labels = category_labels(item_table, feature_map, rows)
    if labels is not None:
        name, values = labels
        uniques, counts = np.unique(values.astype(str), return_counts=True)
        by_value = {
            str(v): {"n": int(c), "weights": means(values.astype(str) == v)}
            for v, c in sorted(zip(uniques, counts), key=lambda vc: (-vc[1], vc[0]))
        }
        summary["by_category"] = {"field": name, "values": by_value}
    return summary


# --------------------------------------------------------------------------- entry points


def evaluate_scored(checkpoint: Checkpoint, scored: pl.DataFrame, source: str = "", split: str = "test") -> Evaluation:
    """Every metric, segment and attention summary of a split's scored rows (:class:`RowScorer`)."""
    if scored.height == 0:
        raise RecsysError(f"{source or 'the examples'}: no rows to evaluate (split {split!r} is empty)")
    probs = scored["prob"].to_numpy()
    masks = segment_masks(scored, checkpoint.item_table)
    true_prob = scored[META_TRUE_PROB].to_numpy() if META_TRUE_PROB in scored.columns else None
    modalities = list(getattr(checkpoint.model, "modalities", []))
    predictions = scored.select(
        pl.col(META_USER_ID).alias("user_id"),
        pl.col(META_ITEM_ID).alias("item_id"),
        pl.col("label").cast(pl.Int8),
        pl.col("prob"),
        *([pl.col(META_TRUE_PROB).alias("true_prob")] if true_prob is not None else []),
    )
    attention = None
    if "attention" in scored.columns:
        shares = np.asarray(scored["attention"].to_numpy()).reshape(scored.height, -1)
        items = scored["item"].to_numpy()
        attention = attention_summary(shares, modalities, items, checkpoint.item_table, checkpoint.feature_map)
    return Evaluation(
        model=checkpoint.config.model.name,
        checkpoint=str(checkpoint.path),
        source=source,
        split=split,
        segments=segment_metrics(scored, probs, masks),
        oracle=segment_metrics(scored, true_prob, masks) if true_prob is not None else {},
        attention=attention,
        predictions=predictions,
    )


def evaluate_frame(
    checkpoint: Checkpoint, frame: pl.DataFrame, source: str = "", split: str = "test", batch_size: int = 4096
) -> Evaluation:
    """Score a prepared-examples frame in this process and compute every metric (:func:`evaluate_scored`)."""
    if frame.height == 0:
        raise RecsysError(f"{source or 'the examples'}: no rows to evaluate (split {split!r} is empty)")
    return evaluate_scored(checkpoint, RowScorer(checkpoint, batch_size)(frame), source, split)


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    prepared: PreparedDir | None = None,
    *,
    data_dir: str | Path | None = None,
    split: str = "test",
    overrides: Mapping[str, Any] | None = None,
    address: str | None = None,
) -> Evaluation:
    """Evaluate a checkpoint on a split of prepared features or of a dataset directory.

    Sources, first match: ``data_dir`` (a dataset featurised with the checkpoint's feature map
    and item table, see :func:`recsys.features.prepare.prepare_with`), ``prepared``, else the
    prepared features of the run the checkpoint belongs to (:meth:`PreparedDir.beside_checkpoint`).

    A prepared split of at least ``evaluation.ray_min_rows`` rows (the checkpoint config's ``evaluation``
    section, with ``overrides`` of its fields) is scored on Ray Data (:mod:`recsys.score_on_ray`: the Ray
    this process is connected to, else ``address``, else ``train.address``, else a new local one); smaller
    ones, and dataset directories, in this process.
    """
    from recsys.features.prepare import prepare_with

    checkpoint = load_checkpoint(checkpoint_dir)
    if data_dir is not None:
        examples = prepare_with(checkpoint, data_dir)
        if split not in set(examples.meta["split"].unique().to_list()):
            raise RecsysError(
                f"{Path(data_dir) / 'interactions.parquet'}: no {split!r} rows after splitting (data.split)"
            )
        return evaluate_frame(checkpoint, examples_frame(examples.split(split)), str(data_dir), split)
    prepared = prepared or PreparedDir.beside_checkpoint(checkpoint_dir)
    if not prepared.has_split(split):
        raise RecsysError(
            f"{prepared.split_dir(split)}: no prepared {split!r} split (Parquet files) found; it is written by "
            "`recsys train` beside the checkpoint (<run>/prepared/<split>); pass --data DATASET_DIR to evaluate "
            "on a dataset directory"
        )
    settings = EvaluationConfig.model_validate(checkpoint.config.evaluation.model_dump() | dict(overrides or {}))
    source = str(prepared.split_dir(split))
    if prepared.counts().get(split, 0) >= settings.ray_min_rows:
        from recsys.score_on_ray import score_split_on_ray

        where = address or checkpoint.config.train.address
        scored = score_split_on_ray(checkpoint.path, prepared.split_dir(split), settings, where)
        evaluation = evaluate_scored(checkpoint, scored.rows, source, split)
        evaluation.rows_per_node = scored.rows_per_node
        return evaluation
    return evaluate_frame(checkpoint, prepared.read_split(split), source, split, settings.batch_size)


# --------------------------------------------------------------------------- console


def _num(value: float | None, width: int, digits: int = 4) -> str:
    return (
        f"{'-':>{width}}"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:>{width}.{digits}f}"
    )


def format_evaluation(evaluation: Evaluation, attention_rows: int = 20) -> str:
    """A console table: one row per segment (model and, when known, the oracle), then modal attention
    (overall and for the first ``attention_rows`` values of the item category)."""
    oracle = evaluation.oracle
    head = f"{'segment':<18}{'rows':>7}{'AUC':>8}{'GAUC':>8}{'logloss':>9}{'pred CTR':>10}{'CTR':>8}{'ratio':>7}"
    lines = [
        f"{evaluation.model} on {evaluation.split} ({evaluation.source})",
        head + (f"{'oracle AUC':>12}{'oracle GAUC':>13}" if oracle else ""),
    ]
    for name, m in evaluation.segments.items():
        line = (
            f"{name:<18}{int(m['n']):>7}{_num(m['auc'], 8)}{_num(m['gauc'], 8)}{_num(m['logloss'], 9)}"
            f"{_num(m['mean_pred'], 10)}{_num(m['mean_label'], 8)}{_num(m['ratio'], 7, 3)}"
        )
        if name in oracle:
            line += f"{_num(oracle[name]['auc'], 12)}{_num(oracle[name]['gauc'], 13)}"
        lines.append(line)
    att = evaluation.attention
    if att:
        mods = att["modalities"]
        lines += [
            "",
            "modal attention: each modality's share of the item representation "
            "(id_path fusion: |a_m*s_m| / sum_k |a_k*s_k|; beside: the id part's and each content modality's)",
            f"{'':<24}{'rows':>7}" + "".join(f"{m:>9}" for m in mods),
            f"{'all':<24}{int(evaluation.segments['all']['n']):>7}"
            + "".join(_num(att["overall"][m], 9, 3) for m in mods),
        ]
        by = att.get("by_category")
        if by:
            values = list(by["values"].items())
            for value, entry in values[:attention_rows]:
                label = f"{by['field']}={value}"[:23]
                lines.append(f"{label:<24}{entry['n']:>7}" + "".join(_num(entry["weights"][m], 9, 3) for m in mods))
            if len(values) > attention_rows:
                lines.append(f"({len(values) - attention_rows} more {by['field']} values in metrics.json)")
    return "\n".join(lines)
