"""External ("peer") results added to a comparison with ``recsys compare --peer-results FILE``.

A peer file is JSON written by another tool that trained on exactly the same train/valid/test
rows (e.g. ``benchmarks/peers/`` for FuxiCTR's DIN). One object, or a list of them::

    {
      "model": "fuxictr_din",                 # row name in the report
      "source": "FuxiCTR 2.3 DIN",            # optional, shown in the report
      "runs": [
        {"seed": 0,
         "test": {"auc": 0.71, "gauc": 0.70, "logloss": 0.52},   # any subset of auc, gauc, logloss
         "train_samples_per_s": 12000.0,       # optional
         "warm_items": {"auc": 0.72},          # optional: more segments, named as in recsys evaluate
         "cold_items": {"auc": 0.55},
         "predictions": "fuxictr_din.seed0.predictions.parquet"}  # optional, see below
      ]
    }

Other keys are ignored. ``predictions`` (absolute, or relative to the JSON file) is a Parquet
file with ``user_id``, ``label`` and ``pred`` (or ``prob``) per test row, in the order of our
prepared test split (sorted by ``row_id`` when that column is there). When every run has one,
the peer gets a paired bootstrap against the best baseline and a ROC/calibration curve like
our models; otherwise its gain is shown without a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.errors import RecsysError
from recsys.jsonfile import read_json

PEER_METRICS = ("auc", "gauc", "logloss")


@dataclass
class PeerRun:
    seed: int | None
    test: dict[str, float]
    train_samples_per_s: float | None
    segments: dict[str, dict[str, float]] = field(default_factory=dict)  # more segments than "all"
    predictions: str | None = None


@dataclass
class Peer:
    model: str
    source: str
    runs: list[PeerRun]
    file: str


def _peer(entry: object, where: str, file: Path) -> Peer:
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise RecsysError(f"{where}: expected an object with a string 'model' and a list 'runs'")
    runs = entry.get("runs")
    if not isinstance(runs, list) or not runs:
        raise RecsysError(f"{where} ({entry['model']}): 'runs' must be a non-empty list")
    parsed = []
    for i, run in enumerate(runs):
        test = run.get("test") if isinstance(run, dict) else None
        if not isinstance(test, dict) or not any(k in test for k in PEER_METRICS):
            raise RecsysError(
                f"{where} ({entry['model']}): runs[{i}].test must hold at least one of {', '.join(PEER_METRICS)}"
            )
        bad = [k for k in PEER_METRICS if k in test and not isinstance(test[k], int | float)]
        if bad:
            raise RecsysError(
                f"{where} ({entry['model']}): runs[{i}].test.{bad[0]} must be a number, got {test[bad[0]]!r}"
            )
        speed = run.get("train_samples_per_s")
        segments = {
            name: _metrics(value)
            for name, value in run.items()
            if name != "test" and isinstance(value, dict) and any(k in value for k in PEER_METRICS)
        }
        predictions = run.get("predictions")
        if isinstance(predictions, str) and not Path(predictions).is_absolute():
            predictions = str(file.parent / predictions)
        parsed.append(
            PeerRun(
                run.get("seed"),
                _metrics(test),
                float(speed) if isinstance(speed, int | float) else None,
                segments,
                predictions if isinstance(predictions, str) else None,
            )
        )
    return Peer(entry["model"], str(entry.get("source", "")), parsed, str(file))


def _metrics(values: dict[str, object]) -> dict[str, float]:
    return {k: float(v) for k in PEER_METRICS if isinstance(v := values.get(k), int | float)}


def load_peer_predictions(peer: Peer) -> list[pl.DataFrame]:
    """Every run's row-level predictions as (user_id, label, prob) frames; [] unless every run has them."""
    paths = [run.predictions for run in peer.runs if run.predictions]
    if len(paths) < len(peer.runs):
        return []
    frames = []
    for run, path in zip(peer.runs, paths):
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:
            raise RecsysError(
                f"{peer.file}: predictions of {peer.model} seed {run.seed}: cannot read "
                f"{path} ({type(exc).__name__}: {exc})"
            ) from None
        score = "pred" if "pred" in frame.columns else "prob"
        missing = [c for c in ("user_id", "label", score) if c not in frame.columns]
        if missing:
            raise RecsysError(f"{path}: missing column(s) {missing} (need user_id, label, pred)")
        if "row_id" in frame.columns:
            frame = frame.sort("row_id")
        frames.append(
            frame.select("user_id", pl.col("label").cast(pl.Int8), pl.col(score).cast(pl.Float64).alias("prob"))
        )
    return frames


def load_peers(files: Sequence[str | Path]) -> list[Peer]:
    """Read every peer file (see the module docstring); malformed files raise a RecsysError naming them."""
    peers: list[Peer] = []
    for file in map(Path, files):
        payload = read_json(file, "peer results file not found")
        entries = payload if isinstance(payload, list) else [payload]
        peers += [
            _peer(entry, f"{file}[{i}]" if isinstance(payload, list) else str(file), file)
            for i, entry in enumerate(entries)
        ]
    return peers
