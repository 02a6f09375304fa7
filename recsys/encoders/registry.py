"""The one place that maps a modality and its config section to an encoder class.

:mod:`recsys.encoders.base` defines the interface and knows no subclass; this module imports
every subclass, so the dependency points one way: registry -> subclasses -> base.
"""

from __future__ import annotations

from recsys.config import AudioEncoderConfig, ImageEncoderConfig, TitleEncoderConfig
from recsys.encoders.audio import AisfxAudioEncoder, LogMelAudioEncoder
from recsys.encoders.base import ItemEncoder
from recsys.encoders.image import ImageEncoder
from recsys.encoders.title import TitleEncoder

EncoderConfig = TitleEncoderConfig | ImageEncoderConfig | AudioEncoderConfig


def build_encoder(modality: str, cfg: EncoderConfig, load: bool = True) -> ItemEncoder:
    """Build the encoder for ``modality`` ('title', 'image' or 'audio') from its config section.

    ``cfg`` is a TitleEncoderConfig, ImageEncoderConfig or AudioEncoderConfig. With
    ``load=False`` the weights are only located and fingerprinted; they load on first use.
    Raises EncoderError (naming the config field and path) for a missing path, and with
    ``load=True`` for weights that do not load or do not fit the architecture.
    """
    encoder: ItemEncoder
    if modality == "title" and isinstance(cfg, TitleEncoderConfig):
        encoder = TitleEncoder(cfg)
    elif modality == "image" and isinstance(cfg, ImageEncoderConfig):
        encoder = ImageEncoder(cfg)
    elif modality == "audio" and isinstance(cfg, AudioEncoderConfig):
        encoder = AisfxAudioEncoder(cfg) if cfg.kind == "aisfx" else LogMelAudioEncoder(cfg)
    else:
        raise ValueError(f"no encoder for modality {modality!r} with config {type(cfg).__name__}")
    return encoder.load() if load else encoder
