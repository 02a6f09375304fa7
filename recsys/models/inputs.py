"""Embeddings of categorical fields: user, context, and the item's id modality."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.errors import ConfigError
from recsys.features.feature_map import OOV, PAD, FeatureMap
from recsys.features.item_table import ItemInputs


@dataclass
class UserSide:
    """The user side of scoring: R rows of user fields (R, U), context (R, C), numeric context (R, K), history
    item representations (R, L, D) and their mask (R, L). R is the number of candidates, or 1 for one user
    scored against every candidate (serving)."""

    user: torch.Tensor
    context: torch.Tensor
    numeric: torch.Tensor
    history: torch.Tensor
    history_mask: torch.Tensor

    @classmethod
    def one_user(
        cls,
        user: torch.Tensor,
        context: torch.Tensor,
        numeric: torch.Tensor,
        history: torch.Tensor,
        history_mask: torch.Tensor,
    ) -> UserSide:
        """One user's side from unbatched tensors: user (U,), context (C,), numeric (K,), history (L, D), mask (L,)."""
        return cls(user[None], context[None], numeric[None], history[None], history_mask[None])


class FieldEmbeddings(nn.Module):
    """Several categorical fields, one embedding table each, stored as one table with offsets."""

    def __init__(self, cardinalities: list[int], dim: int) -> None:
        super().__init__()
        self.n_fields, self.dim = len(cardinalities), dim
        offsets = (
            torch.tensor([0, *cardinalities[:-1]], dtype=torch.long).cumsum(0)
            if cardinalities
            else torch.zeros(0, dtype=torch.long)
        )
        self.offsets: torch.Tensor
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(max(sum(cardinalities), 1), dim)
        nn.init.normal_(self.table.weight, std=0.05)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        """(..., F) indices -> (..., F, E)."""
        return self.table(index + self.offsets)


class UserFieldEmbeddings(FieldEmbeddings):
    """The user's categorical fields (user_id first, as :func:`recsys.features.examples.encode_users` lays them
    out); with ``use_id`` False the user id has no embedding and its column is ignored.

    With ``id_dropout`` > 0, training replaces a share of rows' user ids by the OOV index, so the OOV
    embedding is learned and users unseen in training get a sensible id part.
    """

    def __init__(self, feature_map: FeatureMap, dim: int, use_id: bool = True, id_dropout: float = 0.0) -> None:
        fields = feature_map.by("user", "categorical")
        super().__init__([f.cardinality for f in (fields if use_id else fields[1:])], dim)
        self.use_id = use_id
        self.id_dropout = id_dropout

    def drop_ids(self, index: torch.Tensor) -> torch.Tensor:
        """(B, U) user field indices with a share ``id_dropout`` of the rows' user ids set to OOV (in
        training; otherwise ``index`` itself). Applied once per batch, before every use of the fields."""
        if not (self.training and self.use_id and self.id_dropout > 0):
            return index
        drop = torch.rand(index.shape[0], device=index.device) < self.id_dropout
        ids = torch.where(drop & (index[:, 0] != PAD), torch.full_like(index[:, 0], OOV), index[:, 0])
        return torch.cat([ids[:, None], index[:, 1:]], dim=1)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        """(B, U) user field indices -> (B, U', E); U' = U - 1 without the id."""
        return super().forward(index if self.use_id else index[:, 1:])


class ItemIdFeatures(nn.Module):
    """The item's "id" modality: embeddings of its id, categorical attributes and list attributes.

    With ``id_dropout`` > 0, training replaces a share of item ids by the OOV index, so the OOV
    embedding is learned and cold items (ids unseen in training) get a sensible id part. With
    ``use_id`` False the item id has no embedding at all: only the attributes and lists remain.
    """

    def __init__(self, feature_map: FeatureMap, dim: int, id_dropout: float = 0.0, use_id: bool = True) -> None:
        super().__init__()
        cat_fields = feature_map.by("item", "categorical")  # item_id first
        self.use_id = use_id
        if not use_id:
            cat_fields = cat_fields[1:]
        self.list_names = [f.name for f in feature_map.by("item", "list")]
        self.categorical = FieldEmbeddings([f.cardinality for f in cat_fields], dim)
        self.lists = nn.ModuleDict(
            {
                f.name: nn.EmbeddingBag(f.cardinality, dim, mode="mean", padding_idx=PAD)
                for f in feature_map.by("item", "list")
            }
        )
        self.id_dropout = id_dropout
        self.out_dim = dim * (len(cat_fields) + len(self.list_names))

    def item_ids(self, rows: torch.Tensor, items: ItemInputs) -> torch.Tensor:
        """(N,) item rows -> their id indices, a share ``id_dropout`` of them set to OOV in training."""
        ids = items.id_index[rows]  # (N,)
        if self.training and self.id_dropout > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.id_dropout
            ids = torch.where(drop & (rows != 0), torch.full_like(ids, OOV), ids)
        return ids

    def forward(self, rows: torch.Tensor, items: ItemInputs, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) item rows -> (N, out_dim). ``ids``: the rows' id indices when the caller drew them
        (:meth:`item_ids`, to know which rows are OOV); drawn here otherwise."""
        index = items.categorical[rows]  # (N, C)
        if self.use_id:
            ids = self.item_ids(rows, items) if ids is None else ids
            index = torch.cat([ids[:, None], index], dim=1)  # (N, C+1)
        parts = [self.categorical(index).flatten(1)]  # (N, C'*E), C' = C (+1 with the id); called even when
        # C' is 0, so its (unused) table still joins the graph: DDP needs every parameter used each step
        for name in self.list_names:
            parts.append(self.lists[name](items.list(name)[rows]))  # (N, E)
        return torch.cat(parts, dim=1)


def require_item_features(ids: ItemIdFeatures, model_name: str, has_content: bool) -> ItemIdFeatures:
    """``ids`` if it has inputs; a clear error when item ids are off (``model.id_embeddings``) and no item
    attribute is left to stand for the item."""
    if ids.out_dim == 0:
        hint = 'list item attributes in features.item_categorical / item_list, or keep "item" in model.id_embeddings'
        if has_content:
            hint += ', or leave "id" out of model.modalities'
        raise ConfigError(
            f"model.id_embeddings: without the item id, model {model_name!r} has no item features "
            f"in its id modality; {hint}"
        )
    return ids
