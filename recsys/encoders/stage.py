"""What ``recsys encode`` runs inside Ray's encoder actors, and the vector columns they return.

:func:`encode_items <recsys.encoders.pipeline.encode_items>` drives two Ray Data stages: content
hashing (:func:`recsys.data.content.hash_batch`, tasks) and, per modality, a pool of
:class:`EncoderActor`:

- :class:`EncoderActor`, the callable class of each modality's actor pool: it builds its frozen
  encoder once (the weights load on the first batch that has decodable media, so an actor whose
  items all fail to decode loads nothing), decodes the media inside the actor and returns one row
  per item: ``item_id``, ``content_hash``, ``vector`` (null when the media could not be decoded),
  ``error`` (why) and ``model_loaded``.

Vectors travel and are cached as Arrow ``list<float32>`` columns (:func:`vector_column`,
:func:`vectors_from_arrow`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys import cluster
from recsys.config import AudioEncoderConfig, ImageEncoderConfig, TitleEncoderConfig
from recsys.encoders.media import MediaError, decode_audio, decode_image
from recsys.encoders.registry import build_encoder

SECTIONS: dict[str, type[TitleEncoderConfig] | type[ImageEncoderConfig] | type[AudioEncoderConfig]] = {
    "title": TitleEncoderConfig,
    "image": ImageEncoderConfig,
    "audio": AudioEncoderConfig,
}


def vector_column(vectors: list[np.ndarray | None], dim: int) -> pa.ListArray:
    """``list<float32>`` column of ``vectors`` (None -> a null row)."""
    valid = np.array([v is not None for v in vectors], dtype=bool)
    matrix = (
        np.stack([v for v in vectors if v is not None]).astype(np.float32)
        if valid.any()
        else np.zeros((0, dim), np.float32)
    )
    offsets = np.zeros(len(vectors) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.where(valid, dim, 0))
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(matrix.reshape(-1), type=pa.float32()), mask=pa.array(~valid)
    )


def vectors_from_arrow(array: pa.Array | pa.ChunkedArray, where: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """A list/array column -> (float32 (n_valid, dim) matrix, (n,) bool valid mask, dim or None)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], type=pa.list_(pa.float32()))
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    present = array.filter(pa.array(valid))
    lengths = np.asarray(pc.list_value_length(present).to_numpy(zero_copy_only=False), dtype=np.int64)
    if lengths.size == 0:
        return np.zeros((0, 0), dtype=np.float32), valid, None
    if (lengths != lengths[0]).any():
        raise ValueError(f"{where}: vectors have different lengths ({sorted(set(lengths.tolist()))[:5]})")
    dim = int(lengths[0])
    values = pc.list_flatten(present)
    if values.null_count:
        raise ValueError(f"{where}: vectors hold null values")
    flat = values.cast(pa.float32()).to_numpy(zero_copy_only=False)
    if not np.isfinite(flat).all():
        raise ValueError(f"{where}: vectors hold NaN or infinite values")
    return np.ascontiguousarray(flat.reshape(len(present), dim), dtype=np.float32), valid, dim


def decode_content(modality: str, source: str) -> Any:
    """What the ``modality`` encoder takes: the title itself, or the media file at ``source`` decoded."""
    if modality == "title":
        return source
    if modality == "image":
        return decode_image(Path(source))
    return decode_audio(Path(source))


class EncoderActor:
    """One actor of a modality's pool (Ray Data ``map_batches`` with a callable class).

    ``section``: the modality's config section as a dict; ``threads``: torch's intra-op threads
    (the CPUs the actor reserved); ``use_gpu``: run the encoder on this actor's CUDA device.
    """

    def __init__(self, modality: str, section: dict[str, Any], threads: int, use_gpu: bool) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.modality = modality
        self.encoder = build_encoder(modality, SECTIONS[modality].model_validate(section), load=False)
        if use_gpu and torch.cuda.is_available():
            self.encoder.device = torch.device("cuda")
        self.node_id = _ray_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Rows ``item_id, content_hash, source`` -> ``item_id, content_hash, vector, error, model_loaded``, plus
        the Ray node id (:data:`recsys.cluster.NODE_COLUMN`) in an actor of a Ray Data pool."""
        sources = batch.column("source").to_pylist()
        vectors: list[np.ndarray | None] = [None] * len(sources)
        errors: list[str | None] = [None] * len(sources)
        decoded, rows = [], []
        for row, source in enumerate(sources):
            try:
                decoded.append(decode_content(self.modality, source))
                rows.append(row)
            except MediaError as exc:
                errors[row] = str(exc)
        if decoded:
            for row, vector in zip(rows, self.encoder.encode(decoded)):  # (b, dim); loads the model on first use
                vectors[row] = vector
        out = pa.table(
            {
                "item_id": batch.column("item_id"),
                "content_hash": batch.column("content_hash"),
                "vector": vector_column(vectors, self.encoder.dim),
                "error": pa.array(errors, type=pa.string()),
                "model_loaded": pa.array([self.encoder.loaded] * len(sources), type=pa.bool_()),
            }
        )
        return out if self.node_id is None else cluster.with_node_column(out, self.node_id)


def _ray_node_id() -> str | None:
    """The Ray node of the actor this runs in (None: not an actor, e.g. encoding in the calling process, Ray
    connected or not)."""
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return context.get_node_id() if context.get_actor_id() is not None else None
