"""User-interest encoders over the behaviour sequence, conditioned on the candidate item.

Every encoder has the same interface, so they are swappable by name:

    encoder(history, history_mask, target) -> (B, D)
      history:      (B, L, D) item representations of past clicks, oldest first, newest LAST
      history_mask: (B, L) bool, True = a real item, False = padding (anywhere in the row)
      target:       (B, D) the candidate item's representation

and `encoder.attention(history, history_mask, target) -> (B, L)`, the per-position weights
(exactly 0 on padding), for tests and explanations.

One user against many candidates (serving): ``history`` (1, L, D) and ``history_mask`` (1, L)
broadcast against every one of the B targets, so the per-history work is done once.

Padding: history values at padded positions are replaced with zeros via torch.where first,
so what padding holds (NaN, inf) can change neither the output nor any gradient. An
all-padding history (a new user) encodes to zeros.

- MeanPooling: the masked mean (the DNN baseline; ignores the target).
- TargetAttention: DIN's activation unit and weighted sum.
- AttentionGRU: MARN's attention-based GRU (AUGRU as in DIEN): the update gate is scaled by
  the target attention score, so steps unrelated to the candidate barely move the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys.modules.mlp import MLP

Weighting = Literal["softmax", "sigmoid"]


def _zero_padding(
    history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes; return (history with padded positions exactly 0, mask as bool).

    ``history`` and ``history_mask`` have B rows, or 1 row shared by all B targets.
    """
    r, l, d = history.shape
    b = target.shape[0]
    if history_mask.shape != (r, l) or target.shape != (b, d) or r not in (1, b):
        raise ValueError(
            f"expected history (B or 1, L, D), history_mask (B or 1, L), target (B, D); got "
            f"{tuple(history.shape)}, {tuple(history_mask.shape)}, {tuple(target.shape)}"
        )
    mask = history_mask.bool()
    return torch.where(mask.unsqueeze(-1), history, torch.zeros_like(history)), mask


def masked_attention_weights(logits: torch.Tensor, mask: torch.Tensor, weighting: Weighting) -> torch.Tensor:
    """(B, L) logits -> (B, L) weights, exactly 0 where mask is False, never NaN.

    softmax: normalised over the valid positions (sum 1; an all-padding row gives zeros).
    sigmoid: each position independently in (0, 1), not normalised (DIN paper: keep the
             intensity of the user's interest; sigmoid keeps it bounded).
    """
    zeros = torch.zeros_like(logits)
    if weighting == "sigmoid":
        return torch.where(mask, torch.sigmoid(logits), zeros)
    if weighting != "softmax":
        raise ValueError(f"unknown weighting {weighting!r}; valid: ['sigmoid', 'softmax']")
    # Hand-rolled masked softmax: softmax over a row of -inf is NaN, and even a where() after
    # it lets NaN into the backward pass. Every exp() argument here is finite.
    lowest = torch.finfo(logits.dtype).min
    row_max = torch.where(mask, logits, torch.full_like(logits, lowest)).amax(dim=-1, keepdim=True)  # (B, 1)
    row_max = torch.where(mask.any(dim=-1, keepdim=True), row_max, torch.zeros_like(row_max)).detach()
    e = torch.where(mask, torch.exp(torch.where(mask, logits - row_max, zeros)), zeros)  # (B, L)
    total = e.sum(dim=-1, keepdim=True)  # (B, 1); 0 only for all-padding rows
    return e / torch.where(total > 0, total, torch.ones_like(total))


