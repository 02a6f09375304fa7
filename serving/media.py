"""Item titles and media files as the service shows them: catalogue items from the dataset, registered items
from the store.

The catalogue's titles and media paths come from the dataset's ``items.parquet`` (``ServeSettings.data_dir``),
read once, on first use. A media path is used only when it is relative and stays inside the dataset directory
(no absolute path, no ``..``): the request names an item id and a kind, never a path. What is served is the
file's bytes with a media type read from their first bytes (raster images and audio only; anything else is
``application/octet-stream``, to download), so an upload cannot make the service serve a page or a script.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import polars as pl

from recsys.data.dataset import dataset_paths

#: The media kinds an item can have, and the items.parquet column of each.
MEDIA_COLUMNS = {"image": "image_path", "audio": "audio_path"}

#: Media types served, by their files' first bytes (offset, signature).
SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("image/png", 0, b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", 0, b"\xff\xd8\xff"),
    ("image/gif", 0, b"GIF8"),
    ("image/webp", 8, b"WEBP"),
    ("image/bmp", 0, b"BM"),
    ("audio/wav", 8, b"WAVE"),
    ("audio/flac", 0, b"fLaC"),
    ("audio/ogg", 0, b"OggS"),
    ("audio/mpeg", 0, b"ID3"),
)
OCTET_STREAM = "application/octet-stream"
#: Every media type a media response can have (its OpenAPI document).
MEDIA_TYPES = (*dict.fromkeys(t for t, _, _ in SIGNATURES), OCTET_STREAM)


def media_type(data: bytes) -> str:
    """The media type of a file from its first bytes; ``application/octet-stream`` when not an image or audio."""
    for kind, offset, signature in SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return kind
    return OCTET_STREAM


@dataclass(frozen=True)
class CatalogueEntry:
    """What the dataset says about one catalogue item: its title and media paths (relative, checked)."""

    title: str | None
    paths: dict[str, str]  # kind -> path relative to the dataset directory


class CatalogueMedia:
    """The dataset's titles and media paths by item id (empty without a dataset); thread-safe, loaded once."""

    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir
        self._entries: dict[int, CatalogueEntry] | None = None
        self._lock = threading.Lock()

    def entry(self, item_id: int) -> CatalogueEntry | None:
        if self._entries is None:
            with self._lock:
                if self._entries is None:
                    self._entries = self._load()
        return self._entries.get(item_id)

    def _load(self) -> dict[int, CatalogueEntry]:
        if self.data_dir is None:
            return {}
        path = dataset_paths(self.data_dir).items
        present = set(pl.read_parquet_schema(path))
        columns = ["item_id", *(c for c in ("title", *MEDIA_COLUMNS.values()) if c in present)]
        frame = pl.read_parquet(path, columns=columns)
        out = {}
        for row in frame.iter_rows(named=True):
            paths = {kind: row[col] for kind, col in MEDIA_COLUMNS.items() if _safe_relative(row.get(col))}
            out[int(row["item_id"])] = CatalogueEntry(row.get("title"), paths)
        return out

    def file(self, item_id: int, kind: str) -> Path | None:
        """The dataset file of a catalogue item's ``kind`` medium; None when the dataset names none."""
        entry = self.entry(item_id)
        if entry is None or kind not in entry.paths or self.data_dir is None:
            return None
        return dataset_paths(self.data_dir).media(entry.paths[kind])


def _safe_relative(value: object) -> bool:
    """A non-empty relative path without ``..``: it cannot leave the dataset directory."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        return False
    path = PurePosixPath(value.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and not value.startswith("~")
