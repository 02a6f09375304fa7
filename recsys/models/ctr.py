"""The CTR model every neural model is an instance of: an item encoder for the candidate and the
behaviour sequence, user and context embeddings, a sequence encoder and a prediction MLP.

Every model (this one and :class:`recsys.models.lr.LogisticRegression`) has the same interface:

- ``forward(batch, items) -> ModelOutput``: a :class:`~recsys.features.batch.Batch` and the item
  table's tensors (training and evaluation);
- ``item_representations(rows, items)``: the candidate-independent item part, which serving caches
  for the whole catalogue;
- ``score_candidates(side, candidates)``: logits from item representations; with a one-row
  :class:`~recsys.models.inputs.UserSide` it is the serving fast path, one user against many cached
  candidate representations, the user side computed once.

With ``model.simtier_bins`` the cached item representation carries, after the item encoder's
``D`` columns, the item's content keys (:class:`~recsys.modules.SimTier`): the head then also sees
the candidate-to-history content similarity tiers, beside the id path.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from recsys.config import ModelConfig
from recsys.features.batch import Batch
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemInputs
from recsys.models.inputs import FieldEmbeddings, UserFieldEmbeddings, UserSide
from recsys.models.item_encoders import IdBesideContentItemEncoder, IdItemEncoder, ItemReps, MultimodalItemEncoder
from recsys.models.output import AdversarialTerms, ModelOutput
from recsys.modules import MLP, MeanPooling, SimTier, build_sequence_encoder


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
        item_encoder: MultimodalItemEncoder | IdItemEncoder | IdBesideContentItemEncoder,
        sequence: nn.Module,
        feature_map: FeatureMap,
        embedding_dim: int,
        mlp_hidden: list[int],
        dropout: float,
        user_tower: bool = False,
        user_id: bool = True,
        user_id_dropout: float = 0.0,
        similarity: SimTier | None = None,
    ) -> None:
        super().__init__()
        self.item_encoder = item_encoder
        self.similarity = similarity
        self.sequence = sequence
        context_fields = feature_map.by("context", "categorical")
        self.n_numeric = len(feature_map.by("context", "numeric"))
        self.user = UserFieldEmbeddings(feature_map, embedding_dim, use_id=user_id, id_dropout=user_id_dropout)
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
        if similarity is not None:
            in_dim += similarity.out_dim
        self.head = MLP(in_dim, mlp_hidden, out_dim=1, dropout=dropout)

    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        feature_map: FeatureMap,
        item_encoder: MultimodalItemEncoder | IdItemEncoder | IdBesideContentItemEncoder,
        sequence: str,
        similarity: SimTier | None = None,
    ) -> CTRModel:
        """The model around ``item_encoder``, with the registered sequence encoder ``sequence``
        (:data:`recsys.modules.SEQUENCE_ENCODERS`), the user side and head from ``config`` and, for
        content models, the optional content-similarity features."""
        return cls(
            item_encoder,
            build_sequence_encoder(sequence, item_encoder.out_dim),
            feature_map,
            config.embedding_dim,
            config.mlp_hidden,
            config.dropout,
            user_tower=config.user_tower,
            user_id="user" in config.id_embeddings,
            user_id_dropout=config.user_id_dropout,
            similarity=similarity,
        )

    @property
    def modalities(self) -> list[str]:
        return list(self.item_encoder.modalities)

    def item_representations(self, rows: torch.Tensor, items: ItemInputs) -> ItemReps:
        """Candidate-independent item part, (N,) rows -> reps (N, D), or (N, D + K) with the content keys of
        the similarity features; serving caches these per catalogue."""
        reps = self.item_encoder(rows, items)
        if self.similarity is None:
            return reps
        modalities = self.similarity.dims
        keys = self.similarity.keys(
            {m: items.vector(m)[rows] for m in modalities}, {m: items.mask(m)[rows] for m in modalities}
        )
        return replace(reps, rep=torch.cat([reps.rep, keys], dim=-1))

    def user_vector(self, user: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """(R, D) candidate-independent user vector from the user's fields (R, U) and history reps (R, L, D).

        Target attention answers "how like the candidate is what this user clicked"; it cannot pool
        what users have in common. This tower maps the user's field embeddings and whole click profile
        (the mean item rep) to a point in item space through weights shared by every user, so users
        with similar profiles land together and their preferences inform each other (a user who
        clicked 20 items has too few to estimate a preference for every attribute alone).
        """
        assert self.user_tower is not None and self.history_mean is not None
        pooled = self.history_mean(history, history_mask, history[:, 0])  # (R, D)
        return self.user_tower(torch.cat([self.user(user).flatten(1), pooled], dim=1))

    def score_candidates(
        self, side: UserSide, candidates: torch.Tensor, similarity: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,) logits of candidate reps (B, D) for the user side ``side`` (B rows, or 1 row shared by every
        candidate: the serving fast path, where the user side is computed once). ``similarity``: the
        similarity features when the caller computed them (training, from distinct items); otherwise they
        come from the keys after the D columns."""
        b, d = candidates.shape[0], self.item_encoder.out_dim
        full_candidates, full_history = candidates, side.history
        candidates, history = candidates[:, :d], side.history[..., :d]  # the keys (if any) follow the D columns
        interest = self.sequence(history, side.history_mask, candidates)  # (B, D)
        # candidate * interest: an explicit match term (an MLP learns multiplicative interactions slowly).
        parts = [
            self.user(side.user).flatten(1).expand(b, -1),
            self.context(side.context).flatten(1).expand(b, -1),
            candidates,
            interest,
            candidates * interest,
        ]
        if self.user_tower is not None:
            user_vec = self.user_vector(side.user, history, side.history_mask).expand(b, -1)
            parts += [user_vec, candidates * user_vec]
        if self.similarity is not None:
            if similarity is None:
                similarity = self.similarity(full_candidates[:, d:], full_history[..., d:], side.history_mask)
            parts.append(similarity)
        if self.n_numeric:
            parts.append(side.numeric.expand(b, -1))
        return self.head(torch.cat(parts, dim=1)).squeeze(-1)  # (B,)

    def forward(self, batch: Batch, items: ItemInputs) -> ModelOutput:
        rows = torch.cat([batch.item.unsqueeze(1), batch.hist], dim=1)  # (B, 1+L)
        # Encode each distinct item once: history items repeat a lot within a batch.
        unique, inverse = torch.unique(rows, return_inverse=True)  # (N,), (B, 1+L)
        reps = self.item_representations(unique, items)
        d = self.item_encoder.out_dim
        gathered = reps.rep[:, :d][inverse]  # (B, 1+L, D)
        similarity = None
        if self.similarity is not None:
            similarity = self.similarity.from_unique(reps.rep[:, d:], inverse[:, 0], inverse[:, 1:], batch.hist_mask)
        user = self.user.drop_ids(batch.user)
        side = UserSide(user, batch.context, batch.numeric, gathered[:, 1:], batch.hist_mask)
        logits = self.score_candidates(side, gathered[:, 0], similarity)
        terms = _select_rows(reps.adversarial, unique != 0) if reps.adversarial is not None else None
        attention = reps.attention[inverse[:, 0]] if reps.attention is not None else None  # (B, M)
        return ModelOutput(logits=logits, adversarial=terms, modal_attention=attention)
