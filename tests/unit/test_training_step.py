"""The optimisation schedule: the learning rate decayed on a validation plateau (train.lr_plateau_factor) and
early stopping's bookkeeping (train.early_stopping_patience, train.early_stopping_min_delta)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.config import TrainConfig, load_config
from recsys.errors import ConfigError
from training.state import TrainState
from training.step import MIN_LEARNING_RATE, build_optimizer, decay_on_plateau

pytestmark = pytest.mark.unit


def test_a_plateau_multiplies_every_group_rate_down_to_the_floor() -> None:
    model = torch.nn.Linear(3, 1)
    train = TrainConfig(learning_rate=1e-3, lr_plateau_factor=0.1)
    optimizer = build_optimizer(model, train)
    assert decay_on_plateau(optimizer, train) == pytest.approx(1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(1e-4)]
    for _ in range(5):
        decay_on_plateau(optimizer, train)
    assert optimizer.param_groups[0]["lr"] == MIN_LEARNING_RATE
    # the rate is optimizer state: a resumed run (state dict round trip) keeps the decayed rate
    restored = build_optimizer(model, train)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.param_groups[0]["lr"] == MIN_LEARNING_RATE


def test_the_default_keeps_the_rate_constant() -> None:
    train = TrainConfig(learning_rate=3e-3)
    optimizer = build_optimizer(torch.nn.Linear(3, 1), train)
    assert decay_on_plateau(optimizer, train) == pytest.approx(3e-3)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("0", "greater than 0"), ("1.5", "less than or equal to 1"), (".nan", "finite number"), ("fast", "valid number")],
)
def test_a_bad_plateau_factor_is_refused_naming_the_field(tmp_path: Path, value: str, fragment: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(f"train:\n  lr_plateau_factor: {value}\n")
    with pytest.raises(ConfigError, match=rf"train\.lr_plateau_factor: .*{fragment}"):
        load_config(path)


def test_gains_within_min_delta_do_not_reset_the_patience() -> None:
    """A run creeping on by less than train.early_stopping_min_delta per epoch stops; the best epoch stays the
    last one that beat the best by more than it. Without a min_delta every gain counts."""
    aucs = [0.70, 0.75, 0.7505, 0.7509, 0.7508]
    strict, lenient = TrainState(), TrainState()
    stops = []
    for epoch, auc in enumerate(aucs, start=1):
        strict.end_epoch(epoch, auc, min_delta=1e-3)
        lenient.end_epoch(epoch, auc)
        stops.append(strict.epochs_without_improvement)
    assert stops == [0, 0, 1, 2, 3] and strict.best_epoch == 2 and strict.best_auc == 0.75
    assert lenient.best_epoch == 4 and lenient.best_auc == 0.7509


@pytest.mark.parametrize(("value", "fragment"), [("-0.001", "greater than or equal to 0"), ("0.5", "less than")])
def test_a_bad_min_delta_is_refused_naming_the_field(tmp_path: Path, value: str, fragment: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(f"train:\n  early_stopping_min_delta: {value}\n")
    with pytest.raises(ConfigError, match=rf"train\.early_stopping_min_delta: .*{fragment}"):
        load_config(path)
