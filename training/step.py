"""One optimisation step and the optimizer it uses: plain torch, no Ray.

The Ray training loop (:mod:`training.loop`), the benchmarks and the tests call these, so a
step measured or tested anywhere is the step a training run takes.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.config import ModelConfig, TrainConfig
from recsys.features.batch import Batch
from recsys.features.item_table import ItemInputs
from recsys.losses import total_loss


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam over every parameter of ``model`` with ``train.learning_rate`` and ``train.weight_decay``."""
    return torch.optim.Adam(model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)


#: The learning rate :func:`decay_on_plateau` never goes below.
MIN_LEARNING_RATE = 1e-6


def decay_on_plateau(optimizer: torch.optim.Optimizer, train: TrainConfig) -> float:
    """After an epoch without a better validation AUC: every parameter group's learning rate times
    ``train.lr_plateau_factor`` (not below :data:`MIN_LEARNING_RATE`); returns the new rate of the first group.
    The rate lives in the optimizer's state, so a resumed run keeps it."""
    for group in optimizer.param_groups:
        group["lr"] = max(group["lr"] * train.lr_plateau_factor, MIN_LEARNING_RATE)
    return float(optimizer.param_groups[0]["lr"])


def train_step(
    model: nn.Module, batch: Batch, items: ItemInputs, optimizer: torch.optim.Optimizer, model_config: ModelConfig
) -> dict[str, float]:
    """Forward, the training objective (:func:`recsys.losses.total_loss`), backward and one optimizer step.

    ``model`` is used in the mode it is in (the caller puts it in training mode); returns the loss
    parts as floats (``click`` always; the adversarial terms when the model has them).
    """
    loss, parts = total_loss(model(batch, items), batch.label, model_config)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return parts
