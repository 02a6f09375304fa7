"""Adversarial blocks of MARN (docs/marn.md, "Double discriminators").

- Gradient reversal (DANN): identity forward, gradient times -lambda backward. Put between
  the shared encoder I and the discriminator D1, one optimizer and one backward pass play the
  min-max game: D1 descends its loss, I ascends it.
- ModalityDiscriminator: an M-way classifier ("which modality did this vector come from?").
  D0, D1 and Ds are instances (Ds shares D1's parameters: call D1 on the specific features
  without reversal).
- D0 sample weights: w = 1 - p_D0(true modality), detached, and w~ = w normalised over the
  item's present modalities; the shared vector is c = sum_m w~_m c_m.

Layout convention (shared with fusions.py): per-item modality features are stacked as
x (..., M, D) with a bool mask (..., M), True = the item has that modality. Slot m of the
stack is modality class m for the discriminators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from recsys.modules.mlp import MLP

# --------------------------------------------------------------------------- gradient reversal


class _GradientReversalFunction(torch.autograd.Function):
    """y = x forward; dL/dx = -lambda * dL/dy backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        # view_as: a new tensor node (so autograd calls our backward), no copy of the data.
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad_output, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by -lambda_ in the backward pass."""
    return _GradientReversalFunction.apply(x, float(lambda_))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`. `lambda_` is a plain attribute so a training loop
    can ramp it (DANN's schedule 2 / (1 + exp(-10 p)) - 1) without rebuilding the model."""

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        if lambda_ < 0:
            raise ValueError(f"lambda_ must be >= 0 (the sign is what reversal adds), got {lambda_}")
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


# --------------------------------------------------------------------------- discriminator


class ModalityDiscriminator(nn.Module):
    """(..., in_dim) -> modality logits (..., n_modalities). No softmax: losses take logits."""

    def __init__(
        self,
        in_dim: int,
        n_modalities: int,
        hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if n_modalities < 2:
            # A 1-way classifier has nothing to learn and nothing to fool.
            raise ValueError(f"a modality discriminator needs n_modalities >= 2, got {n_modalities}")
        self.n_modalities = n_modalities
        self.net = MLP(in_dim, list(hidden), out_dim=n_modalities, dropout=dropout, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (..., M)


def modality_targets(mask: torch.Tensor) -> torch.Tensor:
    """Class labels for a stacked (..., M) layout: slot m is modality m. Returns (..., M) long,
    ready for cross-entropy on logits (..., M, M) restricted to `mask`."""
    m = mask.shape[-1]
    return torch.arange(m, device=mask.device).expand(mask.shape)


# --------------------------------------------------------------------------- D0 sample weights


def d0_sample_weights(
    d0_logits: torch.Tensor,
    mask: torch.Tensor,
    modality_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """w = 1 - softmax(D0 logits)[true modality], per item and modality; (..., M, M) -> (..., M).

    A shared feature whose modality D0 tells easily carries little common information and
    should count less. Returned detached (docs/marn.md: the weights are constants when
    weighting; D0 itself is trained by its own classification loss). Absent modalities get
    exactly 0, whatever their logits hold (NaN included).

    d0_logits:      (..., M, M): D0's logits for each stacked slot.
    mask:           (..., M) bool, True = modality present.
    modality_index: (M,) long, the class of each slot; default arange(M) (slot m = class m).
    """
    m = d0_logits.shape[-1]
    if d0_logits.shape[-2] != m or mask.shape != d0_logits.shape[:-1]:
        raise ValueError(
            f"expected d0_logits (..., M, M) and mask (..., M); got {tuple(d0_logits.shape)} and {tuple(mask.shape)}"
        )
    if modality_index is None:
        modality_index = torch.arange(m, device=d0_logits.device)
    mask = mask.bool()
    with torch.no_grad():
        probs = d0_logits.detach().float().softmax(dim=-1)  # (..., M, M)
        index = modality_index.to(d0_logits.device).expand(mask.shape).unsqueeze(-1)  # (..., M, 1)
        p_true = probs.gather(-1, index).squeeze(-1)  # (..., M)
        w = (1.0 - p_true).clamp(0.0, 1.0)  # clamp: float rounding can step past the ends
        w = torch.where(mask, w, torch.zeros_like(w))
    return w.to(d0_logits.dtype)


def normalize_present_weights(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """w~ = w / sum over present modalities; (..., M) -> (..., M).

    Absent modalities get exactly 0. Where every present weight is 0 (D0 certain of all of
    them) the weights fall back to uniform over the present modalities, so w~ still sums to 1;
    an item with no modality present gets all zeros. Never NaN.
    """
    mask = mask.bool()
    zeros = torch.zeros_like(weights)
    w = torch.where(mask, weights, zeros)  # (..., M); drops whatever absent slots hold
    total = w.sum(dim=-1, keepdim=True)  # (..., 1)
    count = mask.sum(dim=-1, keepdim=True).to(weights.dtype)  # (..., 1)
    uniform = torch.where(mask, 1.0 / count.clamp(min=1.0), zeros)
    # Divide by a safe denominator; where() then keeps only the rows where it was the real one.
    normalised = w / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, normalised, uniform)
