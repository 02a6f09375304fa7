"""Evaluation metrics as pure functions over 1-D numpy arrays (FuxiCTR / TorchRec style).

Used by training (validation every epoch, see :func:`compute_metrics`) and by offline evaluation.
Every function validates its inputs: arrays must be 1-D and of equal length, labels must be 0/1,
and scores/probabilities must not be NaN; otherwise a ``ValueError`` names the argument at fault.
Metrics that are undefined for the data (AUC with a single class, ratio with no clicks) return
``float('nan')`` instead of raising, so a validation loop never dies on a degenerate batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

__all__ = ["auc", "calibration", "calibration_curve", "compute_metrics", "gauc", "logloss"]


# --------------------------------------------------------------------------- validation


def _as_1d(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {detail}")


def _labels(labels: Any) -> np.ndarray:
    arr = _as_1d("labels", labels)
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"labels must be numeric 0/1, got dtype {arr.dtype}")
    bad = ~((arr == 0) | (arr == 1))  # NaN is also "bad"
    if bad.any():
        raise ValueError(f"labels must be 0 or 1: {int(bad.sum())} other value(s), e.g. {arr[bad][0]!r}")
    return arr.astype(np.int8)


def _scores(name: str, scores: Any, *, probabilities: bool = False) -> np.ndarray:
    arr = _as_1d(name, scores)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(f"{name} contains {n_nan} NaN value(s) out of {len(arr)}")
    if probabilities and len(arr) and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got range [{arr.min():.6g}, {arr.max():.6g}] "
            "(logits passed by mistake?)"
        )
    return arr


def _user_ids(user_ids: Any) -> np.ndarray:
    arr = _as_1d("user_ids", user_ids)
    if arr.dtype == object:
        n_missing = sum(1 for x in arr if x is None or (isinstance(x, float) and x != x))
    elif np.issubdtype(arr.dtype, np.floating):
        n_missing = int(np.isnan(arr).sum())
    else:
        n_missing = 0
    if n_missing:
        raise ValueError(f"user_ids contains {n_missing} missing (None/NaN) value(s) out of {len(arr)}")
    return arr


# --------------------------------------------------------------------------- ranking metrics


def auc(labels: Any, scores: Any) -> float:
    """ROC AUC (ties count 0.5) via ``sklearn.metrics.roc_auc_score``; NaN if only one class is present."""
    y = _labels(labels)
    s = _scores("scores", scores)
    _check_lengths(labels=y, scores=s)
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def _gauc_parts(user_ids: Any, labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-user AUC and impression counts, for users with both classes only.

    Vectorised: one lexsort by (user, score); per-user Mann-Whitney U from average ranks
    (ties within a user share the mean rank, exactly as ``roc_auc_score``).
    """
    u = _user_ids(user_ids)
    y = _labels(labels)
    s = _scores("scores", scores)
    _check_lengths(user_ids=u, labels=y, scores=s)
    n = len(y)
    if n == 0:
        return np.empty(0), np.empty(0)

    if u.dtype == object:  # lexsort cannot order arbitrary objects: map to dense codes (hash, not sort)
        codes: dict[Any, int] = {}
        u = np.fromiter((codes.setdefault(x, len(codes)) for x in u), dtype=np.int64, count=n)
    order = np.lexsort((s, u))  # primary key: user, secondary: score
    c, sv, yv = u[order], s[order], y[order]

    idx = np.arange(n)
    user_start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    user_len = np.diff(np.r_[user_start, n])
    # 1-based rank within the user; runs of equal (user, score) get the mean of their ranks.
    rank = idx - np.repeat(user_start, user_len) + 1
    run_start = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (sv[1:] != sv[:-1])])
    run_len = np.diff(np.r_[run_start, n])
    run_first = rank[run_start]
    avg_rank = np.repeat(run_first + (run_len - 1) / 2.0, run_len)

    user_of_row = np.repeat(np.arange(len(user_start)), user_len)
    n_pos = np.bincount(user_of_row, weights=yv, minlength=len(user_start))
    n_neg = user_len - n_pos
    rank_sum_pos = np.bincount(user_of_row, weights=avg_rank * yv, minlength=len(user_start))

    ok = (n_pos > 0) & (n_neg > 0)
    n_pos, n_neg = n_pos[ok], n_neg[ok]
    user_auc = (rank_sum_pos[ok] - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return user_auc, user_len[ok].astype(np.float64)


def gauc(user_ids: Any, labels: Any, scores: Any) -> float:
    """Impression-weighted mean of per-user AUC over users with both clicks and non-clicks.

    Users with a single class are ignored; NaN when no user qualifies.
    """
    user_auc, weight = _gauc_parts(user_ids, labels, scores)
    if len(user_auc) == 0:
        return float("nan")
    return float(np.sum(user_auc * weight) / np.sum(weight))


# --------------------------------------------------------------------------- probability metrics


def logloss(labels: Any, probs: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy with ``probs`` clipped to ``[eps, 1 - eps]``; NaN on empty input."""
    y = _labels(labels)
    p = _scores("probs", probs, probabilities=True)
    _check_lengths(labels=y, probs=p)
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration(labels: Any, probs: Any) -> dict[str, float]:
    """``mean_pred``, ``mean_label`` (observed CTR) and ``ratio`` = mean_pred / mean_label (NaN if no clicks)."""
    y = _labels(labels)
    p = _scores("probs", probs, probabilities=True)
    _check_lengths(labels=y, probs=p)
    if len(y) == 0:
        return {"mean_pred": float("nan"), "mean_label": float("nan"), "ratio": float("nan")}
    mean_pred = float(p.mean())
    mean_label = float(y.mean())
    ratio = mean_pred / mean_label if mean_label > 0 else float("nan")
    return {"mean_pred": mean_pred, "mean_label": mean_label, "ratio": ratio}


def calibration_curve(labels: Any, probs: Any, n_bins: int = 10) -> pl.DataFrame:
    """Reliability table over equal-frequency bins of ``probs``.

    Rows are sorted by probability (stable) and cut into ``n_bins`` chunks whose sizes differ by
    at most one (``np.array_split`` sizes), so tied probabilities may straddle two bins. Empty bins
    (fewer rows than bins) are dropped. Columns: ``bin`` (0-based), ``mean_pred``, ``mean_label``, ``count``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y = _labels(labels)
    p = _scores("probs", probs, probabilities=True)
    _check_lengths(labels=y, probs=p)
    n = len(y)
    order = np.argsort(p, kind="stable")
    # Bin of the i-th smallest row: floor(i * n_bins / n) gives near-equal consecutive chunks.
    bins = np.empty(n, dtype=np.int64)
    bins[order] = (np.arange(n, dtype=np.int64) * n_bins) // max(n, 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_pred = np.bincount(bins, weights=p, minlength=n_bins)
    sum_label = np.bincount(bins, weights=y, minlength=n_bins)
    keep = count > 0
    return pl.DataFrame(
        {
            "bin": np.arange(n_bins, dtype=np.int64)[keep],
            "mean_pred": sum_pred[keep] / count[keep],
            "mean_label": sum_label[keep] / count[keep],
            "count": count[keep].astype(np.int64),
        }
    )


# --------------------------------------------------------------------------- training report


def compute_metrics(user_ids: Any, labels: Any, probs: Any) -> dict[str, float]:
    """What training reports per epoch: ``auc``, ``gauc``, ``logloss``, ``mean_pred``, ``mean_label``, ``n``."""
    y = _labels(labels)
    p = _scores("probs", probs, probabilities=True)
    u = _user_ids(user_ids)
    _check_lengths(user_ids=u, labels=y, probs=p)
    cal = calibration(y, p)
    return {
        "auc": auc(y, p),
        "gauc": gauc(u, y, p),
        "logloss": logloss(y, p),
        "mean_pred": cal["mean_pred"],
        "mean_label": cal["mean_label"],
        "n": int(len(y)),
    }
