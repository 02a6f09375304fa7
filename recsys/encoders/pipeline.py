"""``encode_items``: dataset directory -> cached item vectors, one Parquet file per modality, on Ray Data.

The items are read as a Ray Dataset and every item's content is hashed by Ray tasks (sha256 of
the title text, or of the media file's bytes; :mod:`recsys.encoders.stage`); the cache
``<cache_dir>/<modality>/<encoder fingerprint>.parquet`` holds ``item_id int64, content_hash
string, vector list<float32>``. Only items whose hash is not in the cache are encoded: per
modality, one Ray Data ``map_batches`` stage over a pool of ``encoders.actors`` actors
(``encoders.cpus_per_actor`` / ``gpus_per_actor`` each) that load the frozen encoder once and
decode the media themselves, in batches of ``encoders.batch_size``; no actor starts, and so no
model loads, when nothing is new. The driver gathers the vectors and writes the cache file. A
change of model, weights or encoder parameters changes the fingerprint and therefore the cache
file. The same code runs on a laptop's local Ray (started for the call when none is running)
and on a cluster (``address``), where the dataset and the cache must be on storage every node sees.

What has no vector, and how it is reported:
- a null (or blank) title / null media path: expected, silent;
- a media file that is missing, or cannot be read or decoded: the item is left out for that
  modality (the model masks it), and ONE :class:`~recsys.encoders.media.MediaWarning` per
  modality (python ``warnings``) gives the count and up to 5 ids; the ids are also in the report.
  Content that failed to decode is cached with a null vector, so an unchanged broken file is
  not decoded again (and loads no model) on the next run; it is still reported every run.

``item_features/<name>.parquet`` files (item_id, vector) are modalities named ``<name>``, used
as they are. :func:`load_item_vectors` is the read side for training and serving: it reads
only caches and precomputed files, and refuses a cache that no longer matches the dataset.
"""

from __future__ import annotations

import math
import os
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recsys import cluster
from recsys.config import MODALITIES, EncodersConfig
from recsys.data.content import MISSING, content_hashes, hash_batch
from recsys.data.dataset import MEDIA_COLUMNS, dataset_paths
from recsys.encoders.base import ItemEncoder
from recsys.encoders.media import MediaWarning
from recsys.encoders.registry import build_encoder
from recsys.encoders.stage import vector_column, vectors_from_arrow
from recsys.errors import ConfigError, DatasetError, EncoderError

CACHE_FIELD = "encoders.cache_dir"
MAX_IDS_SHOWN = 5
#: Items per hashing task (Ray Data block) of a large catalogue.
HASH_ROWS_PER_BLOCK = 20_000
#: Blocks per encoder actor a modality's todo list is cut into: work to balance, progress to show.
BLOCKS_PER_ACTOR = 16


# --------------------------------------------------------------------------- results


@dataclass
class ModalityReport:
    """What ``encode_items`` did for one modality."""

    modality: str
    source: Literal["encoder", "precomputed"]
    dim: int
    fingerprint: str | None  # the encoder's (None for precomputed)
    n_items_with_vector: int
    n_encoded: int  # vectors computed in this run
    n_cached: int  # items (with or without a vector) answered from the cache
    missing_ids: list[int] = field(default_factory=list)  # media file does not exist
    unreadable_ids: list[int] = field(default_factory=list)  # media file cannot be read or decoded
    seconds: float = 0.0
    path: Path | None = None  # the cache file, or the precomputed file
    model_loaded: bool = False  # an actor of this run loaded the encoder
    items_per_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> items its actors encoded


