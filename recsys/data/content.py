"""Content hashes of a dataset's items: what says whether an item's title or media changed.

A title's hash is the sha256 of its UTF-8 text; a media file's, the sha256 of its bytes. The
encoder cache is keyed by item id and this hash (:mod:`recsys.encoders.pipeline`).
:func:`hash_batch` is the Ray Data stage ``recsys encode`` runs over the items table; it imports
neither torch nor an encoder, so its tasks start fast.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.dataset import MEDIA_COLUMNS

#: ``problem`` of an item whose media file does not exist (any other problem is the read error).
MISSING = "missing"


def _sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def content_hashes(items: pl.DataFrame, modality: str, data_dir: Path) -> tuple[list[str | None], list[str | None]]:
    """Per item of ``items``: its ``modality`` content hash (None without one) and the problem (None: none).

    No title / no media path: (None, None), silent. A media file that does not exist: (None,
    :data:`MISSING`); one that cannot be read: (None, the error).
    """
    hashes: list[str | None] = []
    problems: list[str | None] = []
    for value in items[MEDIA_COLUMNS[modality]].to_list():
        digest, problem = None, None
        if value is None or not value.strip():
            pass
        elif modality == "title":
            digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
        elif not (path := data_dir / value).is_file():
            problem = MISSING
        else:
            try:
                digest = _sha256_file(path)
            except OSError as exc:
                problem = f"cannot read {path}: {exc.strerror or exc}"
        hashes.append(digest)
        problems.append(problem)
    return hashes, problems


def hash_batch(batch: pa.Table, modalities: list[str], data_dir: str) -> pa.Table:
    """Ray Data stage: ``item_id`` and, per modality, ``<m>_hash`` and ``<m>_problem`` (see :func:`content_hashes`)."""
    items = pl.from_arrow(batch)
    assert isinstance(items, pl.DataFrame)
    columns: dict[str, pa.Array] = {"item_id": pc.cast(batch.column("item_id"), pa.int64())}
    for modality in modalities:
        hashes, problems = content_hashes(items, modality, Path(data_dir))
        columns[f"{modality}_hash"] = pa.array(hashes, type=pa.string())
        columns[f"{modality}_problem"] = pa.array(problems, type=pa.string())
    return pa.table(columns)
