"""The optimisation step's schedule: the learning rate decayed on a validation plateau (train.lr_plateau_factor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.config import TrainConfig, load_config
from recsys.errors import ConfigError
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
