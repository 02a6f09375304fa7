"""Logistic regression: the simplest baseline, one weight per id and attribute value."""

from __future__ import annotations

import torch
from torch import nn

from recsys.features.batch import Batch
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemInputs
from recsys.models.inputs import FieldEmbeddings, ItemIdFeatures, UserFieldEmbeddings, UserSide
from recsys.models.item_encoders import ItemReps
from recsys.models.output import ModelOutput


class LogisticRegression(nn.Module):
    """Logistic regression on one-hot ids (those in ``model.id_embeddings``) and attributes (user, item,
    context) and numeric context. Same interface as :class:`recsys.models.ctr.CTRModel`."""

    def __init__(self, feature_map: FeatureMap, user_id: bool = True, item_id: bool = True) -> None:
        super().__init__()
        self.id_features = ItemIdFeatures(feature_map, dim=1, use_id=item_id)
        context_fields = feature_map.by("context", "categorical")
        self.user = UserFieldEmbeddings(feature_map, 1, use_id=user_id)
        self.context = FieldEmbeddings([f.cardinality for f in context_fields], 1)
        self.n_numeric = len(feature_map.by("context", "numeric"))
        self.numeric = nn.Linear(self.n_numeric, 1) if self.n_numeric else None
        self.bias = nn.Parameter(torch.zeros(1))
        self.modalities = ["id"]

    def item_representations(self, rows: torch.Tensor, items: ItemInputs) -> ItemReps:
        """(N,) rows -> (N, 1): the item's summed id/attribute weights (cacheable per item, like CTRModel's)."""
        return ItemReps(self.id_features(rows, items).sum(dim=1, keepdim=True))

    def score_candidates(self, side: UserSide, candidates: torch.Tensor) -> torch.Tensor:
        """(B,) logits: the candidates' item parts (B, 1) plus the user, context and numeric weights of ``side``
        (B rows, or 1 shared); the history is not used."""
        logit = (
            candidates.squeeze(-1) + self.user(side.user).sum(dim=(1, 2)) + self.context(side.context).sum(dim=(1, 2))
        )
        if self.numeric is not None:
            logit = logit + self.numeric(side.numeric).squeeze(-1)
        return logit + self.bias  # (B,)

    def forward(self, batch: Batch, items: ItemInputs) -> ModelOutput:
        target = self.item_representations(batch.item, items).rep  # (B, 1)
        side = UserSide(batch.user, batch.context, batch.numeric, target[:, None], batch.hist_mask[:, :1])
        return ModelOutput(logits=self.score_candidates(side, target))
