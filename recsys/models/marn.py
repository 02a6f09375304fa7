"""MARN (Li et al., "Adversarial Multimodal Representation Learning for CTR Prediction", WWW 2020;
docs/marn.md) and its ablation ladder.

| builder  | item representation                                           |
|----------|---------------------------------------------------------------|
| concat   | ids + content, early fusion by concatenation                  |
| man      | ids + content, modal attention, no adversarial part           |
| man_d1   | man + shared encoder against one unweighted discriminator D1  |
| marn     | man + shared encoder + D0 weighting + D1 + Ds (full MARN)     |
| marn_paper | marn with the paper's id path, whatever the config says     |

Every one is a :class:`~recsys.models.ctr.CTRModel` whose item encoder is a
:class:`~recsys.models.item_encoders.MultimodalItemEncoder` (the equations are in its module), with
``model.sequence`` over the history (DIN target attention or MARN's attention GRU). The adversarial
losses are in :mod:`recsys.losses`.
"""

from __future__ import annotations

from collections.abc import Mapping

from recsys.config import ModelConfig
from recsys.errors import ConfigError
from recsys.features.feature_map import FeatureMap
from recsys.models.ctr import CTRModel
from recsys.models.inputs import ItemIdFeatures, require_item_features
from recsys.models.item_encoders import (
    AdversarialParts,
    IdBesideContentItemEncoder,
    IdItemEncoder,
    MultimodalItemEncoder,
)
from recsys.modules import SimTier


def marn(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> CTRModel:
    """Full MARN: modal attention over the specific features, the shared feature against D0-weighted D1, Ds."""
    return _content_model(config, feature_map, content_dims, "modal_attention", AdversarialParts())


def marn_paper(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> CTRModel:
    """MARN as the paper builds it: the ids one modality of the fusion, no content gate, no similarity features
    (whatever ``model.id_path``, ``content_gate`` and ``simtier_bins`` say), so a comparison shows what they add."""
    paper = config.model_copy(
        update={
            "id_path": "fusion",
            "content_gate": False,
            "cold_content_gate": False,
            "maturity_tiers": 0,
            "simtier_bins": 0,
        }
    )
    return marn(paper, feature_map, content_dims)


def man_d1(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> CTRModel:
    """MAN + the shared encoder against one unweighted discriminator D1 (no D0 weighting, no Ds)."""
    parts = AdversarialParts(shared=True, d0_weighting=False, ds=False)
    return _content_model(config, feature_map, content_dims, "modal_attention", parts)


def man(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> CTRModel:
    """Modal attention over the modality-specific features; no adversarial part."""
    return _content_model(config, feature_map, content_dims, "modal_attention", None)


def concat(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> CTRModel:
    """Early fusion: the modality-specific features concatenated (and projected)."""
    return _content_model(config, feature_map, content_dims, "concat", None)


def select_modalities(config: ModelConfig, available: list[str]) -> list[str]:
    """The model's modalities: ``config.modalities`` or "id" plus every available content modality."""
    options = ["id", *available]
    if config.modalities is None:
        return options
    unknown = [m for m in config.modalities if m not in options]
    if unknown:
        raise ConfigError(f"model.modalities: unknown modality {unknown}; available: {options}")
    if not config.modalities:
        raise ConfigError(f"model.modalities: empty; available: {options}")
    return list(config.modalities)


def _content_model(
    config: ModelConfig,
    feature_map: FeatureMap,
    content_dims: Mapping[str, int],
    fusion: str,
    parts: AdversarialParts | None,
) -> CTRModel:
    modalities = select_modalities(config, list(content_dims))
    ids = None
    if "id" in modalities:
        ids = ItemIdFeatures(
            feature_map, config.embedding_dim, config.id_dropout, use_id="item" in config.id_embeddings
        )
        require_item_features(ids, config.name, has_content=True)
    content = {m: content_dims[m] for m in modalities if m != "id"}
    beside = config.id_path == "beside"
    if beside and ids is None:
        raise ConfigError(
            f"model.id_path: 'beside' puts the id modality beside content; model.modalities {modalities} has no 'id'"
        )
    if beside and not content:
        raise ConfigError(f"model.id_path: 'beside' needs a content modality; model.modalities is {modalities}")
    encoder: MultimodalItemEncoder | IdBesideContentItemEncoder
    try:
        encoder = MultimodalItemEncoder(
            None if beside else ids,
            content,
            config.item_dim,
            fusion=config.fusion or fusion,
            parts=parts,
            specific_norm=config.specific_norm,
        )
    except ValueError as exc:
        raise ConfigError(f"model ({config.name}, modalities {modalities}, id_path {config.id_path}): {exc}") from None
    if beside:
        assert ids is not None
        encoder = IdBesideContentItemEncoder(
            IdItemEncoder(ids, config.item_dim),
            encoder,
            gate=config.content_gate,
            cold_gate=config.cold_content_gate,
            maturity_tiers=config.maturity_tiers,
            merge=config.content_merge,
            dropout=config.content_dropout,
        )
    similarity = SimTier(content, config.simtier_bins) if config.simtier_bins and content else None
    if config.simtier_bins and similarity is None:
        raise ConfigError(
            f"model.simtier_bins: content similarity needs a content modality; model.modalities is {modalities}"
        )
    return CTRModel.from_config(config, feature_map, encoder, config.sequence, similarity)