class AttentionScorer(nn.Module):
    """DIN's activation unit: MLP([h, t, h - t, h * t]) -> one relevance logit per position.
    The difference and product make the target-history interaction explicit for a small MLP."""

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40), activation: str = "sigmoid") -> None:
        super().__init__()
        # sigmoid hidden units: DIN's released code (its paper uses Dice; we keep deps small).
        self.mlp = MLP(4 * dim, list(hidden), out_dim=1, activation=activation)

    def forward(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The first layer on [h, t, h - t, h * t] is computed without building that (B, L, 4D) tensor:
        # W [h; t; h-t; h*t] = (W_h + W_d) h + (W_t - W_d) t + W_p (h * t). The h part is per history
        # item and the t part per row, so only the product term costs B * L; a history of one row shared
        # by every target (serving: one user, many candidates) is projected once.
        first, rest = self.mlp.layers[0], self.mlp.layers[1:]
        assert isinstance(first, nn.Linear)
        w_h, w_t, w_d, w_p = first.weight.split(history.shape[-1], dim=1)  # (H, D) each
        hist_part = F.linear(history, w_h + w_d)  # (B or 1, L, H)
        target_part = F.linear(target, w_t - w_d, first.bias)  # (B, H)
        hidden = hist_part + target_part.unsqueeze(1) + F.linear(history * target.unsqueeze(1), w_p)  # (B, L, H)
        b, l, h = hidden.shape
        return rest(hidden.reshape(b * l, h)).reshape(b, l)  # (B, L)


# --------------------------------------------------------------------------- mean pooling


class MeanPooling(nn.Module):
    """Masked mean of the history (the DNN baseline's sequence encoder; the target is not used)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = self.out_dim = dim

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        history, mask = _zero_padding(history, history_mask, target)  # (B or 1, L, D), (B or 1, L)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(history.dtype)  # (B or 1, 1)
        return (history.sum(dim=1) / count).expand(target.shape[0], -1)  # (B, D)

    def attention(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, L) uniform weights over the real positions (what the mean gives every item)."""
        _, mask = _zero_padding(history, history_mask, target)
        logits = torch.zeros(target.shape[0], history.shape[1], dtype=history.dtype, device=history.device)
        return masked_attention_weights(logits, mask, "softmax")


# --------------------------------------------------------------------------- DIN


class _TargetScored(nn.Module):
    """Shared by the sequence encoders: an attention scorer of history items against the target."""

    def __init__(self, dim: int, hidden: Sequence[int], activation: str, weighting: Weighting) -> None:
        super().__init__()
        if weighting not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown weighting {weighting!r}; valid: ['sigmoid', 'softmax']")
        self.dim, self.out_dim, self.weighting = dim, dim, weighting
        self.scorer = AttentionScorer(dim, hidden, activation)

    def attention(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        history, mask = _zero_padding(history, history_mask, target)  # (B, L, D), (B, L)
        return masked_attention_weights(self.scorer(history, target), mask, self.weighting)  # (B, L)


class TargetAttention(_TargetScored):
    """DIN: interest = sum_j w_j h_j with w_j = attention(h_j, target).

    Weighting defaults to a masked softmax (ours): the DIN paper argues for unnormalised
    weights, but DIN's own released code normalises, and a bounded, scale-free interest vector
    is easier on the prediction MLP. `weighting="sigmoid"` gives the unnormalised variant.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (80, 40),
        activation: str = "sigmoid",
        weighting: Weighting = "softmax",
    ) -> None:
        super().__init__(dim, hidden, activation, weighting)

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        history, mask = _zero_padding(history, history_mask, target)  # (B, L, D), (B, L)
        w = masked_attention_weights(self.scorer(history, target), mask, self.weighting)  # (B, L)
        return torch.matmul(w.unsqueeze(1), history).squeeze(1)  # (B, 1, L) @ (B or 1, L, D) -> (B, D)


# --------------------------------------------------------------------------- attention GRU


class AttentionGRU(_TargetScored):
    """Attention-based GRU (MARN's APGRU; AUGRU of DIEN):

        r_t = sigmoid(W_r x_t + U_r h + b_r)      reset gate
        u_t = sigmoid(W_u x_t + U_u h + b_u)      update gate
        n_t = tanh(W_n x_t + r_t * (U_n h + b_hn) + b_in)
        u'_t = a_t * u_t                          a_t: attention of x_t to the target
        h_t = (1 - u'_t) * h_{t-1} + u'_t * n_t

    Output: the last hidden state (newest item last), (B, D). Choices (ours):
    - a_t is scored from the history item itself against the target (one GRU layer; DIEN
      scores a first GRU's states, the item representations here are already rich);
    - weighting defaults to sigmoid: each a_t in (0, 1) gates its own step; a softmax over
      positions would shrink every gate by ~1/L and keep the state near h_0 on long rows;
    - padded steps carry h_{t-1} through unchanged (a_t = 0 does that by itself; an explicit
      where() makes it exact and independent of the weighting).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (80, 40),
        activation: str = "sigmoid",
        weighting: Weighting = "sigmoid",
    ) -> None:
        super().__init__(dim, hidden, activation, weighting)
        self.input_gates = nn.Linear(dim, 3 * dim)  # W_{r,u,n} x + b_i
        self.hidden_gates = nn.Linear(dim, 3 * dim)  # U_{r,u,n} h + b_h

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        history, mask = _zero_padding(history, history_mask, target)  # (B, L, D), (B, L)
        a = masked_attention_weights(self.scorer(history, target), mask, self.weighting)  # (B, L)
        gx = self.input_gates(history)  # (B or 1, L, 3D): all input projections in one matmul
        h = target.new_zeros(target.shape[0], self.dim)  # (B, D)
        for t in range(history.shape[1]):
            gh = self.hidden_gates(h)  # (B, 3D)
            xr, xu, xn = gx[:, t].chunk(3, dim=-1)  # (B, D) each
            hr, hu, hn = gh.chunk(3, dim=-1)
            r = torch.sigmoid(xr + hr)
            u = torch.sigmoid(xu + hu) * a[:, t : t + 1]  # (B, D): attention-scaled update gate
            n = torch.tanh(xn + r * hn)
            h_new = (1.0 - u) * h + u * n
            h = torch.where(mask[:, t : t + 1], h_new, h)  # padding: carry the state through
        return h  # (B, D)


# --------------------------------------------------------------------------- registry

SEQUENCE_ENCODERS: dict[str, type[nn.Module]] = {
    "mean": MeanPooling,
    "din": TargetAttention,
    "apgru": AttentionGRU,
}


def build_sequence_encoder(name: str, dim: int, **kwargs: object) -> nn.Module:
    """Sequence encoder by registry name ('mean', 'din', 'apgru'), e.g. build_sequence_encoder("apgru", dim=64)."""
    if name not in SEQUENCE_ENCODERS:
        raise ValueError(f"unknown sequence encoder {name!r}; valid names: {sorted(SEQUENCE_ENCODERS)}")
    return SEQUENCE_ENCODERS[name](dim=dim, **kwargs)
