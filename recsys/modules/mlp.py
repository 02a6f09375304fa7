"""A plain multi-layer perceptron, the building block of every tower in the project.

Linear -> [BatchNorm] -> activation -> dropout, repeated per hidden width, then an optional
output Linear with no activation (logits or a feature vector: the caller decides).
Any number of leading dimensions is accepted: (..., in_dim) -> (..., out_dim).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda width: nn.ReLU(),
    "leaky_relu": lambda width: nn.LeakyReLU(0.01),
    "prelu": lambda width: nn.PReLU(width),  # one slope per unit, as in DIN's towers
    "gelu": lambda width: nn.GELU(),
    "tanh": lambda width: nn.Tanh(),
    "sigmoid": lambda width: nn.Sigmoid(),  # DIN's original attention unit uses sigmoid
}


def build_activation(name: str, width: int) -> nn.Module:
    """Activation module by name; `width` is used by per-unit activations (prelu)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid names: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](width)


class MLP(nn.Module):
    """(..., in_dim) -> (..., out_dim). With `out_dim=None` the last hidden layer is the output
    (activated), so the MLP can serve as a feature encoder; with an int a final plain Linear
    is added (no activation), which is what logit heads want."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim}")
        if any(w < 1 for w in hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
        if out_dim is not None and out_dim < 1:
            raise ValueError(f"out_dim must be >= 1 or None, got {out_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        layers: list[nn.Module] = []
        width = in_dim
        for next_width in hidden:
            layers.append(nn.Linear(width, next_width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(next_width))
            layers.append(build_activation(activation, next_width))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = next_width
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d wants (N, C): fold all leading dims into the batch, then unfold.
        lead = x.shape[:-1]
        y = self.layers(x.reshape(-1, x.shape[-1]))  # (N, out_dim)
        return y.reshape(*lead, self.out_dim)
