"""Tests for recsys.metrics: hand-computed values, a slow reference for GAUC, validation errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from recsys.metrics import auc, calibration, calibration_curve, compute_metrics, gauc, logloss

FAST = settings(max_examples=25, deadline=None)


def _gauc_reference(user_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Slow, obvious GAUC: loop over users, roc_auc_score per user, weight by impressions."""
    num = den = 0.0
    for user in np.unique(user_ids):
        m = user_ids == user
        y = labels[m]
        if 0 < y.sum() < len(y):
            num += roc_auc_score(y, scores[m]) * len(y)
            den += len(y)
    return num / den if den else float("nan")


# --------------------------------------------------------------------------- AUC


def test_auc_hand_computed() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_ties_count_half() -> None:
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # positive 0.5 vs negative 0.5 -> 0.5, positive 0.9 vs negative 0.5 -> 1: (0.5 + 1) / 2
    assert auc([0, 1, 1], [0.5, 0.5, 0.9]) == pytest.approx(0.75)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_auc_single_class_is_nan(labels: list[int]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither raise nor warn (sklearn's UndefinedMetricWarning)
        assert math.isnan(auc(labels, np.linspace(0.1, 0.9, len(labels))))


# --------------------------------------------------------------------------- GAUC


def test_gauc_hand_computed_two_users_weighted_and_single_class_ignored() -> None:
    # user "a" (4 impressions): labels [0,0,1,1], scores [0.1,0.4,0.35,0.8] -> AUC 3/4 = 0.75
    # user "b" (3 impressions): labels [1,0,0], scores [0.5,0.5,0.9]
    #   positive 0.5 vs negatives 0.5 (tie, 0.5) and 0.9 (0) -> AUC 0.5/2 = 0.25
    # user "c" (2 impressions): only clicks -> ignored (neither its AUC nor its 2 impressions count)
    # GAUC = (4 * 0.75 + 3 * 0.25) / (4 + 3) = 3.75 / 7 = 0.5357142857...
    # (unweighted mean would be 0.5; counting c's impressions would give 3.75 / 9)
    rows = [
        ("b", 1, 0.5), ("a", 0, 0.1), ("c", 1, 0.3), ("a", 0, 0.4), ("b", 0, 0.5),
        ("a", 1, 0.35), ("c", 1, 0.7), ("b", 0, 0.9), ("a", 1, 0.8),
    ]  # fmt: skip
    users, labels, scores = (np.array(col) for col in zip(*rows, strict=True))
    assert gauc(users, labels, scores) == pytest.approx(3.75 / 7)


def test_gauc_nan_when_no_user_has_both_classes() -> None:
    assert math.isnan(gauc([1, 1, 2], [0, 0, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(gauc([], [], []))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gauc_matches_slow_reference_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    users = rng.integers(0, int(rng.integers(2, 30)), n)
    labels = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(int)
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # coarse rounding: many ties within a user
    assert gauc(users, labels, scores) == pytest.approx(_gauc_reference(users, labels, scores), abs=1e-12)
    # string user ids group the same way
    str_users = np.array([f"u{x}" for x in users])
    assert gauc(str_users, labels, scores) == pytest.approx(_gauc_reference(users, labels, scores), abs=1e-12)


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 1), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])),
        min_size=1,
        max_size=40,
    )
)
def test_gauc_matches_slow_reference_property(rows: list[tuple[int, int, float]]) -> None:
    users, labels, scores = (np.array(col) for col in zip(*rows, strict=True))
    expected = _gauc_reference(users, labels, scores)
    got = gauc(users, labels, scores)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- probabilities


def test_logloss_hand_computed() -> None:
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231435513 + 0.5108256238) / 2
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(0.3669845875, abs=1e-9)


def test_logloss_clips_confident_mistakes() -> None:
    # p=1 for a non-click would be -ln(0) = inf; clipped to 1 - eps -> -ln(eps)
    assert logloss([0], [1.0], eps=1e-7) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_calibration_tiny_case() -> None:
    cal = calibration([1, 0, 0, 0], [0.6, 0.1, 0.2, 0.3])
    assert cal["mean_pred"] == pytest.approx(0.3)  # 1.2 / 4
    assert cal["mean_label"] == pytest.approx(0.25)  # 1 click / 4
    assert cal["ratio"] == pytest.approx(1.2)  # 0.3 / 0.25