@dataclass
class EncodeReport:
    """The result of :func:`encode_items`."""

    cache_dir: Path
    modalities: dict[str, ModalityReport]
    models_loaded: list[str]  # modalities whose model was loaded in this run

    def format(self) -> str:
        """A markdown table, one row per modality."""
        lines = [
            "| modality | source | dim | with vector | encoded | cached | missing | unreadable | seconds |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.modalities.values():
            lines.append(
                f"| {r.modality} | {r.source} | {r.dim} | {r.n_items_with_vector} | {r.n_encoded} | {r.n_cached} "
                f"| {len(r.missing_ids)} | {len(r.unreadable_ids)} | {r.seconds:.2f} |"
            )
        loaded = ", ".join(self.models_loaded) if self.models_loaded else "none (every vector was cached)"
        lines += ["", f"models loaded: {loaded}"]
        for r in self.modalities.values():
            if r.items_per_node:
                where = ", ".join(f"{node[:8]} {n}" for node, n in sorted(r.items_per_node.items()))
                lines.append(f"{r.modality} encoded on {len(r.items_per_node)} Ray node(s) (items per node: {where})")
        lines.append(f"cache: {self.cache_dir}")
        return "\n".join(lines)


@dataclass
class ModalityVectors:
    """One modality's item vectors: row i of ``vectors`` belongs to ``item_ids[i]``."""

    modality: str
    item_ids: np.ndarray  # (n,) int64
    vectors: np.ndarray  # (n, dim) float32
    fingerprint: str | None = None  # the encoder's; None for precomputed features

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


# --------------------------------------------------------------------------- plan


@dataclass
class _Entry:
    item_id: int
    content_hash: str
    source: str  # the title text, or the media file's path (data_dir / the column value)


@dataclass
class _Plan:
    """One modality's items that have content, and those whose media could not be read."""

    entries: list[_Entry]
    missing: list[int]
    unreadable: dict[int, str]  # item_id -> reason


def _read_items(data_dir: Path, modalities: list[str]) -> pl.DataFrame:
    path = dataset_paths(data_dir).items
    if not path.is_file():
        raise DatasetError(f"{path}: items.parquet not found in the dataset directory")
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read Parquet file: {exc}") from None
    needed = ["item_id", *[MEDIA_COLUMNS[m] for m in modalities]]
    for column in needed:
        if column not in schema:
            hint = next((f" (or set encoders.{m}: null)" for m in modalities if MEDIA_COLUMNS[m] == column), "")
            raise DatasetError(f"{path}: column '{column}' is missing{hint}")
    for column in needed[1:]:
        if schema[column] not in (pl.String, pl.Null):
            raise DatasetError(f"{path}: column '{column}' must be string, got {schema[column]}")
    items = pl.read_parquet(path, columns=needed)
    if not items.schema["item_id"].is_integer():
        raise DatasetError(f"{path}: column 'item_id' must be int64, got {items.schema['item_id']}")
    items = items.with_columns(pl.col("item_id").cast(pl.Int64))
    if items["item_id"].null_count():
        raise DatasetError(f"{path}: column 'item_id' has {items['item_id'].null_count()} null value(s)")
    duplicated = items.filter(pl.col("item_id").is_duplicated())["item_id"].unique().sort().to_list()
    if duplicated:
        raise DatasetError(f"{path}: column 'item_id' has duplicate ids, e.g. {duplicated[:MAX_IDS_SHOWN]}")
    return items


def _plan(items: pl.DataFrame, modality: str, data_dir: Path, hashed: pl.DataFrame | None = None) -> _Plan:
    """``modality``'s plan over ``items``, from the hashes of ``hashed`` (``hash_batch``'s columns, row-aligned
    with ``items``), or hashed here when it is None."""
    if hashed is None:
        hashes, problems = content_hashes(items, modality, data_dir)
    else:
        hashes, problems = hashed[f"{modality}_hash"].to_list(), hashed[f"{modality}_problem"].to_list()
    plan = _Plan(entries=[], missing=[], unreadable={})
    column = items[MEDIA_COLUMNS[modality]].to_list()
    for item_id, value, digest, problem in zip(items["item_id"].to_list(), column, hashes, problems):
        if problem == MISSING:
            plan.missing.append(item_id)
        elif problem is not None:
            plan.unreadable[item_id] = problem
        elif digest is not None:
            plan.entries.append(_Entry(item_id, digest, value if modality == "title" else str(data_dir / value)))
    return plan


def _hash_on_ray(items: pl.DataFrame, modalities: list[str], data_dir: Path) -> pl.DataFrame:
    """Every item's content hashes per modality, by Ray tasks over the items read as a Ray Dataset.

    Row-aligned with ``items`` (``item_id`` plus ``<m>_hash`` / ``<m>_problem`` per modality).
    """
    import ray.data

    columns = ["item_id", *[MEDIA_COLUMNS[m] for m in modalities]]
    ds = ray.data.read_parquet(str(dataset_paths(data_dir).items.resolve()), columns=columns)
    if items.height > HASH_ROWS_PER_BLOCK:
        ds = ds.repartition(math.ceil(items.height / HASH_ROWS_PER_BLOCK))
    ds = ds.map_batches(
        partial(hash_batch, modalities=modalities, data_dir=str(data_dir.resolve())),
        batch_size=None,
        batch_format="pyarrow",
        udf_modifying_row_count=False,
    )
    tables = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    schema = {"item_id": pl.Int64, **{f"{m}_{k}": pl.String for m in modalities for k in ("hash", "problem")}}
    hashed = pl.from_arrow(pa.concat_tables(tables)) if tables else pl.DataFrame(schema=schema)
    assert isinstance(hashed, pl.DataFrame)
    return items.select("item_id").join(hashed, on="item_id", how="left", maintain_order="left")


# --------------------------------------------------------------------------- cache files


CacheRows = dict[int, tuple[str, "np.ndarray | None"]]  # item_id -> (content_hash, vector or None)


def _read_cache(path: Path, dim: int) -> CacheRows:
    """Rows of a cache file; raises ValueError when it is unreadable or of another width."""
    table = pq.read_table(path)
    if table.column_names[:3] != ["item_id", "content_hash", "vector"]:
        raise ValueError(f"{path}: unexpected columns {table.column_names}")
    ids = table.column("item_id").to_numpy().astype(np.int64)
    hashes = table.column("content_hash").to_pylist()
    matrix, valid, found_dim = vectors_from_arrow(table.column("vector"), str(path))
    if found_dim is not None and found_dim != dim:
        raise ValueError(f"{path}: vectors are {found_dim}-d, the encoder gives {dim}-d")
    rows: CacheRows = {}
    k = 0
    for item_id, content_hash, ok in zip(ids.tolist(), hashes, valid.tolist()):
        rows[item_id] = (content_hash, matrix[k] if ok else None)
        k += int(ok)
    return rows


def _write_cache(path: Path, ids: list[int], hashes: list[str], vectors: list[np.ndarray | None], dim: int) -> None:
    """Write a cache file atomically (temp file in the same directory + rename)."""
    table = pa.table(
        {
            "item_id": pa.array(ids, type=pa.int64()),
            "content_hash": pa.array(hashes, type=pa.string()),
            "vector": vector_column(vectors, dim),
        }
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique temp name in the same directory (same filesystem, so the rename is atomic);
        # written with the usual umask permissions, unlike mkstemp's 0600.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise EncoderError(f"{CACHE_FIELD}: cannot write the vector cache {path}: {exc.strerror or exc}") from None


def _resolve_cache_dir(data_dir: Path, config: EncodersConfig, cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if config.cache_dir is not None:
        return Path(config.cache_dir).expanduser()
    return data_dir / ".recsys_cache"


# --------------------------------------------------------------------------- precomputed


def _precomputed_files(data_dir: Path, config: EncodersConfig, encoder_modalities: list[str]) -> dict[str, Path]:
    paths = dataset_paths(data_dir)
    feature_dir = paths.item_features_dir
    found = paths.item_feature_files()
    if config.precomputed is not None:
        for name in config.precomputed:
            if name not in found:
                raise DatasetError(
                    f"encoders.precomputed lists {name!r} but {feature_dir / (name + '.parquet')} does not exist "
                    f"(found: {sorted(found) or 'none'})"
                )
        found = {name: found[name] for name in config.precomputed}
    for name, path in found.items():
        if name in encoder_modalities:
            raise DatasetError(
                f"{path}: precomputed features named {name!r} clash with the {name} encoder: rename the file "
                f"or disable the encoder (encoders.{name}: null)"
            )
    return found


def _read_precomputed(name: str, path: Path) -> ModalityVectors:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read Parquet file: {exc}") from None
    for column in ("item_id", "vector"):
        if column not in frame.columns:
            raise DatasetError(f"{path}: column '{column}' is missing")
    if not frame.schema["item_id"].is_integer():
        raise DatasetError(f"{path}: column 'item_id' must be int64, got {frame.schema['item_id']}")
    if not isinstance(frame.schema["vector"], (pl.List, pl.Array)) or not frame.schema["vector"].inner.is_numeric():
        raise DatasetError(f"{path}: column 'vector' must be list<float32>, got {frame.schema['vector']}")
    frame = frame.filter(pl.col("item_id").is_not_null())
    duplicated = frame.filter(pl.col("item_id").is_duplicated())["item_id"].unique().sort().to_list()
    if duplicated:
        raise DatasetError(f"{path}: column 'item_id' has duplicate ids, e.g. {duplicated[:MAX_IDS_SHOWN]}")
    try:
        matrix, valid, dim = vectors_from_arrow(frame["vector"].to_arrow(), str(path))
    except ValueError as exc:
        lengths = frame["vector"].list.len() if isinstance(frame.schema["vector"], pl.List) else None
        detail = str(exc)
        if lengths is not None and lengths.drop_nulls().len():
            common = lengths.drop_nulls().mode().sort()[0]
            odd = frame.filter(lengths != common)["item_id"].to_list()[:MAX_IDS_SHOWN]
            detail = f"vectors must all have the same length ({common} for most items); other lengths for ids {odd}"
        raise DatasetError(f"{path}: column 'vector': {detail}") from None
    ids = frame["item_id"].cast(pl.Int64).to_numpy()[valid]
    return ModalityVectors(name, np.ascontiguousarray(ids, dtype=np.int64), matrix.reshape(len(ids), dim or 0), None)


# --------------------------------------------------------------------------- Ray


def pool_cpus(config: EncodersConfig) -> int:
    """Logical CPUs one modality's encoder pool reserves (``encoders.actors`` x ``encoders.cpus_per_actor``)."""
    return math.ceil(config.actors * config.cpus_per_actor)


def check_pool(config: EncodersConfig) -> None:
    """Refuse (ConfigError naming the field) an encoder pool the connected Ray cluster cannot hold (it would wait)."""
    cluster.check_actor_pool("encoders", config.actors, config.cpus_per_actor, config.gpus_per_actor)


def _encode_on_ray(
    modality: str, section: dict[str, Any], todo: list[_Entry], config: EncodersConfig
) -> Iterator[pa.Table]:
    """``todo`` through a pool of ``config.actors`` encoder actors: result tables as they come (any order).

    Blocks hold whole batches of ``config.batch_size`` consecutive items, so every batch an actor
    encodes is one the in-process loop would have encoded.
    """
    import ray.data

    from recsys.encoders.stage import EncoderActor

    table = _todo_table(todo)
    batches = math.ceil(len(todo) / config.batch_size)
    rows = config.batch_size * math.ceil(batches / (config.actors * BLOCKS_PER_ACTOR))
    blocks = ray.data.from_arrow([table.slice(first, rows) for first in range(0, len(todo), rows)])
    ds = cluster.map_on_actor_pool(
        blocks,
        EncoderActor,
        config.actors,
        config.cpus_per_actor,
        config.gpus_per_actor,
        batch_size=config.batch_size,
        modality=modality,
        section=section,
    )
    yield from cluster.iter_tables(ds)


def _todo_table(todo: list[_Entry]) -> pa.Table:
    """The rows an encoder stage takes: ``item_id``, ``content_hash``, ``source``."""
    return pa.table(
        {
            "item_id": pa.array([e.item_id for e in todo], type=pa.int64()),
            "content_hash": pa.array([e.content_hash for e in todo], type=pa.string()),
            "source": pa.array([e.source for e in todo], type=pa.string()),
        }
    )


def _encode_in_process(
    modality: str, section: dict[str, Any], todo: list[_Entry], config: EncodersConfig
) -> Iterator[pa.Table]:
    """``todo`` through one :class:`EncoderActor` in this process (``encoders.actors: 0``), ``config.batch_size``
    items at a time: the batches an actor of the pool would encode, with this process's torch threads."""
    import torch

    from recsys.encoders.stage import EncoderActor

    encoder = EncoderActor(modality, section, threads=torch.get_num_threads(), use_gpu=config.gpus_per_actor > 0)
    table = _todo_table(todo)
    for first in range(0, len(todo), config.batch_size):
        yield encoder(table.slice(first, config.batch_size))


# --------------------------------------------------------------------------- encode


def _warn_unusable(modality: str, missing: list[int], unreadable: dict[int, str], total: int) -> None:
    if not missing and not unreadable:
        return
    parts = []
    if missing:
        ids = sorted(missing)
        more = " ..." if len(ids) > MAX_IDS_SHOWN else ""
        parts.append(f"{len(ids)} with a missing file (ids {ids[:MAX_IDS_SHOWN]}{more})")
    if unreadable:
        ids = sorted(unreadable)
        more = " ..." if len(ids) > MAX_IDS_SHOWN else ""
        parts.append(f"{len(ids)} unreadable (ids {ids[:MAX_IDS_SHOWN]}{more}; e.g. {unreadable[ids[0]]})")
    count = len(missing) + len(unreadable)
    warnings.warn(
        f"{modality}: {count} of {total} items with {MEDIA_COLUMNS[modality]} set get no {modality} vector "
        f"(masked): {'; '.join(parts)}",
        MediaWarning,
        stacklevel=4,  # _warn_unusable <- _encode_modality <- encode_items <- the caller
    )


def _encode_modality(
    modality: str, encoder: ItemEncoder, plan: _Plan, cache_path: Path, config: EncodersConfig, progress: bool
) -> ModalityReport:
    from recsys.console import progress as progress_bar

    start = time.perf_counter()
    cached: CacheRows = {}
    if cache_path.is_file():
        try:
            cached = _read_cache(cache_path, encoder.dim)
        except Exception as exc:
            warnings.warn(
                f"{modality}: ignoring unreadable cache {cache_path} ({exc}); re-encoding", RuntimeWarning, stacklevel=3
            )

    results: CacheRows = {}
    todo: list[_Entry] = []
    unreadable = dict(plan.unreadable)
    for entry in plan.entries:
        hit = cached.get(entry.item_id)
        if hit is not None and hit[0] == entry.content_hash:
            results[entry.item_id] = hit
            if hit[1] is None:
                unreadable[entry.item_id] = (
                    "could not be decoded on an earlier run (cached result: fix or replace the file)"
                )
        else:
            todo.append(entry)
    n_cached = len(results)
    if modality == "title":
        todo.sort(key=lambda e: len(e.source))  # similar lengths per batch: less padding to compute

    n_encoded, loaded, nodes = 0, False, Counter[str]()
    if todo:
        section = getattr(config, modality).model_dump(mode="json")
        if config.actors:
            check_pool(config)
            stage = _encode_on_ray(modality, section, todo, config)
        else:
            stage = _encode_in_process(modality, section, todo, config)
        with progress_bar(total=len(todo), desc=f"encode {modality}", unit="item", disable=not progress) as bar:
            for out in stage:
                matrix, valid, _ = vectors_from_arrow(out.column("vector"), f"{modality} encoder output")
                k = 0
                for item_id, content_hash, error, ok in zip(
                    out.column("item_id").to_pylist(),
                    out.column("content_hash").to_pylist(),
                    out.column("error").to_pylist(),
                    valid.tolist(),
                ):
                    results[item_id] = (content_hash, matrix[k] if ok else None)
                    k += int(ok)
                    if not ok:
                        unreadable[item_id] = error
                n_encoded += int(valid.sum())
                loaded = loaded or any(out.column("model_loaded").to_pylist())
                if cluster.NODE_COLUMN in out.column_names:
                    nodes.update(cluster.rows_per_node([out]))
                bar.update(out.num_rows)

    order = [e.item_id for e in plan.entries]
    if todo or set(cached) != set(order):
        _write_cache(cache_path, order, [results[i][0] for i in order], [results[i][1] for i in order], encoder.dim)
    _warn_unusable(modality, plan.missing, unreadable, len(plan.entries) + len(plan.missing) + len(plan.unreadable))
    return ModalityReport(
        modality=modality,
        source="encoder",
        dim=encoder.dim,
        fingerprint=encoder.fingerprint,
        n_items_with_vector=sum(results[i][1] is not None for i in order),
        n_encoded=n_encoded,
        n_cached=n_cached,
        missing_ids=sorted(plan.missing),
        unreadable_ids=sorted(unreadable),
        seconds=time.perf_counter() - start,
        path=cache_path,
        model_loaded=loaded,
        items_per_node=dict(nodes),
    )


def _enabled(config: EncodersConfig) -> list[str]:
    return [m for m in MODALITIES if getattr(config, m) is not None]


def encode_items(
    data_dir: Path,
    config: EncodersConfig,
    cache_dir: Path | None = None,
    progress: bool = True,
    address: str | None = None,
) -> EncodeReport:
    """Encode every item of ``data_dir`` with the enabled frozen encoders on Ray, using and updating the cache.

    Only new or changed items are encoded, and a model is loaded only if there is one. Missing
    or unreadable media leave that item without a vector (one MediaWarning per modality).
    Runs on the Ray this process is connected to, else on the cluster at ``address``, else on a
    local Ray started for the call; with ``encoders.actors: 0`` in this process, without Ray.
    Raises DatasetError for a malformed items.parquet or precomputed file, EncoderError for
    encoder weights that cannot be found or loaded and for a cache directory that cannot be
    created or written (``encoders.cache_dir``), ConfigError for an encoder pool the cluster
    cannot hold and for ``encoders.actors: 0`` with an ``address``.
    """
    data_dir = Path(data_dir)
    modalities = _enabled(config)
    items = _read_items(data_dir, modalities)
    precomputed = _precomputed_files(data_dir, config, modalities)
    root = _resolve_cache_dir(data_dir, config, cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EncoderError(
            f"{CACHE_FIELD}: cannot create the vector cache directory {root}: {exc.strerror or exc}"
        ) from None
    encoders = {m: build_encoder(m, getattr(config, m), load=False) for m in modalities}  # checks the weights paths

    reports: dict[str, ModalityReport] = {}
    if modalities and not config.actors:  # in this process: hashed and encoded here, no Ray
        if address:
            raise ConfigError(
                f"encoders.actors: 0 encodes in this process; set it to 1 or more to encode on the Ray cluster at "
                f"{address}"
            )
        for modality, encoder in encoders.items():
            plan = _plan(items, modality, data_dir)
            cache_path = root / modality / f"{encoder.fingerprint}.parquet"
            reports[modality] = _encode_modality(modality, encoder, plan, cache_path, config, progress)
    elif modalities:
        with cluster.ray_session(address, pool_cpus(config)):
            hashed = _hash_on_ray(items, modalities, data_dir)
            for modality, encoder in encoders.items():
                plan = _plan(items, modality, data_dir, hashed)
                cache_path = root / modality / f"{encoder.fingerprint}.parquet"
                reports[modality] = _encode_modality(modality, encoder, plan, cache_path, config, progress)
    for name, path in precomputed.items():
        start = time.perf_counter()
        vectors = _read_precomputed(name, path)
        reports[name] = ModalityReport(
            modality=name,
            source="precomputed",
            dim=vectors.dim,
            fingerprint=None,
            n_items_with_vector=len(vectors.item_ids),
            n_encoded=0,
            n_cached=0,
            seconds=time.perf_counter() - start,
            path=path,
        )
    loaded = [m for m, r in reports.items() if r.model_loaded]
    return EncodeReport(cache_dir=root, modalities=reports, models_loaded=loaded)


def load_item_vectors(
    data_dir: Path, config: EncodersConfig, cache_dir: Path | None = None
) -> dict[str, ModalityVectors]:
    """Every modality's item vectors, read from the caches and precomputed files (no model is loaded).

    Items are in items.parquet order and only those with a vector are listed. Raises
    EncoderError telling the user to run ``recsys encode`` when a modality's cache is missing
    or does not match the current items (a new or changed title or media file).
    """
    data_dir = Path(data_dir)
    modalities = _enabled(config)
    items = _read_items(data_dir, modalities)
    precomputed = _precomputed_files(data_dir, config, modalities)
    root = _resolve_cache_dir(data_dir, config, cache_dir)

    out: dict[str, ModalityVectors] = {}
    for modality in modalities:
        encoder = build_encoder(modality, getattr(config, modality), load=False)
        cache_path = root / modality / f"{encoder.fingerprint}.parquet"
        rerun = "run `recsys encode` with this config to (re)build it"
        if not cache_path.is_file():
            raise EncoderError(
                f"no cached {modality} vectors for encoder {encoder.fingerprint} at {cache_path}: {rerun}"
            )
        try:
            rows = _read_cache(cache_path, encoder.dim)
        except Exception as exc:
            raise EncoderError(f"the {modality} vector cache {cache_path} is unreadable ({exc}): {rerun}") from None
        plan = _plan(items, modality, data_dir)
        stale = [e.item_id for e in plan.entries if rows.get(e.item_id, ("",))[0] != e.content_hash]
        if stale:
            raise EncoderError(
                f"the {modality} vector cache {cache_path} is stale: {len(stale)} item(s) are new or changed "
                f"(ids {stale[:MAX_IDS_SHOWN]}{' ...' if len(stale) > MAX_IDS_SHOWN else ''}): {rerun}"
            )
        kept = [(e.item_id, vector) for e in plan.entries if (vector := rows[e.item_id][1]) is not None]
        ids = np.array([i for i, _ in kept], dtype=np.int64)
        matrix = np.stack([v for _, v in kept]).astype(np.float32) if kept else np.zeros((0, encoder.dim), np.float32)
        out[modality] = ModalityVectors(modality, ids, matrix, encoder.fingerprint)
    for name, path in precomputed.items():
        out[name] = _read_precomputed(name, path)
    return out
