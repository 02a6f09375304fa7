"""Model-side inputs: the item table as tensors, and embeddings of categorical fields."""

from __future__ import annotations

import torch
from torch import nn

from recsys.features.feature_map import OOV, PAD, FeatureMap
from recsys.features.item_table import ItemTable


class ItemInputs:
    """The item table's tensors on one device; the model gathers item content from it by row."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    @classmethod
    def from_table(cls, table: ItemTable, device: torch.device | str = "cpu") -> ItemInputs:
        return cls({k: v.to(device) for k, v in table.tensors().items()})

    def to(self, device: torch.device | str) -> ItemInputs:
        return ItemInputs({k: v.to(device) for k, v in self.tensors.items()})

    @property
    def id_index(self) -> torch.Tensor:
        return self.tensors["id_index"]  # (N+1,)

    @property
    def categorical(self) -> torch.Tensor:
        return self.tensors["categorical"]  # (N+1, C)

    def list(self, name: str) -> torch.Tensor:
        return self.tensors[f"list.{name}"]  # (N+1, W)

    def vector(self, modality: str) -> torch.Tensor:
        return self.tensors[f"vector.{modality}"]  # (N+1, dim)

    def mask(self, modality: str) -> torch.Tensor:
        return self.tensors[f"mask.{modality}"]  # (N+1,)


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
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(max(sum(cardinalities), 1), dim)
        nn.init.normal_(self.table.weight, std=0.05)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        """(..., F) indices -> (..., F, E)."""
        return self.table(index + self.offsets)


class UserFieldEmbeddings(FieldEmbeddings):
    """The user's categorical fields (user_id first, as :func:`recsys.features.examples.encode_users` lays them
    out); with ``use_id`` False the user id has no embedding and its column is ignored."""

    def __init__(self, feature_map: FeatureMap, dim: int, use_id: bool = True) -> None:
        fields = feature_map.by("user", "categorical")
        super().__init__([f.cardinality for f in (fields if use_id else fields[1:])], dim)
        self.use_id = use_id

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

    def forward(self, rows: torch.Tensor, items: ItemInputs) -> torch.Tensor:
        """(N,) item rows -> (N, out_dim)."""
        index = items.categorical[rows]  # (N, C)
        if self.use_id:
            ids = items.id_index[rows]  # (N,)
            if self.training and self.id_dropout > 0:
                drop = torch.rand(ids.shape, device=ids.device) < self.id_dropout
                ids = torch.where(drop & (rows != 0), torch.full_like(ids, OOV), ids)
            index = torch.cat([ids[:, None], index], dim=1)  # (N, C+1)
        parts = [self.categorical(index).flatten(1)]  # (N, C'*E), C' = C (+1 with the id); called even when
        # C' is 0, so its (unused) table still joins the graph: DDP needs every parameter used each step
        for name in self.list_names:
            parts.append(self.lists[name](items.list(name)[rows]))  # (N, E)
        return torch.cat(parts, dim=1)
