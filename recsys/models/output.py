"""What a model's forward returns: logits plus what the losses and the analysis need."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AdversarialTerms:
    """Per unique item in the batch (N items, M modality slots); None where a part is disabled."""

    mask: torch.Tensor  # (N, M) bool, modality present
    d0_logits: torch.Tensor | None  # (N, M, M) D0 on detached shared features
    d1_logits: torch.Tensor | None  # (N, M, M) D1 on gradient-reversed shared features
    ds_logits: torch.Tensor | None  # (N, M, M) D1's parameters on the specific features (no reversal)
    d1_weights: torch.Tensor | None  # (N, M) per-sample weights of the D1 loss (w~ from D0, or uniform)
    shared: torch.Tensor | None  # (N, D) fused shared feature c
    specific: torch.Tensor  # (N, D) fused specific feature s


@dataclass
class ModelOutput:
    """A model's forward result. Probabilities are ``torch.sigmoid(logits)``, taken only when scoring."""

    logits: torch.Tensor  # (B,)
    adversarial: AdversarialTerms | None = None
    modal_attention: torch.Tensor | None = (
        None  # (B, M) each modality's share of the candidate's fused feature (marn.modal_share)
    )