def test_calibration_ratio_nan_without_clicks() -> None:
    cal = calibration([0, 0], [0.1, 0.3])
    assert cal["mean_pred"] == pytest.approx(0.2)
    assert cal["mean_label"] == 0.0
    assert math.isnan(cal["ratio"])


def test_calibration_curve_equal_frequency_bins() -> None:
    probs = np.array([0.8, 0.1, 0.6, 0.3, 0.2, 0.7, 0.4, 0.5])  # shuffled 0.1..0.8
    labels = np.array([1, 0, 1, 0, 0, 1, 1, 0])
    curve = calibration_curve(labels, probs, n_bins=4)
    # sorted: (0.1,0) (0.2,0) | (0.3,0) (0.4,1) | (0.5,0) (0.6,1) | (0.7,1) (0.8,1)
    expected = pl.DataFrame(
        {
            "bin": [0, 1, 2, 3],
            "mean_pred": [0.15, 0.35, 0.55, 0.75],
            "mean_label": [0.0, 0.5, 0.5, 1.0],
            "count": [2, 2, 2, 2],
        }
    )
    assert curve.columns == expected.columns
    assert curve["bin"].to_list() == expected["bin"].to_list()
    assert curve["count"].to_list() == expected["count"].to_list()
    np.testing.assert_allclose(curve["mean_pred"].to_numpy(), expected["mean_pred"].to_numpy())
    np.testing.assert_allclose(curve["mean_label"].to_numpy(), expected["mean_label"].to_numpy())


def test_calibration_curve_fewer_rows_than_bins_drops_empty_bins() -> None:
    curve = calibration_curve([0, 1, 1], [0.2, 0.9, 0.5], n_bins=10)
    assert curve["count"].to_list() == [1, 1, 1]
    assert curve["mean_pred"].to_list() == pytest.approx([0.2, 0.5, 0.9])


def test_compute_metrics_report() -> None:
    users = np.array([1, 1, 2, 2, 2])
    labels = np.array([0, 1, 1, 0, 1])
    probs = np.array([0.2, 0.7, 0.4, 0.6, 0.9])
    m = compute_metrics(users, labels, probs)
    assert set(m) == {"auc", "gauc", "logloss", "mean_pred", "mean_label", "n"}
    assert m["n"] == 5
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs))
    # user 1: AUC 1 (2 imps); user 2: positives 0.4, 0.9 vs negative 0.6 -> 1/2 (3 imps)
    assert m["gauc"] == pytest.approx((2 * 1.0 + 3 * 0.5) / 5)
    assert m["logloss"] == pytest.approx(logloss(labels, probs))
    assert m["mean_pred"] == pytest.approx(0.56)
    assert m["mean_label"] == pytest.approx(0.6)


# --------------------------------------------------------------------------- validation


def test_nan_scores_raise_with_name_and_count() -> None:
    with pytest.raises(ValueError, match=r"scores contains 2 NaN"):
        auc([0, 1, 0], [0.1, np.nan, np.nan])
    with pytest.raises(ValueError, match=r"scores contains 1 NaN"):
        gauc([1, 1], [0, 1], [np.nan, 0.3])
    with pytest.raises(ValueError, match=r"probs contains 1 NaN"):
        logloss([0, 1], [0.2, np.nan])
    with pytest.raises(ValueError, match=r"probs contains 3 NaN"):
        compute_metrics([1, 1, 2], [0, 1, 0], [np.nan] * 3)


def test_length_mismatch_raises_naming_arguments() -> None:
    with pytest.raises(ValueError, match=r"length mismatch: labels=3, scores=2"):
        auc([0, 1, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"user_ids=2, labels=3, scores=3"):
        gauc([1, 2], [0, 1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"labels=2, probs=1"):
        calibration([0, 1], [0.5])


def test_invalid_labels_and_probs_raise() -> None:
    with pytest.raises(ValueError, match=r"labels must be 0 or 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"probs must be probabilities"):
        logloss([0, 1], [-1.5, 2.0])  # logits passed by mistake
    with pytest.raises(ValueError, match=r"user_ids contains 1 missing"):
        gauc(np.array(["a", None], dtype=object), [0, 1], [0.1, 0.2])
