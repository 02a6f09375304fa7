"""Candidate-to-history content similarity as features: SimTier (Taobao, arXiv 2407.19467).

For each content modality, the cosine similarity between the candidate's frozen content vector and
each history item's, bucketed into ``bins`` equal tiers over [-1, 1]: the share of the user's
(valid) history in each tier. The features hold no parameters and reach the prediction head beside
the id path, so content informs the prediction without passing through, or replacing, the id
embeddings; with uninformative content the head learns to ignore them.

Keys are the unit-normalised content vectors, concatenated over modalities ((N, K), zero where a
modality is missing); models append them to the cached item representation so that serving
computes them once per item like the rest.
"""

from __future__ import annotations

import torch
from torch import nn


class SimTier(nn.Module):
    """Per modality, the histogram of candidate-history cosine similarities: (B, M * bins) features."""

    def __init__(self, dims: dict[str, int], bins: int) -> None:
        super().__init__()
        if not dims:
            raise ValueError("SimTier needs at least one content modality")
        if bins < 2:
            raise ValueError(f"SimTier needs at least 2 bins, got {bins}")
        self.dims = dict(dims)
        self.bins = bins
        self.key_dim = sum(self.dims.values())
        self.out_dim = len(self.dims) * bins

    def keys(self, vectors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, K) keys from each modality's vectors (N, d_m) and presence masks (N,)."""
        parts = [
            nn.functional.normalize(vectors[m].float(), dim=-1) * masks[m].unsqueeze(-1).to(torch.float32)
            for m in self.dims
        ]
        return torch.cat(parts, dim=-1)

    def forward(self, candidates: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """Candidate keys (B, K), history keys (R, L, K) with mask (R, L), R = B or 1 -> (B, M * bins)."""
        out, offset = [], 0
        b = candidates.shape[0]
        for d in self.dims.values():
            c = candidates[:, offset : offset + d]  # (B, d)
            h = history[..., offset : offset + d]  # (R, L, d)
            offset += d
            if h.shape[0] == 1:
                sim = c @ h[0].transpose(0, 1)  # (B, L)
            else:
                sim = torch.bmm(h, c.unsqueeze(-1)).squeeze(-1)  # (B, L)
            present = (h.abs().sum(-1) > 0) & history_mask  # (R, L): history items with this modality
            valid = present.expand(b, -1) & (c.abs().sum(-1, keepdim=True) > 0)  # (B, L)
            out.append(self._tiers(sim, valid))
        return torch.cat(out, dim=1)

    def from_unique(
        self, keys: torch.Tensor, candidate: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor
    ) -> torch.Tensor:
        """The same features from the keys of N distinct items (N, K) and indices into them: candidates (B,),
        history (B, L) with mask (B, L). Training batches repeat items a lot: one (C, N) similarity matrix
        per modality, C distinct candidates against the N items, replaces B x L dot products over the full
        key width (and costs C/N of the full (N, N) one)."""
        out, offset = [], 0
        distinct, candidate = torch.unique(candidate, return_inverse=True)  # (C,), (B,) into distinct
        for d in self.dims.values():
            k = keys[:, offset : offset + d]  # (N, d)
            offset += d
            sim = (k[distinct] @ k.transpose(0, 1))[candidate.unsqueeze(1), history]  # (B, L)
            present = k.abs().sum(-1) > 0  # (N,)
            valid = present[history] & history_mask & present[distinct][candidate].unsqueeze(1)  # (B, L)
            out.append(self._tiers(sim, valid))
        return torch.cat(out, dim=1)

    def _tiers(self, sim: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, L) similarities and validity -> (B, bins) share of the valid history in each tier.

        A scatter-add of each valid history item into its row's tier, not a (B, L, bins) one-hot: the
        features have no gradient (frozen keys), and the one-hot's fill and sum cost more than the
        similarities. (Scatter-add also exports to ONNX, where bincount does not.)"""
        tier = ((sim.detach().clamp(-1, 1) + 1) * (self.bins / 2)).long().clamp(max=self.bins - 1)  # (B, L)
        counts = torch.zeros(sim.shape[0], self.bins, dtype=sim.dtype, device=sim.device)
        counts = counts.scatter_add(1, tier, valid.to(sim.dtype))
        return counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
