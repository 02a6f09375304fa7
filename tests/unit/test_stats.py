"""The paired bootstrap over users (recsys.stats) on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recsys.stats import paired_bootstrap_auc, weighted_auc


def _data(n_users: int = 200, per_user: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    signal = rng.normal(size=len(users))
    labels = (rng.random(len(users)) < 1 / (1 + np.exp(-2 * signal))).astype(np.int8)
    return users, labels, signal


def test_weighted_auc_matches_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 10, 300).astype(float)  # many ties
    w = rng.integers(0, 4, 300).astype(float)
    assert weighted_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert weighted_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w))


def test_identical_predictions_give_zero_gain_and_p_one() -> None:
    users, labels, signal = _data()
    result = paired_bootstrap_auc(users, labels, signal, signal.copy(), n_boot=200)
    assert result.diff == 0.0 and result.ci_low == 0.0 and result.ci_high == 0.0
    assert result.p_value == pytest.approx(1.0)
    assert result.n_users == 200 and result.n_boot == 200


def test_clearly_better_model_has_small_p_and_positive_ci() -> None:
    users, labels, signal = _data()
    noise = np.random.default_rng(2).normal(size=len(signal))
    good, bad = signal, signal + 3 * noise
    result = paired_bootstrap_auc(users, labels, good, bad, n_boot=300)
    assert result.diff == pytest.approx(roc_auc_score(labels, good) - roc_auc_score(labels, bad))
    assert result.diff > 0.05 and result.ci_low > 0
    assert result.p_value < 0.01
    swapped = paired_bootstrap_auc(users, labels, bad, good, n_boot=300)
    assert swapped.diff == pytest.approx(-result.diff) and swapped.ci_high < 0 and swapped.p_value < 0.01


def test_several_seeds_per_side_use_the_mean_auc() -> None:
    users, labels, signal = _data(seed=3)
    rng = np.random.default_rng(4)
    a = [signal + rng.normal(size=len(signal)) for _ in range(3)]
    b = [signal + 2 * rng.normal(size=len(signal)) for _ in range(2)]
    result = paired_bootstrap_auc(users, labels, a, b, n_boot=50)
    expected = np.mean([roc_auc_score(labels, s) for s in a]) - np.mean([roc_auc_score(labels, s) for s in b])
    assert result.diff == pytest.approx(expected)


def test_same_seed_same_result_and_shape_errors() -> None:
    users, labels, signal = _data(n_users=30)
    other = signal[::-1].copy()
    assert paired_bootstrap_auc(users, labels, signal, other, n_boot=50, seed=7) == paired_bootstrap_auc(
        users, labels, signal, other, n_boot=50, seed=7
    )
    with pytest.raises(ValueError, match="scores_b: scores of shape"):
        paired_bootstrap_auc(users, labels, signal, signal[:-1])
