"""Title encoder: a transformers checkpoint directory (default all-MiniLM-L6-v2, 384-d).

Token embeddings are mean-pooled over the attention mask (or the first token's is taken with
``pooling: cls``) and optionally L2-normalised: the sentence-transformers recipe, computed with
plain ``AutoModel`` so that any local BERT-like checkpoint works.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from recsys.config import TitleEncoderConfig
from recsys.encoders.base import ItemEncoder, freeze, make_fingerprint
from recsys.encoders.weights import TITLE_FIELD, default_title_model_dir, dir_digest, resolve_dir
from recsys.errors import EncoderError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that the mask keeps: (B, L, H), (B, L) -> (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TitleEncoder(ItemEncoder[str]):
    """list[str] -> (B, hidden_size) float32."""

    modality = "title"
    field = "encoders.title"

    def __init__(self, cfg: TitleEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.path = resolve_dir(cfg.path, default_title_model_dir, TITLE_FIELD)
        try:
            model_config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{TITLE_FIELD}: cannot read {self.path / 'config.json'}: {exc}") from None
        width = next((model_config[k] for k in ("hidden_size", "dim", "d_model") if k in model_config), None)
        self._dim = int(width) if isinstance(width, int) else None
        self.fingerprint = make_fingerprint(
            cfg.kind,
            {
                "modality": "title",
                "model": dir_digest(self.path),
                "max_length": cfg.max_length,
                "pooling": cfg.pooling,
                "normalize": cfg.normalize,
            },
        )
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.model: PreTrainedModel | None = None

    def _load(self) -> None:
        # Local files only, never the hub: set before transformers/huggingface_hub read them.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from recsys.compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # transformers imports torchvision when it is installed
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from recsys.console import adopt_library_loggers

        adopt_library_loggers(["transformers"])  # its own stderr handler: to the command's log file instead
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar inside our own progress output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
        except Exception as exc:
            detail = " ".join(str(exc).split())[:500]
            raise EncoderError(
                f"{TITLE_FIELD}: cannot load a transformers tokenizer/model from {self.path}: {detail}"
            ) from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.model = freeze(model.float()).to(self.device)
        self._dim = int(self.model.config.hidden_size)

    def _encode(self, batch: list[str]) -> np.ndarray:
        assert self.tokenizer is not None and self.model is not None
        tokens = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**tokens).last_hidden_state  # (B, L, H)
        if self.cfg.pooling == "mean":
            pooled = mean_pool(hidden, tokens["attention_mask"])  # (B, H)
        else:
            pooled = hidden[:, 0]  # (B, H): the [CLS] token
        if self.cfg.normalize:
            pooled = F.normalize(pooled, p=2, dim=1)
        return pooled.cpu().numpy()
