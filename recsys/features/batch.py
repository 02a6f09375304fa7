"""The model batch: the per-example tensors every model's ``forward`` takes.

An example carries ids only: the candidate's item-table row, the behaviour sequence as rows,
user and context categorical indices, standardised numeric context, and the label. Item
content is gathered from the :class:`~recsys.features.item_table.ItemTable` inside the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch

from recsys.features.feature_map import FeatureMap

#: The batch's fields and their numpy dtype, in a fixed order (also the prepared Parquet columns).
BATCH_FIELDS: dict[str, type[np.generic]] = {
    "item": np.int64,  # (N,) candidate rows
    "hist": np.int64,  # (N, L) behaviour rows, 0 = padding, newest last
    "hist_mask": np.bool_,  # (N, L)
    "user": np.int64,  # (N, U) user_id + user_categorical indices
    "context": np.int64,  # (N, C) context_categorical indices
    "numeric": np.float32,  # (N, K) standardised context_numeric
    "label": np.float32,  # (N,)
}

#: Real widths of the 2-D fields that may be empty (stored Parquet columns are at least 1 wide).
FieldWidths = dict[str, int]


def field_widths(feature_map: FeatureMap) -> FieldWidths:
    """The real widths of the ``user``, ``context`` and ``numeric`` fields under ``feature_map``."""
    return {
        "user": len(feature_map.by("user", "categorical")),
        "context": len(feature_map.by("context", "categorical")),
        "numeric": len(feature_map.by("context", "numeric")),
    }


@dataclass
class Batch:
    """One mini-batch of examples as tensors; shapes in :data:`BATCH_FIELDS` (N rows)."""

    item: torch.Tensor
    hist: torch.Tensor
    hist_mask: torch.Tensor
    user: torch.Tensor
    context: torch.Tensor
    numeric: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return int(self.item.shape[0])

    @classmethod
    def from_columns(cls, columns: Mapping[str, torch.Tensor | np.ndarray], widths: FieldWidths | None = None) -> Batch:
        """A batch from named columns (numpy arrays or tensors; extra columns are ignored).

        ``widths`` trims the 2-D fields that prepared Parquet stores at least one column wide
        (see :func:`field_widths`); without it the columns are taken as they are.
        """
        out = {}
        for name in BATCH_FIELDS:
            value = columns[name]
            # contiguous and writable (torch warns on read-only memory, e.g. arrays polars hands out): copied if not
            tensor = (
                torch.from_numpy(np.require(value, requirements=["C", "W"])) if isinstance(value, np.ndarray) else value
            )
            if widths is not None and name in widths:
                tensor = tensor[:, : widths[name]]
            out[name] = tensor
        return cls(**out)

    def index_select(self, rows: torch.Tensor) -> Batch:
        """The rows ``rows`` (a 1-D index tensor) of every field."""
        return Batch(**{f.name: getattr(self, f.name).index_select(0, rows) for f in fields(self)})

    def to(self, device: torch.device | str) -> Batch:
        """Every field on ``device``."""
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
