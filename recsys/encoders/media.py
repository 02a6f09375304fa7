"""Decode raw media (a file path or its bytes) into what the encoders take.

The same two functions serve ``encode_items`` (files in a dataset directory) and the HTTP
service (an uploaded item's bytes), so an image or a clip is decoded one way everywhere.
Anything that cannot be decoded raises :class:`MediaError` with a message that says what and
why; callers decide whether that is fatal (a request) or a masked modality (a dataset item).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from recsys.errors import RecsysError


class MediaError(RecsysError):
    """An image or audio file (or bytes) is missing, empty or cannot be decoded."""


class MediaTooLarge(MediaError):
    """Media over a size limit (pixels, seconds): refused before it is decoded."""


class MediaWarning(UserWarning):
    """Emitted once per modality by ``encode_items`` for items whose media is missing or unreadable."""


def _describe(data: bytes | Path) -> str:
    return f"{str(data)!r}" if isinstance(data, (str, Path)) else f"<{len(data)} bytes>"


def _reason(exc: Exception, source: object, data: bytes | Path) -> str:
    """Why a decoder failed, without the repr of an in-memory source (``<_io.BytesIO object at 0x...>``)."""
    text = getattr(exc, "error_string", None) or str(exc)  # LibsndfileError: libsndfile's own message
    return str(text).replace(repr(source), _describe(data))


def _open_source(data: bytes | Path) -> io.BytesIO | Path:
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) == 0:
            raise MediaError("empty media: 0 bytes")
        return io.BytesIO(bytes(data))
    path = Path(data)
    if not path.is_file():
        raise MediaError(f"media file not found: {path}")
    return path


def decode_image(data: bytes | Path, max_pixels: int | None = None) -> Image.Image:
    """Decode an image (PNG, JPEG, WebP, ... anything PIL reads) from bytes or a path, as RGB.

    Raises MediaError when the file is missing, empty, truncated or not an image, and MediaTooLarge
    when its header declares more than ``max_pixels`` pixels (checked before decoding: a few KB of
    compressed data can declare gigabytes of pixels).
    """
    source = _open_source(data)
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # our own limit applies: PIL's warning below its hard limit is noise
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise MediaTooLarge(
                    f"image {_describe(data)} is {width}x{height} = {width * height} pixels, "
                    f"over the limit of {max_pixels}"
                )
            image.load()  # PIL decodes lazily: force it here so a truncated file fails now
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise MediaError(f"cannot decode image {_describe(data)}: not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(f"image {_describe(data)} is too large to decode: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"cannot decode image {_describe(data)}: {exc}") from None


def decode_audio(data: bytes | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode audio (WAV, FLAC, OGG, MP3: what libsndfile reads) from bytes or a path.

    Returns ``(waveform, sample_rate)``: a mono float32 array (channels averaged) in [-1, 1]
    and the file's own rate (encoders resample). Raises MediaError when the file is missing,
    empty, holds no samples or is not audio, and MediaTooLarge when its header declares more
    than ``max_seconds`` of audio (checked before decoding).
    """
    import soundfile

    source = _open_source(data)
    try:
        with soundfile.SoundFile(source) as audio:
            sample_rate = audio.samplerate
            if max_seconds is not None and audio.frames > max_seconds * sample_rate:
                raise MediaTooLarge(
                    f"audio {_describe(data)} lasts {audio.frames / sample_rate:.1f} s, "
                    f"over the limit of {max_seconds:g} s"
                )
            waveform = audio.read(dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # LibsndfileError is a RuntimeError
        raise MediaError(f"cannot decode audio {_describe(data)}: {_reason(exc, source, data)}") from None
    if waveform.shape[0] == 0:
        raise MediaError(f"audio {_describe(data)} holds no samples")
    mono = waveform.mean(axis=1, dtype=np.float32)  # (T,)
    if not np.isfinite(mono).all():
        raise MediaError(f"audio {_describe(data)} holds non-finite samples")
    return np.ascontiguousarray(mono), int(sample_rate)
