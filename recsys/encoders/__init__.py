"""Frozen pretrained item encoders and the cached ``encode_items`` step.

- :func:`build_encoder` -> an :class:`ItemEncoder` (title: transformers; image: torchvision;
  audio: aisfx or log-mel statistics), built from the ``encoders`` config section.
- :func:`encode_items` encodes a dataset directory's items into per-modality Parquet caches;
  :func:`load_item_vectors` reads them back (training and serving use this).
- :func:`decode_image` / :func:`decode_audio` turn a file or raw bytes into encoder input.

transformers and torchvision are imported only when a model is loaded.
"""

from recsys.encoders.base import ItemEncoder
from recsys.encoders.media import MediaError, MediaTooLarge, MediaWarning, decode_audio, decode_image
from recsys.encoders.pipeline import EncodeReport, ModalityReport, ModalityVectors, encode_items, load_item_vectors
from recsys.encoders.registry import build_encoder

__all__ = [
    "EncodeReport",
    "ItemEncoder",
    "MediaError",
    "MediaTooLarge",
    "MediaWarning",
    "ModalityReport",
    "ModalityVectors",
    "build_encoder",
    "decode_audio",
    "decode_image",
    "encode_items",
    "load_item_vectors",
]
