"""CTR models, each built from the config by name.

| name     | item representation                                           | sequence        |
|----------|---------------------------------------------------------------|-----------------|
| lr       | one weight per id / attribute value                           | none            |
| dnn      | id + attribute embeddings                                     | mean pooling    |
| din      | id + attribute embeddings (no content)                        | DIN attention   |
| concat   | ids + content, early fusion by concatenation                  | model.sequence  |
| man      | ids + content, modal attention, no adversarial part           | model.sequence  |
| man_d1   | man + shared encoder against one unweighted discriminator D1  | model.sequence  |
| marn     | man + shared encoder + D0 weighting + D1 + Ds (full MARN)     | model.sequence  |
"""

from __future__ import annotations

from torch import nn

from recsys.config import ModelConfig
from recsys.errors import ConfigError
from recsys.features.feature_map import FeatureMap
from recsys.models.ctr import CTRModel, LogisticRegression, build_sequence
from recsys.models.inputs import ItemIdFeatures, ItemInputs
from recsys.models.marn import AdversarialParts, IdItemEncoder, MultimodalItemEncoder
from recsys.models.output import AdversarialTerms, ModelOutput

__all__ = ["MODELS", "AdversarialTerms", "CTRModel", "ItemInputs", "ModelOutput", "build_model", "select_modalities"]

#: model name -> (default fusion, adversarial parts) for the content models.
_CONTENT_MODELS: dict[str, tuple[str, AdversarialParts | None]] = {
    "concat": ("concat", None),
    "man": ("modal_attention", None),
    "man_d1": ("modal_attention", AdversarialParts(shared=True, d0_weighting=False, ds=False)),
    "marn": ("modal_attention", AdversarialParts()),
}
MODELS: tuple[str, ...] = ("lr", "dnn", "din", *_CONTENT_MODELS)


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


def build_model(config: ModelConfig, feature_map: FeatureMap, content_dims: dict[str, int]) -> nn.Module:
    """Build the model named by ``config.name`` for these features and content modalities (name -> width)."""
    name = config.name
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; valid names: {', '.join(MODELS)}")
    user_id, item_id = "user" in config.id_embeddings, "item" in config.id_embeddings
    if name == "lr":
        model = LogisticRegression(feature_map, user_id=user_id, item_id=item_id)
        _check_id_modality(name, model.id_features)
        return model
    dim = config.item_dim

    def ctr(item_encoder: nn.Module, sequence: str) -> CTRModel:
        return CTRModel(
            item_encoder,
            build_sequence(sequence, dim),
            feature_map,
            config.embedding_dim,
            config.mlp_hidden,
            config.dropout,
            user_tower=config.user_tower,
            user_id=user_id,
        )

    def id_features() -> ItemIdFeatures:
        return _check_id_modality(
            name, ItemIdFeatures(feature_map, config.embedding_dim, config.id_dropout, use_id=item_id)
        )

    if name in ("dnn", "din"):
        return ctr(IdItemEncoder(id_features(), dim), "mean" if name == "dnn" else "din")
    fusion, parts = _CONTENT_MODELS[name]
    modalities = select_modalities(config, list(content_dims))
    ids = id_features() if "id" in modalities else None
    content = {m: content_dims[m] for m in modalities if m != "id"}
    try:
        encoder = MultimodalItemEncoder(
            ids, content, dim, fusion=config.fusion or fusion, parts=parts, specific_norm=config.specific_norm
        )
    except ValueError as exc:
        raise ConfigError(f"model ({name}, modalities {modalities}): {exc}") from None
    return ctr(encoder, config.sequence)


def _check_id_modality(name: str, ids: ItemIdFeatures) -> ItemIdFeatures:
    """``ids`` if it has inputs; a clear error when item ids are off and no item attribute is left."""
    if ids.out_dim == 0:
        hint = 'list item attributes in features.item_categorical / item_list, or keep "item" in model.id_embeddings'
        if name in _CONTENT_MODELS:
            hint += ', or leave "id" out of model.modalities'
        raise ConfigError(
            f"model.id_embeddings: without the item id, model {name!r} has no item features in its id modality; {hint}"
        )
    return ids
