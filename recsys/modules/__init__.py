"""Reusable building blocks (pure torch; the models in recsys/models compose them).

- mlp:         MLP
- adversarial: gradient reversal, ModalityDiscriminator, D0 sample weights
- fusions:     per-item modality fusion, stacked layout x (..., M, D) + mask (..., M)
- sequence:    behaviour-sequence encoders (mean pooling, DIN target attention, attention GRU)
- similarity:  candidate-to-history content similarity features (SimTier)
"""

from recsys.modules.adversarial import (
    GradientReversal,
    ModalityDiscriminator,
    d0_sample_weights,
    grad_reverse,
    modality_targets,
    normalize_present_weights,
)
from recsys.modules.fusions import (
    FUSIONS,
    ConcatFusion,
    FusionOutput,
    MeanFusion,
    ModalAttentionFusion,
    build_fusion,
    stack_modalities,
)
from recsys.modules.mlp import MLP
from recsys.modules.sequence import (
    SEQUENCE_ENCODERS,
    AttentionGRU,
    AttentionScorer,
    MeanPooling,
    TargetAttention,
    build_sequence_encoder,
    masked_attention_weights,
)
from recsys.modules.similarity import SimTier

__all__ = [
    "FUSIONS",
    "MLP",
    "SEQUENCE_ENCODERS",
    "AttentionGRU",
    "AttentionScorer",
    "ConcatFusion",
    "FusionOutput",
    "GradientReversal",
    "MeanFusion",
    "MeanPooling",
    "ModalAttentionFusion",
    "ModalityDiscriminator",
    "SimTier",
    "TargetAttention",
    "build_fusion",
    "build_sequence_encoder",
    "d0_sample_weights",
    "grad_reverse",
    "masked_attention_weights",
    "modality_targets",
    "normalize_present_weights",
    "stack_modalities",
]
