"""Item encoders: item-table rows -> item representations (candidate-independent; serving caches them).

- :class:`IdItemEncoder`: ids and attributes only (DNN, DIN).
- :class:`MultimodalItemEncoder`: MARN's item representation, modal attention over specific features
  + an adversarially learned modality-invariant shared feature (Li et al., WWW 2020; docs/marn.md);
  the ids enter as one modality of the fusion (``model.id_path: fusion``, the paper).
- :class:`IdBesideContentItemEncoder`: DIN's id representation with MARN's content representation
  concatenated beside it (``model.id_path: beside``).

For item i and modality m with input x_i^m (the "id" modality is the item's id/attribute
embeddings; the others are frozen content vectors):
    s_i^m = S_m(x_i^m)                       modality-specific feature, one MLP per modality
    c_i^m = I(P_m(x_i^m))                    shared feature: per-modality projection, ONE encoder I
    s_i   = sum_m a_i^m * s_i^m              modal attention from the specific features only
    w_i^m = 1 - D0(c_i^m)[m]                 D0 sample weights (constants), w~ normalised over present m
    c_i   = sum_m w~_i^m c_i^m
    rep_i = s_i + c_i
D1 plays against I through a gradient-reversal layer on c_i^m; Ds = D1's parameters on s_i^m
without reversal. The same class, with parts switched off, gives the ablations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.features.feature_map import OOV
from recsys.features.item_table import ItemInputs
from recsys.models.inputs import ItemIdFeatures
from recsys.models.output import AdversarialTerms
from recsys.modules import (
    MLP,
    ModalityDiscriminator,
    build_fusion,
    d0_sample_weights,
    grad_reverse,
    normalize_present_weights,
)


@dataclass
class ItemReps:
    """Item representations for N item rows, plus what the losses and analysis need."""

    rep: torch.Tensor  # (N, D)
    adversarial: AdversarialTerms | None = None
    attention: torch.Tensor | None = None  # (N, M) mean |modal attention weight|


@dataclass(frozen=True)
class AdversarialParts:
    """Which adversarial parts are on (the ablations switch them off)."""

    shared: bool = True  # the shared encoder and D1 (min-max through gradient reversal)
    d0_weighting: bool = True  # D0 sample weights on D1's loss and on the shared sum (else uniform)
    ds: bool = True  # Ds: D1's classifier on the specific features, without reversal


class MultimodalItemEncoder(nn.Module):
    """Item rows -> representation from the id modality and any set of content modalities."""

    def __init__(
        self,
        id_features: ItemIdFeatures | None,
        content_dims: dict[str, int],
        dim: int,
        fusion: str = "modal_attention",
        parts: AdversarialParts | None = None,
        specific_norm: bool = False,
    ) -> None:
        super().__init__()
        self.id_features = id_features
        self.content = list(content_dims)
        self.modalities = (["id"] if id_features is not None else []) + self.content
        in_dims = ({"id": id_features.out_dim} if id_features is not None else {}) | content_dims
        if not self.modalities:
            raise ValueError("a multimodal item encoder needs at least one modality")
        self.parts = parts
        self.out_dim = dim
        # Modality-specific encoders S_m: small MLPs to the common width D.
        # With ``specific_norm`` each ends in a LayerNorm without a learned gain: s_m has RMS 1 and
        # only the modal attention a_m in [-1, 1] scales it. A separable classification loss on s_m
        # (Ds) is otherwise lowered by growing the features' norm, without limit.
        self.specific = nn.ModuleDict(
            {
                m: nn.Sequential(MLP(in_dims[m], [dim], out_dim=dim), nn.LayerNorm(dim, elementwise_affine=False))
                if specific_norm
                else MLP(in_dims[m], [dim], out_dim=dim)
                for m in self.modalities
            }
        )
        self.fusion = build_fusion(fusion, n_modalities=len(self.modalities), dim=dim)
        if parts is not None and parts.shared:
            if len(self.modalities) < 2:
                raise ValueError(f"the adversarial parts need >= 2 modalities, got {self.modalities}")
            self.project = nn.ModuleDict({m: nn.Linear(in_dims[m], dim) for m in self.modalities})  # P_m
            # I, one encoder for all modalities. The LayerNorm bounds the shared features' scale: under
            # gradient reversal the encoder could otherwise "fool" D1 by inflating them without limit.
            self.shared = nn.Sequential(MLP(dim, [dim], out_dim=dim), nn.LayerNorm(dim))
            self.d1 = ModalityDiscriminator(dim, len(self.modalities), hidden=(dim,))
            self.d0 = ModalityDiscriminator(dim, len(self.modalities), hidden=(dim,)) if parts.d0_weighting else None

    def _inputs(self, rows: torch.Tensor, items: ItemInputs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x, masks = {}, []
        for m in self.modalities:
            if m == "id":
                assert self.id_features is not None  # "id" is a modality only with id features
                x[m] = self.id_features(rows, items)  # (N, in_id)
                masks.append(rows != 0)
            else:
                x[m] = items.vector(m)[rows]  # (N, in_m)
                masks.append(items.mask(m)[rows])
        return x, torch.stack(masks, dim=1)  # (N, M) bool

    def forward(self, rows: torch.Tensor, items: ItemInputs) -> ItemReps:
        x, mask = self._inputs(rows, items)
        s = torch.stack([self.specific[m](x[m]) for m in self.modalities], dim=1)  # (N, M, D)
        fused = self.fusion(s, mask)
        s_item = fused.fused  # (N, D)
        attention = modal_share(fused.weights, s) if fused.weights is not None else None  # (N, M)
        if self.parts is None or not self.parts.shared:
            return ItemReps(s_item, None, attention)

        c = torch.stack([self.shared(self.project[m](x[m])) for m in self.modalities], dim=1)  # (N, M, D)
        keep = mask.unsqueeze(-1)
        c = torch.where(keep, c, torch.zeros_like(c))
        if self.d0 is not None:
            d0_logits = self.d0(c.detach())  # (N, M, M): D0 measures, it does not shape I
            w = normalize_present_weights(d0_sample_weights(d0_logits, mask), mask)  # (N, M), constants
        else:
            d0_logits = None
            w = normalize_present_weights(mask.to(c.dtype), mask)  # uniform over present modalities
        c_item = (w.unsqueeze(-1) * c).sum(dim=1)  # (N, D)
        d1_logits = self.d1(grad_reverse(c, 1.0))  # (N, M, M): D1 learns, I is pushed to fool it
        ds_logits = self.d1(s) if self.parts.ds else None  # same classifier, no reversal
        terms = AdversarialTerms(
            mask=mask,
            d0_logits=d0_logits,
            d1_logits=d1_logits,
            ds_logits=ds_logits,
            d1_weights=w,
            shared=c_item,
            specific=s_item,
        )
        return ItemReps(s_item + c_item, terms, attention)


def modal_share(weights: torch.Tensor, specific: torch.Tensor) -> torch.Tensor:
    """Each modality's share of the fused item feature: |a_m * s_m|_1 / sum_k |a_k * s_k|_1, (N, M).

    The raw weights a_m = tanh(W_m s_m + b_m) are read through what they weight: trained, they
    saturate (mean |a| ~0.97 for every modality on the built-in data, >90% of elements beyond 0.9),
    so their mean says nothing about which modality the item representation is made of. Absent
    modalities (a = 0) get 0; the shares of an item sum to 1 (0 for an item with no content).
    """
    part = (weights * specific).abs().sum(dim=-1).detach()  # (N, M)
    total = part.sum(dim=-1, keepdim=True)
    return part / torch.where(total > 0, total, torch.ones_like(total))


class IdItemEncoder(nn.Module):
    """Ids and attributes only (no content): the item side of DNN and DIN."""

    def __init__(self, id_features: ItemIdFeatures, dim: int) -> None:
        super().__init__()
        self.id_features = id_features
        self.proj = nn.Linear(id_features.out_dim, dim)
        self.out_dim = dim
        self.modalities = ["id"]

    def forward(self, rows: torch.Tensor, items: ItemInputs, ids: torch.Tensor | None = None) -> ItemReps:
        """(N,) rows -> reps (N, D); ``ids`` as :meth:`ItemIdFeatures.forward` takes them."""
        return ItemReps(self.proj(self.id_features(rows, items, ids)))  # (N, D)


class IdBesideContentItemEncoder(nn.Module):
    """Ids beside content: the id/attribute representation of DIN, and beside it MARN's content
    representation, concatenated: rep = [id_rep, content_rep] (N, 2D), or with ``merge="add"`` summed:
    rep = id_rep + content_rep (N, D), at DIN's width and cost.

    The ids keep the path they have in DIN (target attention, the user tower and the head see them
    unchanged by content), so weak content cannot drag them down; content adds what ids lack
    (cold items, long-tail items). ``content`` is a :class:`MultimodalItemEncoder` over the content
    modalities only (modal attention, and the shared feature against D0/D1/Ds when it has them).

    The modality shares it reports (``ItemReps.attention``, columns ``modalities``: "id" first) are
    each part's share of the representation's L1 mass: the id part's, and the content part's split by
    its modal-attention shares.
    """

    def __init__(
        self,
        ids: IdItemEncoder,
        content: MultimodalItemEncoder,
        gate: bool = False,
        cold_gate: bool = False,
        merge: str = "concat",
        dropout: float = 0.0,
        maturity_tiers: int = 0,
    ) -> None:
        super().__init__()
        if "id" in content.modalities:
            raise ValueError("the content encoder of ids-beside-content must not have the id modality")
        if (cold_gate or maturity_tiers) and not gate:
            raise ValueError("a cold-item or per-maturity gate needs the content gate")
        if maturity_tiers == 1 or (maturity_tiers and cold_gate):
            raise ValueError("maturity_tiers: 0, or >= 2 without a cold gate (tier 0 gates cold items)")
        if merge not in ("concat", "add"):
            raise ValueError(f"unknown merge {merge!r}; valid: ['add', 'concat']")
        if merge == "add" and ids.out_dim != content.out_dim:
            raise ValueError(f"merge 'add' needs equal widths, got ids {ids.out_dim} and content {content.out_dim}")
        self.ids = ids
        self.content = content
        # With ``gate``: the content part is scaled by a learned scalar that starts at 0 (ReZero), so
        # training starts from the id-only model and lets content in as far as it lowers the loss.
        # With ``maturity_tiers``: one such scalar per tier of the item's training rows (see :meth:`maturity`).
        self.gate = nn.Parameter(torch.zeros(maturity_tiers or 1)) if gate else None
        self.maturity_tiers = maturity_tiers
        # With ``cold_gate``: items whose id is out of vocabulary (unseen in training, or dropped by
        # id dropout while training) have their own scalar, starting at 1: for them content is the item,
        # from the first step, and the id dropout rows teach the content part to stand alone.
        self.cold_gate = nn.Parameter(torch.ones(1)) if cold_gate else None
        self.merge = merge
        # Content dropout: in training a share of the batch's items get no content part (the rest scaled by
        # 1 / (1 - p)), so the content part learns what the ids do not already know.
        self.content_dropout = nn.Dropout1d(dropout) if dropout else None
        self.out_dim = ids.out_dim + content.out_dim if merge == "concat" else ids.out_dim
        self.modalities = ["id", *content.modalities]

    def maturity(self, rows: torch.Tensor, items: ItemInputs, ids: torch.Tensor) -> torch.Tensor:
        """(N,) maturity tier of item rows: 0 without training rows or with an OOV id (cold, or id-dropped),
        t for 2^(t-1) <= training rows < 2^t, capped at the last tier."""
        n = items.train_rows[rows].clamp(min=0).to(torch.float32)
        tier = (torch.floor(torch.log2(n + 1.0)).long()).clamp(max=self.maturity_tiers - 1)  # 0 -> 0, 1 -> 1, 2-3 -> 2
        return torch.where(ids == OOV, torch.zeros_like(tier), tier)

    def _gate(self, rows: torch.Tensor, items: ItemInputs, ids: torch.Tensor) -> torch.Tensor | None:
        """(N, 1) per-row content gate for ``rows`` with id indices ``ids`` (N,), or None without one."""
        if self.gate is None:
            return None
        if self.maturity_tiers:
            return self.gate[self.maturity(rows, items, ids)].unsqueeze(1)
        if self.cold_gate is None:
            return self.gate.expand(ids.shape[0], 1)
        return torch.where((ids == OOV).unsqueeze(1), self.cold_gate, self.gate)

    def forward(self, rows: torch.Tensor, items: ItemInputs) -> ItemReps:
        ids = self.ids.id_features.item_ids(rows, items)  # drawn once: the gate sees which rows are OOV
        id_rep = self.ids(rows, items, ids).rep  # (N, D)
        content = self.content(rows, items)  # rep (N, D)
        gate = self._gate(rows, items, ids)
        content_rep = content.rep if gate is None else gate * content.rep
        if self.content_dropout is not None and self.training:
            content_rep = self.content_dropout(content_rep.unsqueeze(0)).squeeze(0)  # (1, N, D): whole rows dropped
        attention = None
        if content.attention is not None:
            id_mass = id_rep.abs().sum(dim=-1, keepdim=True).detach()  # (N, 1)
            content_mass = content_rep.abs().sum(dim=-1, keepdim=True).detach()
            total = id_mass + content_mass
            total = torch.where(total > 0, total, torch.ones_like(total))
            attention = torch.cat([id_mass, content.attention * content_mass], dim=1) / total  # (N, 1 + M)
        rep = torch.cat([id_rep, content_rep], dim=-1) if self.merge == "concat" else id_rep + content_rep
        return ItemReps(rep, content.adversarial, attention)
