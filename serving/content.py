"""A new item's content -> raw frozen-encoder vectors, with the encoders the model was trained on.

The same encoder classes and media decoders as ``recsys encode`` (recsys.encoders); models load
on first use and stay in memory. Vectors given by the client ("precomputed") are checked for
width and finiteness. Every problem is a :class:`ContentError` naming the field. Client media are
decoded within :class:`MediaLimits`: pixel and duration caps checked on the file's header before
decoding (413), and a cap on concurrent decodes per worker.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from recsys.config import MODALITIES, EncodersConfig
from recsys.encoders import ItemEncoder, MediaError, MediaTooLarge, build_encoder, decode_audio, decode_image
from recsys.errors import RecsysError
from serving.store import PRECOMPUTED


class ContentError(RecsysError):
    """Unusable item content; ``field`` names the request field, ``status`` is 413 for content over a limit."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class MediaLimits:
    """How much client media one worker decodes: per file (pixels, seconds) and at once (``concurrent``)."""

    def __init__(self, max_pixels: int, max_seconds: float, concurrent: int) -> None:
        self.max_pixels = max_pixels
        self.max_seconds = max_seconds
        self.slots = threading.BoundedSemaphore(concurrent)


@dataclass(frozen=True)
class ItemContent:
    """What a client sends for an item's content (all optional)."""

    title: str | None = None
    image: bytes | None = None
    audio: bytes | None = None
    vectors: dict[str, list[float]] | None = None


class ContentEncoders:
    """The model's modalities and how each is obtained: an encoder, or client-given vectors."""

    def __init__(self, config: EncodersConfig, dims: dict[str, int]) -> None:
        self.dims = dict(dims)
        self._encoders: dict[str, ItemEncoder] = {}
        for modality in dims:
            cfg = getattr(config, modality, None) if modality in MODALITIES else None
            if cfg is not None:
                self._encoders[modality] = build_encoder(modality, cfg, load=False)
        self._lock = threading.Lock()

    def fingerprint(self, modality: str) -> str:
        """Cache key of a modality's vectors: the encoder's fingerprint, or PRECOMPUTED."""
        encoder = self._encoders.get(modality)
        return encoder.fingerprint if encoder is not None else PRECOMPUTED

    @property
    def encoded(self) -> list[str]:
        return list(self._encoders)

    @property
    def precomputed(self) -> list[str]:
        return [m for m in self.dims if m not in self._encoders]

    def _encode(self, modality: str, raw: object) -> np.ndarray:
        with self._lock:  # one item at a time through a model; loads it on first use
            return self._encoders[modality].encode([raw])[0]

    def encode(self, content: ItemContent, limits: MediaLimits) -> dict[str, np.ndarray]:
        """modality -> raw vector for every modality the content provides; raises ContentError."""
        out: dict[str, np.ndarray] = {}
        unknown = sorted(set(content.vectors or {}) - set(self.dims))
        if unknown:
            raise ContentError("vectors", f"unknown modality {unknown}; this model's modalities: {sorted(self.dims)}")
        for name, values in (content.vectors or {}).items():
            vector = np.asarray(values, dtype=np.float64)
            if vector.ndim != 1 or vector.size != self.dims[name]:
                raise ContentError(f"vectors.{name}", f"expected {self.dims[name]} numbers, got {vector.size}")
            if not np.isfinite(vector).all():
                bad = [i for i, v in enumerate(values) if not math.isfinite(v)][:5]
                raise ContentError(f"vectors.{name}", f"non-finite values (NaN/inf) at positions {bad}")
            out[name] = vector.astype(np.float32)
        if content.title is not None and "title" in self._encoders and "title" not in out:
            if not content.title.strip():
                raise ContentError("title", "empty title")
            out["title"] = self._encode("title", content.title)
        for modality, data in (("image", content.image), ("audio", content.audio)):
            if data is None or modality in out:
                continue
            if modality not in self._encoders:
                raise ContentError(
                    modality, f"this model has no {modality} encoder; its modalities: {sorted(self.dims)}"
                )
            setting = "serve.max_image_pixels" if modality == "image" else "serve.max_audio_seconds"
            try:
                with limits.slots:  # the decoded image or waveform (far larger than its file) lives until encoded
                    raw = (
                        decode_image(data, limits.max_pixels)
                        if modality == "image"
                        else decode_audio(data, limits.max_seconds)
                    )
                    out[modality] = self._encode(modality, raw)
            except MediaTooLarge as exc:
                raise ContentError(modality, f"{exc} ({setting})", 413) from None
            except MediaError as exc:
                raise ContentError(modality, str(exc)) from None
        for name, vector in out.items():
            if not np.isfinite(vector).all():
                raise ContentError(name, "the encoder produced non-finite values for this content")
        return out
