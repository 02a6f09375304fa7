"""The checkpoint directory: one writer, one reader.

A checkpoint is self-describing::

    model.pt          the model's state dict (loaded with weights_only=True)
    config.yaml       the fully resolved experiment config
    feature_map.json  vocabularies and normalisation fitted on train
    item_table.pt     every item's frozen vectors, masks and attribute indices (weights_only); a
                      training run's epoch checkpoints reference the run's one copy instead
                      (``meta.json``'s ``item_table_file``, verified by its sha256 as the others)
    metrics.json      whatever the trainer measured (may be empty)
    meta.json         format version, package version, model name, modalities, sha256 of every file

Writes go to a temporary sibling directory renamed into place, so a crash never leaves a
half-written checkpoint under the final name. Reads verify every file's hash first, so a
truncated or modified file is named instead of failing deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from recsys import __version__
from recsys.config import ExperimentConfig, dump_config, parse_config
from recsys.errors import RecsysError
from recsys.features.feature_map import FeatureMap
from recsys.features.item_table import ItemTable
from recsys.jsonfile import read_json

FORMAT_VERSION = 1
ITEM_TABLE = "item_table.pt"
FILES = ("model.pt", "config.yaml", "feature_map.json", ITEM_TABLE, "metrics.json")


class CheckpointError(RecsysError):
    """A checkpoint directory is missing, truncated, corrupt or does not match the config."""


@dataclass
class Checkpoint:
    """Everything needed to score: the model (eval mode), config, feature map and item table."""

    path: Path
    model: nn.Module
    config: ExperimentConfig
    feature_map: FeatureMap
    item_table: ItemTable
    metrics: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SharedItemTable:
    """An item-table file written once (a training run's prepared features, on storage every node sees)
    that checkpoints reference instead of storing a copy each."""

    path: Path
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> SharedItemTable:
        """The file at ``path`` (absolute) and its hash, read once."""
        path = Path(path).resolve()
        return cls(path, _sha256(path))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ExperimentConfig,
    feature_map: FeatureMap,
    item_table: ItemTable,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    shared_item_table: SharedItemTable | None = None,
) -> Path:
    """Write a checkpoint directory atomically (replacing one already at ``path``).

    With ``shared_item_table`` (the file ``item_table`` was loaded from), the checkpoint references that
    file instead of storing the table: :func:`store_item_table` makes it self-contained later.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model = getattr(model, "module", model)  # unwrap DistributedDataParallel
        torch.save(model.state_dict(), tmp / "model.pt")
        (tmp / "config.yaml").write_text(dump_config(config), encoding="utf-8")
        feature_map.save(tmp / "feature_map.json")
        if shared_item_table is None:
            item_table.save(tmp / ITEM_TABLE)
        (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=1, default=float), encoding="utf-8")
        files = {name: _sha256(tmp / name) for name in FILES if (tmp / name).is_file()}
        meta = {
            "format_version": FORMAT_VERSION,
            "recsys_version": __version__,
            "model": config.model.name,
            "modalities": list(getattr(model, "modalities", [])),
            "content_dims": item_table.dims(),
            "files": files,
            **(extra or {}),
        }
        if shared_item_table is not None:
            files[ITEM_TABLE] = shared_item_table.sha256
            meta["item_table_file"] = str(shared_item_table.path)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    meta_path = path / "meta.json"
    meta = read_json(meta_path, f"missing; {path} is not a recsys checkpoint directory", CheckpointError)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: checkpoint format {meta.get('format_version')!r}, this recsys reads {FORMAT_VERSION}"
        )
    for name in FILES:
        file = _file(path, meta, name)
        if not file.is_file():
            if file.parent != path:
                raise CheckpointError(f"{file}: missing; {path} references it as its item table and stores none")
            raise CheckpointError(f"{file}: missing from the checkpoint")
        expected = meta.get("files", {}).get(name)
        if expected and _sha256(file) != expected:
            raise CheckpointError(
                f"{file}: content does not match meta.json (sha256 differs): "
                "the file is truncated, corrupt or was modified"
            )
    return meta


def _file(path: Path, meta: dict[str, Any], name: str) -> Path:
    """Where the checkpoint's file ``name`` is: in the directory, else the item table it references."""
    referenced = meta.get("item_table_file")
    if name == ITEM_TABLE and referenced and not (path / name).is_file():
        return Path(str(referenced))
    return path / name


def store_item_table(path: str | Path) -> Path:
    """Make a checkpoint that references its item table self-contained: the file hard-linked into the
    directory where the filesystem allows (no second copy on disk), else copied. Verified first."""
    path = Path(path)
    meta = _read_meta(path)
    target = path / ITEM_TABLE
    if target.is_file():
        return path
    source = _file(path, meta, ITEM_TABLE)
    tmp = path / f".{ITEM_TABLE}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return path


def _model_differences(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    da, db = a.model.model_dump(), b.model.model_dump()
    return [f"model.{k}: checkpoint {da[k]!r}, config {db[k]!r}" for k in da if da[k] != db[k]]


def load_checkpoint(path: str | Path, expected_config: ExperimentConfig | None = None) -> Checkpoint:
    """Read a checkpoint directory and rebuild its model in eval mode.

    With ``expected_config``, a checkpoint whose model section differs is refused with the
    differing fields. Every failure is a CheckpointError naming the file and the reason.
    """
    from recsys.models import build_model

    path = Path(path)
    meta = _read_meta(path)
    try:
        config = parse_config(
            yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")), source=str(path / "config.yaml")
        )
    except RecsysError as exc:
        raise CheckpointError(str(exc)) from None
    if expected_config is not None:
        diffs = _model_differences(config, expected_config)
        if diffs:
            raise CheckpointError(f"{path / 'config.yaml'}: incompatible with the given config: " + "; ".join(diffs))
    try:
        feature_map = FeatureMap.load(path / "feature_map.json")
        item_table = ItemTable.load(_file(path, meta, ITEM_TABLE))
    except RecsysError as exc:
        raise CheckpointError(str(exc)) from None
    model = build_model(config.model, feature_map, item_table.dims())
    try:
        state = torch.load(path / "model.pt", weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(f"{path / 'model.pt'}: cannot load the weights ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise CheckpointError(
            f"{path / 'model.pt'}: weights do not fit the model built from config.yaml "
            f"(model.name={config.model.name}): " + " ".join(line.strip() for line in first)
        ) from None
    model.eval()
    metrics = read_json(path / "metrics.json", "missing from the checkpoint", CheckpointError)
    return Checkpoint(path, model, config, feature_map, item_table, metrics, meta)
