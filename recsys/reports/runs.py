"""One run of a comparison (a model × seed) and its files: what ``recsys compare`` writes and the report reads.

The orchestration (:mod:`training.compare`) writes them, the report (:mod:`recsys.reports.document`,
:mod:`recsys.reports.summary`) reads them; neither imports the other for it::

    <out>/runs/<model>-seed<seed>/result.json          the run's RunRecord (status, error, history, test metrics)
    <out>/runs/<model>-seed<seed>/predictions.parquet  its row-level test predictions
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.parquet"


def run_name(model: str, seed: int) -> str:
    """``<model>-seed<seed>``: the run's directory name (under ``runs/`` and the training storage)."""
    return f"{model}-seed{seed}"


@dataclass
class RunRecord:
    """One model × seed: how it went and what it measured."""

    model: str
    seed: int
    status: str  # "ok" or "failed"
    error: str | None = None
    seconds: float = 0.0
    run_dir: str | None = None  # the training run's directory
    checkpoint: str | None = None  # its best checkpoint
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples_per_s: float | None = None
    test: dict[str, Any] | None = None  # recsys.evaluation.Evaluation.to_json()
    config: dict[str, Any] | None = None  # the experiment config the run was trained with (tracking left out)

    @property
    def name(self) -> str:
        return run_name(self.model, self.seed)


def record_dir(out_dir: Path, name: str) -> Path:
    """Where the files of run ``name`` of the comparison in ``out_dir`` lie."""
    return out_dir / "runs" / name


def load_record(run_out: Path) -> RunRecord | None:
    """A finished run's record, or None if it has not finished successfully."""
    path = run_out / RESULT_FILE
    if not path.is_file() or not (run_out / PREDICTIONS_FILE).is_file():
        return None
    record = RunRecord(**json.loads(path.read_text(encoding="utf-8")))
    return record if record.status == "ok" else None


def write_record(run_out: Path, record: RunRecord) -> None:
    """Write ``result.json`` of one run."""
    (run_out / RESULT_FILE).write_text(json.dumps(asdict(record), indent=1, default=str), encoding="utf-8")


def write_predictions(run_out: Path, predictions: pl.DataFrame) -> None:
    """Write the row-level test predictions of one run."""
    predictions.write_parquet(run_out / PREDICTIONS_FILE)


def load_predictions(out_dir: Path, records: list[RunRecord]) -> dict[str, list[pl.DataFrame]]:
    """Row-level test predictions of every successful run, per model, in seed order."""
    out: dict[str, list[pl.DataFrame]] = {}
    for rec in records:
        if rec.status == "ok":
            out.setdefault(rec.model, []).append(pl.read_parquet(record_dir(out_dir, rec.name) / PREDICTIONS_FILE))
    return out
