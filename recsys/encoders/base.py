"""The interface every frozen item encoder shares, and the helpers its subclasses use.

This module knows no subclass: :func:`recsys.encoders.registry.build_encoder` picks one per
modality. An encoder is cheap to build: building resolves and checks its weights path (a
missing path is an :class:`~recsys.errors.EncoderError` naming the config field) and computes
its ``fingerprint`` from the config and a digest of the weights, without loading the model.
The model is loaded by :meth:`ItemEncoder.load`, or on the first :meth:`ItemEncoder.encode`;
that is how ``encode_items`` loads no model at all when every vector is cached.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from recsys.errors import EncoderError

# Bump when preprocessing changes in a way that changes vectors: every cache key changes with it.
ENCODER_CODE_VERSION = 1

InputT = TypeVar("InputT")
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def make_fingerprint(name: str, parts: dict[str, Any]) -> str:
    """``<name>-<16 hex>``: a stable key for one model + its parameters (the cache file name)."""
    payload = json.dumps({"code_version": ENCODER_CODE_VERSION, **parts}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


class ItemEncoder(ABC, Generic[InputT]):
    """A frozen pretrained encoder for one modality: a batch of raw inputs -> (B, dim) float32.

    Subclasses set ``modality``, ``field`` (the config section, for error messages),
    ``fingerprint`` and ``_dim`` in ``__init__`` (cheap), and implement ``_load`` and
    ``_encode``, putting the model and its inputs on ``device``. All torch work runs in eval
    mode, under ``torch.inference_mode()``, with parameters frozen.
    """

    modality: str
    field: str
    fingerprint: str
    _dim: int | None = None

    def __init__(self) -> None:
        self._loaded = False
        #: Where the model runs (set before the first :meth:`encode`; vectors come back on the CPU).
        self.device = torch.device("cpu")

    @property
    def dim(self) -> int:
        """Width of the vectors :meth:`encode` returns."""
        if self._dim is None:  # only when the width cannot be read from the config files
            self.load()
        assert self._dim is not None
        return self._dim

    @property
    def loaded(self) -> bool:
        """Whether the model weights are in memory."""
        return self._loaded

    def load(self) -> ItemEncoder[InputT]:
        """Load the weights now (idempotent); raises EncoderError when they do not load or fit."""
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def encode(self, batch: list[InputT]) -> np.ndarray:
        """Encode a batch of raw inputs into a (B, dim) float32 array (row i is input i)."""
        self.load()
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            out = self._encode(list(batch))
        out = np.ascontiguousarray(out, dtype=np.float32)
        if out.shape != (len(batch), self.dim):  # a bug in a subclass, not a user error
            raise AssertionError(f"{type(self).__name__} returned {out.shape}, expected {(len(batch), self.dim)}")
        return out

    @abstractmethod
    def _load(self) -> None:
        """Load weights into memory, freeze them, set eval mode (and ``_dim`` if still unknown)."""

    @abstractmethod
    def _encode(self, batch: list[InputT]) -> np.ndarray:
        """(B, dim) vectors for a non-empty batch; called under ``torch.inference_mode()``."""

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"{type(self).__name__}(fingerprint={self.fingerprint!r}, {state})"


def freeze(module: ModuleT) -> ModuleT:
    """Eval mode, no gradients: the encoders are never trained here."""
    module.eval()
    module.requires_grad_(False)
    return module


def channels_last(module: ModuleT) -> ModuleT:
    """The module's 4-D weights in channels-last layout: oneDNN's native (fastest) one for CPU convolutions."""
    # torch's typed overloads of Module.to() omit memory_format, which the method accepts.
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def load_state_dict_into(module: torch.nn.Module, state: object, field: str, path: Path) -> None:
    """``module.load_state_dict(state, strict=True)`` with mismatches reported as EncoderError."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning-style and many training scripts wrap the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"{field}: {path} does not hold a state dict of tensors (got {type(state).__name__})")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        detail = " ".join(str(exc).split())[:500]
        raise EncoderError(
            f"{field}: {path} does not match the {type(module).__name__} architecture: {detail}"
        ) from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {result.missing_keys[:5]}{' ...' if len(result.missing_keys) > 5 else ''}")
    if result.unexpected_keys:
        problems.append(
            f"unexpected keys {result.unexpected_keys[:5]}{' ...' if len(result.unexpected_keys) > 5 else ''}"
        )
    if problems:
        raise EncoderError(
            f"{field}: {path} does not match the {type(module).__name__} architecture: {'; '.join(problems)}"
        )
