"""Losses as plain functions; their weights come from the model config.

L = BCE(click) + lambda_adv * L_D1 + lambda_s * L_Ds + lambda_0 * L_D0 + lambda_orth * L_orth
(docs: docs/marn.md). The min-max game of D1 against the shared encoder runs through a
gradient-reversal layer inside the model, so every term here is simply minimised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.config import ModelConfig
from recsys.models.output import AdversarialTerms, ModelOutput


def click_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits (numerically stable)."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def _modality_ce(logits: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of (N, M, M) logits against slot index m, over present slots only.

    With ``weights`` (N, M), a weighted sum per item averaged over items; else a plain mean.
    """
    n, m, _ = logits.shape
    targets = torch.arange(m, device=logits.device).expand(n, m)
    ce = F.cross_entropy(logits.reshape(n * m, m), targets.reshape(-1), reduction="none").view(n, m)
    ce = torch.where(mask, ce, torch.zeros_like(ce))  # absent slots contribute nothing (not even NaN)
    if weights is None:
        return ce.sum() / mask.sum().clamp(min=1)
    return (ce * weights).sum() / mask.any(dim=1).sum().clamp(min=1)


def _present(value: torch.Tensor | None, name: str) -> torch.Tensor:
    """``value``, which the model computes only when the part that needs it is enabled."""
    if value is None:
        raise ValueError(f"AdversarialTerms.{name} is None: the model was built without the part this loss needs")
    return value


def d0_loss(terms: AdversarialTerms) -> torch.Tensor:
    """D0 learns to tell each shared feature's modality (on detached features: it only measures)."""
    return _modality_ce(_present(terms.d0_logits, "d0_logits"), terms.mask)


def d1_loss(terms: AdversarialTerms) -> torch.Tensor:
    """D1 on reversed shared features, weighted per sample: D1 learns, the shared encoder fools it."""
    return _modality_ce(_present(terms.d1_logits, "d1_logits"), terms.mask, terms.d1_weights)


def ds_loss(terms: AdversarialTerms) -> torch.Tensor:
    """D1's classifier on the specific features, without reversal: keeps them modality-specific."""
    return _modality_ce(_present(terms.ds_logits, "ds_logits"), terms.mask)


def orthogonality_loss(terms: AdversarialTerms) -> torch.Tensor:
    """Squared cosine between shared and specific features: pushes them to carry different information."""
    cos = F.cosine_similarity(_present(terms.shared, "shared"), terms.specific, dim=-1, eps=1e-6)
    return (cos**2).mean()


def total_loss(output: ModelOutput, labels: torch.Tensor, config: ModelConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The training objective and its parts (as floats, for logging)."""
    loss = click_loss(output.logits, labels)
    parts = {"click": float(loss.detach())}
    terms = output.adversarial
    if terms is not None:
        for name, fn, weight, needed in (
            ("d0", d0_loss, config.lambda_0, terms.d0_logits),
            ("d1", d1_loss, config.lambda_adv, terms.d1_logits),
            ("ds", ds_loss, config.lambda_s, terms.ds_logits),
            ("orth", orthogonality_loss, config.lambda_orth, terms.shared),
        ):
            if needed is None or weight == 0.0:
                continue
            value = fn(terms)
            loss = loss + weight * value
            parts[name] = float(value.detach())
    parts["total"] = float(loss.detach())
    return loss, parts
