"""The id-only baselines: logistic regression, DNN (mean-pooled history) and DIN (target attention).

They see ids and attributes, never content; ``recsys compare`` measures every content model against the
best of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from recsys.config import ModelConfig
from recsys.errors import ConfigError
from recsys.features.feature_map import FeatureMap
from recsys.models.ctr import CTRModel
from recsys.models.inputs import ItemIdFeatures, require_item_features
from recsys.models.item_encoders import IdItemEncoder
from recsys.models.lr import LogisticRegression
from recsys.modules import SimTier


def lr(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> LogisticRegression:
    """Logistic regression on one-hot ids and attributes (content is not used)."""
    if config.simtier_bins:
        raise ConfigError("model.simtier_bins: lr uses no content; content similarity needs a content model")
    model = LogisticRegression(
        feature_map, user_id="user" in config.id_embeddings, item_id="item" in config.id_embeddings
    )
    require_item_features(model.id_features, config.name, has_content=False)
    return model


def dnn(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> CTRModel:
    """Id/attribute embeddings, the history mean-pooled, an MLP (content only through ``model.simtier_bins``)."""
    return _id_model(config, feature_map, content_dims, sequence="mean")


def din(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> CTRModel:
    """Id/attribute embeddings, DIN target attention over the history, an MLP (content only through
    ``model.simtier_bins``)."""
    return _id_model(config, feature_map, content_dims, sequence="din")


def _id_model(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int], sequence: str) -> CTRModel:
    ids = ItemIdFeatures(feature_map, config.embedding_dim, config.id_dropout, use_id="item" in config.id_embeddings)
    encoder = IdItemEncoder(require_item_features(ids, config.name, has_content=False), config.item_dim)
    similarity = None
    if config.simtier_bins:  # content only as similarity features: the item representation stays id-only
        if not content_dims:
            raise ConfigError("model.simtier_bins: content similarity needs encoded content; this dataset has none")
        similarity = SimTier(dict(content_dims), config.simtier_bins)
    return CTRModel.from_config(config, feature_map, encoder, sequence, similarity)
