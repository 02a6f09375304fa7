"""CTR models: an item encoder for the candidate and the behaviour sequence, user and context
embeddings, a sequence encoder and a prediction MLP; plus logistic regression.

Every model takes ``forward(batch, items) -> ModelOutput`` where ``batch`` holds the arrays
of :data:`recsys.features.examples.BATCH_KEYS` as tensors and ``items`` the item table.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.features.feature_map import FeatureMap
from recsys.models.inputs import FieldEmbeddings, ItemIdFeatures, ItemInputs, UserFieldEmbeddings
from recsys.models.marn import IdItemEncoder, ItemReps, MultimodalItemEncoder
from recsys.models.output import AdversarialTerms, ModelOutput
from recsys.modules import MLP, build_sequence_encoder


class MeanPooling(nn.Module):
    """Masked mean of the history (the DNN baseline's sequence encoder)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = history_mask.unsqueeze(-1)  # (B, L, 1)
        total = torch.where(keep, history, torch.zeros_like(history)).sum(dim=1)  # (B, D)
        return total / keep.sum(dim=1).clamp(min=1).to(history.dtype)


def _select_rows(terms: AdversarialTerms, keep: torch.Tensor) -> AdversarialTerms:
    """Adversarial terms of the kept unique items (drops the padding row)."""

    def pick(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[keep]

    return AdversarialTerms(
        mask=terms.mask[keep],
        d0_logits=pick(terms.d0_logits),
        d1_logits=pick(terms.d1_logits),
        ds_logits=pick(terms.ds_logits),
        d1_weights=pick(terms.d1_weights),
        shared=pick(terms.shared),
        specific=terms.specific[keep],
    )


class CTRModel(nn.Module):
    """Candidate rep + user interest (sequence encoder over history reps) + user/context -> MLP -> logit."""

    def __init__(
        self,
        item_encoder: MultimodalItemEncoder | IdItemEncoder,
        sequence: nn.Module,
        feature_map: FeatureMap,
        embedding_dim: int,
        mlp_hidden: list[int],
        dropout: float,
        user_tower: bool = False,
        user_id: bool = True,
    ) -> None:
        super().__init__()
        self.item_encoder = item_encoder
        self.sequence = sequence
        context_fields = feature_map.by("context", "categorical")
        self.n_numeric = len(feature_map.by("context", "numeric"))
        self.user = UserFieldEmbeddings(feature_map, embedding_dim, use_id=user_id)
        self.context = FieldEmbeddings([f.cardinality for f in context_fields], embedding_dim)
        dim = item_encoder.out_dim
        user_width = self.user.n_fields * embedding_dim
        in_dim = user_width + len(context_fields) * embedding_dim + self.n_numeric + 3 * dim
        # The user tower: one candidate-independent vector per user from the user's fields and the mean of
        # the history, matched against the candidate (see :meth:`user_vector`).
        self.user_tower = MLP(user_width + dim, [dim], out_dim=dim) if user_tower else None
        self.history_mean = MeanPooling(dim) if user_tower else None
        if user_tower:
            in_dim += 2 * dim
        self.head = MLP(in_dim, mlp_hidden, out_dim=1, dropout=dropout)

    @property
    def modalities(self) -> list[str]:
        return list(self.item_encoder.modalities)

    def item_representations(self, rows: torch.Tensor, items: ItemInputs) -> ItemReps:
        """Candidate-independent item part, (N,) rows -> reps; serving caches these per catalogue."""
        return self.item_encoder(rows, items)

    def user_vector(self, user: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """(B, D) candidate-independent user vector from the user's fields (B, U) and history reps (B, L, D).

        Target attention answers "how like the candidate is what this user clicked"; it cannot pool
        what users have in common. This tower maps the user's field embeddings and whole click profile
        (the mean item rep) to a point in item space through weights shared by every user, so users
        with similar profiles land together and their preferences inform each other (a user who
        clicked 20 items has too few to estimate a preference for every attribute alone).
        """
        b = history.shape[0]
        if b > 1 and history.stride(0) == 0 and history_mask.stride(0) == 0 and user.stride(0) == 0:
            # one user for every row (serving: one user, many candidates, expanded views): compute it once
            return self.user_vector(user[:1], history[:1], history_mask[:1]).expand(b, -1)
        pooled = self.history_mean(history, history_mask, history[:, 0])  # (B, D)
        return self.user_tower(torch.cat([self.user(user).flatten(1), pooled], dim=1))

    def head_logits(self, batch: dict[str, torch.Tensor], target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """The user side and final layers, given candidate (B, D) and history (B, L, D) reps."""
        interest = self.sequence(history, batch["hist_mask"], target)  # (B, D)
        # target * interest: an explicit match term (an MLP learns multiplicative interactions slowly).
        parts = [
            self.user(batch["user"]).flatten(1),
            self.context(batch["context"]).flatten(1),
            target,
            interest,
            target * interest,
        ]
        if self.user_tower is not None:
            user = self.user_vector(batch["user"], history, batch["hist_mask"])
            parts += [user, target * user]
        if self.n_numeric:
            parts.append(batch["numeric"])
        return self.head(torch.cat(parts, dim=1)).squeeze(-1)  # (B,)

    def forward(self, batch: dict[str, torch.Tensor], items: ItemInputs) -> ModelOutput:
        rows = torch.cat([batch["item"].unsqueeze(1), batch["hist"]], dim=1)  # (B, 1+L)
        # Encode each distinct item once: history items repeat a lot within a batch.
        unique, inverse = torch.unique(rows, return_inverse=True)  # (N,), (B, 1+L)
        reps = self.item_representations(unique, items)
        gathered = reps.rep[inverse]  # (B, 1+L, D)
        logits = self.head_logits(batch, gathered[:, 0], gathered[:, 1:])
        terms = _select_rows(reps.adversarial, unique != 0) if reps.adversarial is not None else None
        attention = reps.attention[inverse[:, 0]] if reps.attention is not None else None  # (B, M)
        return ModelOutput(logits=logits, adversarial=terms, modal_attention=attention)


class LogisticRegression(nn.Module):
    """Logistic regression on one-hot ids (those in ``model.id_embeddings``) and attributes (user, item,
    context) and numeric context."""

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

    def head_logits(self, batch: dict[str, torch.Tensor], target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """User, context and numeric weights plus the candidate's item part; the history is not used."""
        logit = (
            target.squeeze(-1)
            + self.user(batch["user"]).sum(dim=(1, 2))
            + self.context(batch["context"]).sum(dim=(1, 2))
        )
        if self.numeric is not None:
            logit = logit + self.numeric(batch["numeric"]).squeeze(-1)
        return logit + self.bias  # (B,)

    def forward(self, batch: dict[str, torch.Tensor], items: ItemInputs) -> ModelOutput:
        target = self.item_representations(batch["item"], items).rep  # (B, 1)
        return ModelOutput(logits=self.head_logits(batch, target, target[:, None]))


def build_sequence(name: str, dim: int) -> nn.Module:
    """'mean' pooling or a registered sequence encoder ('din', 'apgru')."""
    return MeanPooling(dim) if name == "mean" else build_sequence_encoder(name, dim)
