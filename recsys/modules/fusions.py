"""Multimodal fusions: M per-modality vectors of one item -> one item vector.

Interface (every fusion, so they are swappable by name):

    fusion(x, mask) -> FusionOutput(fused, weights)
      x:       (..., M, D) per-modality features, stacked in a fixed modality order
      mask:    (..., M) bool, True = the item has that modality
      fused:   (..., out_dim)
      weights: (..., M, D) or (..., M, 1) with fused == (weights * x_present).sum(-2), or None
               for fusions that are not a weighted sum (concat)

A stacked tensor rather than a dict: MARN's discriminators, D0 weights and the shared-vector
sum all work on the (..., M, D) stack, and the leading dims may be (B,) for candidates or
(B, L) for behaviour histories, fused in one call. `stack_modalities` turns the dict form
into the stack.

Absent modalities: every fusion first replaces their values with zeros via torch.where (not a
multiplication by the mask: 0 * NaN = NaN), so what an absent slot holds can change neither
the output nor, through 0 * inf in the backward pass, any gradient. An item with no modality
present fuses to zeros (mean, modal attention) or to the bias (concat).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FusionOutput:
    fused: torch.Tensor  # (..., out_dim)
    weights: torch.Tensor | None  # (..., M, D) or (..., M, 1); exactly 0 on absent modalities


def stack_modalities(
    features: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    order: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dict form -> stacked form. features[name]: (..., D), masks[name]: (..., ) bool.

    A name in `order` missing from `features` is an absent modality (zeros, mask False), so
    a batch without any audio still stacks to the model's M slots. A name present in
    `features` but missing from `masks` counts as present everywhere.
    Returns x (..., M, D) and mask (..., M) in `order`.
    """
    present = [name for name in order if name in features]
    if not present:
        raise ValueError(f"none of the modalities {list(order)} is in features (got {sorted(features)})")
    unknown = sorted(set(features) - set(order))
    if unknown:
        raise ValueError(f"features has modalities {unknown} not in order {list(order)}")
    ref = features[present[0]]
    xs, ms = [], []
    for name in order:
        if name in features:
            x = features[name]
            if x.shape != ref.shape:
                raise ValueError(f"modality {name!r} has shape {tuple(x.shape)}, expected {tuple(ref.shape)}")
            m = masks[name].bool() if name in masks else torch.ones(ref.shape[:-1], dtype=torch.bool, device=ref.device)
        else:
            x = torch.zeros_like(ref)
            m = torch.zeros(ref.shape[:-1], dtype=torch.bool, device=ref.device)
        xs.append(x)
        ms.append(m)
    return torch.stack(xs, dim=-2), torch.stack(ms, dim=-1)  # (..., M, D), (..., M)


def _check_sizes(n_modalities: int, dim: int) -> None:
    if n_modalities < 1 or dim < 1:
        raise ValueError(f"n_modalities and dim must be >= 1, got n_modalities={n_modalities}, dim={dim}")


def _check_and_zero_absent(
    x: torch.Tensor, mask: torch.Tensor, n_modalities: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the stacked layout; return (x with absent slots exactly 0, mask as bool (..., M, 1))."""
    if x.shape[-2:] != (n_modalities, dim) or mask.shape != x.shape[:-1]:
        raise ValueError(
            f"expected x (..., {n_modalities}, {dim}) and mask (..., {n_modalities}); "
            f"got {tuple(x.shape)} and {tuple(mask.shape)}"
        )
    keep = mask.bool().unsqueeze(-1)  # (..., M, 1)
    return torch.where(keep, x, torch.zeros_like(x)), keep


# --------------------------------------------------------------------------- fusions


class ConcatFusion(nn.Module):
    """Early fusion: concatenate the M vectors (absent ones zero) and project to out_dim.
    The 'content concat' ablation: no per-modality weighting at all."""

    def __init__(self, n_modalities: int, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        _check_sizes(n_modalities, dim)
        self.n_modalities, self.dim = n_modalities, dim
        self.out_dim = out_dim if out_dim is not None else dim
        self.proj = nn.Linear(n_modalities * dim, self.out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        x, _ = _check_and_zero_absent(x, mask, self.n_modalities, self.dim)  # (..., M, D)
        fused = self.proj(x.flatten(-2))  # (..., M*D) -> (..., out_dim)
        return FusionOutput(fused=fused, weights=None)


class MeanFusion(nn.Module):
    """Mean over the present modalities; no parameters. A baseline for modal attention."""

    def __init__(self, n_modalities: int, dim: int) -> None:
        super().__init__()
        _check_sizes(n_modalities, dim)
        self.n_modalities, self.dim = n_modalities, dim
        self.out_dim = dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        x, keep = _check_and_zero_absent(x, mask, self.n_modalities, self.dim)  # (..., M, D), (..., M, 1)
        count = keep.sum(dim=-2, keepdim=True).clamp(min=1).to(x.dtype)  # (..., 1, 1); 1 avoids 0/0
        weights = torch.where(keep, 1.0 / count, torch.zeros_like(count))  # (..., M, 1)
        fused = (weights * x).sum(dim=-2)  # (..., D)
        return FusionOutput(fused=fused, weights=weights)


class ModalAttentionFusion(nn.Module):
    """MARN's modal attention (paper): a_m = tanh(W_m s_m + b_m), s = sum_m a_m * s_m.

    The weights are vectors (element-wise, one per feature dimension) and come from the
    SPECIFIC features only: weights computed from shared (redundant) information would not
    reflect each modality's own importance. One (W_m, b_m) per modality slot. No softmax
    across modalities (the paper has none): tanh weights in (-1, 1) let a modality's feature
    be damped or flipped independently of the others.
    """

    def __init__(self, n_modalities: int, dim: int) -> None:
        super().__init__()
        _check_sizes(n_modalities, dim)
        self.n_modalities, self.dim = n_modalities, dim
        self.out_dim = dim
        # W_m stored as (M, D_in, D_out) for one einsum over all modalities; nn.Linear's init.
        bound = dim**-0.5
        self.weight = nn.Parameter(torch.empty(n_modalities, dim, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_modalities, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        x, keep = _check_and_zero_absent(x, mask, self.n_modalities, self.dim)  # (..., M, D), (..., M, 1)
        a = torch.tanh(torch.einsum("...md,mde->...me", x, self.weight) + self.bias)  # (..., M, D)
        # An absent slot has x = 0 but a = tanh(b_m) != 0: zero its weight explicitly.
        a = torch.where(keep, a, torch.zeros_like(a))
        fused = (a * x).sum(dim=-2)  # (..., D)
        return FusionOutput(fused=fused, weights=a)


# --------------------------------------------------------------------------- registry

FUSIONS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "mean": MeanFusion,
    "modal_attention": ModalAttentionFusion,
}


def build_fusion(name: str, n_modalities: int, dim: int, **kwargs: object) -> nn.Module:
    """Fusion by registry name, e.g. build_fusion("modal_attention", n_modalities=3, dim=64)."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; valid names: {sorted(FUSIONS)}")
    return FUSIONS[name](n_modalities=n_modalities, dim=dim, **kwargs)
