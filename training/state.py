"""Training state beside the model checkpoint: optimizer, counters, RNG — everything to resume exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "train_state.pt"


@dataclass
class TrainState:
    """Where a run is: the next epoch to run, steps done, early-stopping bookkeeping, history."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_auc: float = float("-inf")
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch metrics

    def end_epoch(self, epoch: int, val_auc: float, min_delta: float = 0.0) -> bool:
        """Count epoch ``epoch`` (1-based) as done with this validation AUC; True when it beats the best so far
        by more than ``min_delta``."""
        self.epoch = epoch
        improved = val_auc > self.best_auc + min_delta
        if improved:
            self.best_auc, self.best_epoch, self.epochs_without_improvement = val_auc, epoch, 0
        else:
            self.epochs_without_improvement += 1
        return improved


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, numpy, python) as a weights_only-loadable dict."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))


def save_train_state(
    directory: Path, state: TrainState, optimizer: torch.optim.Optimizer, rng_per_rank: list[dict[str, Any]]
) -> None:
    """Write ``train_state.pt`` (a plain dict: loadable with weights_only=True).

    ``rng_per_rank``: every worker's RNG state. Ranks consume random numbers differently (e.g.
    id dropout draws one number per distinct item in their batch), so each resumes its own.
    """
    payload = {"state": state.__dict__, "optimizer": optimizer.state_dict(), "rng": rng_per_rank}
    torch.save(payload, directory / STATE_FILE)


def load_train_state(directory: Path, optimizer: torch.optim.Optimizer, rank: int = 0) -> TrainState:
    """Restore optimizer and this rank's RNG from ``train_state.pt``; return the counters."""
    payload = torch.load(directory / STATE_FILE, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(payload["optimizer"])
    rngs = payload["rng"]
    _set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])  # a different world size: best effort
    return TrainState(**payload["state"])
