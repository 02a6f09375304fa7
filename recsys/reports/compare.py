"""``recsys compare``: train every model × seed with Ray, evaluate each on the test split, write a report.

Each run sets ``model.name`` and ``train.seed`` on the experiment config and goes through
:func:`training.launch.run_training` (the entry point of ``recsys train``; one local Ray is
started by the first run and reused by the others), then its best checkpoint is evaluated on
the run's prepared test split (the same rows for every run: the features do not depend on the
model). A run that raises is recorded as failed, with its error, and the others go on.

The output directory (``--out``)::

    compare.json                 the resolved config and data directory the runs belong to
    train/<model>-seed<seed>/    each run's training directory (checkpoints, prepared features)
    runs/<model>-seed<seed>/     result.json (status, error, history, test metrics), predictions.parquet
    results.json                 every run, the per-model summaries, gains, peers
    report.md, report.html       the report (same content), plots/*.png

Resumable: running the same command again reuses every run that already finished (its
``result.json`` says ok) and redoes the others, so an interrupted comparison continues where it
stopped; a different config in the same directory is refused; ``--reevaluate`` scores the finished
runs again from their best checkpoints (after a change to the evaluation). External rows come from
``--peer-results`` files (format in :mod:`recsys.reports.peers`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from recsys.config import ExperimentConfig
from recsys.errors import ConfigError, RecsysError
from recsys.evaluation import evaluate_checkpoint
from recsys.models import MODELS
from recsys.reports.peers import load_peers

RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class CompareSpec:
    """What to compare: the base config, models × seeds, where the data is and where results go."""

    config: ExperimentConfig
    models: list[str]
    seeds: list[int]
    out_dir: Path
    data_dir: Path | None = None
    cache_dir: Path | None = None
    workers: int | None = None
    address: str | None = None
    epochs: int | None = None
    peer_files: list[Path] = field(default_factory=list)
    n_boot: int = 1000
    command: str = ""  # the command line, quoted in the report
    reevaluate: bool = False  # re-score finished runs' best checkpoints (evaluation changed; no retraining)


@dataclass
class RunRecord:
    """One model × seed: how it went and what it measured."""

    model: str
    seed: int
    status: str  # "ok" or "failed"
    error: str | None = None
    seconds: float = 0.0
    run_dir: str | None = None
    checkpoint: str | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    train_samples_per_s: float | None = None
    test: dict | None = None  # recsys.evaluation.Evaluation.to_json()

    @property
    def name(self) -> str:
        return run_name(self.model, self.seed)


@dataclass
class CompareResult:
    out_dir: Path
    records: list[RunRecord]
    report_md: Path
    report_html: Path
    results_json: Path


def run_name(model: str, seed: int) -> str:
    return f"{model}-seed{seed}"


def check_models(models: list[str]) -> list[str]:
    """Refuse unknown or repeated model names before anything runs."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"--models: unknown model(s) {unknown}; valid names: {', '.join(MODELS)}")
    if not models or len(set(models)) != len(models):
        raise ConfigError(f"--models: give each model once, got {models}")
    return models


def _fingerprint(spec: CompareSpec, config: ExperimentConfig) -> dict:
    raw = config.model_dump(mode="json")
    raw["model"].pop("name")
    raw["train"].pop("seed")
    raw["train"].pop("storage_path")
    return {
        "config": raw,
        "data_dir": str(Path(spec.data_dir or config.data.path).resolve()),
        "workers": spec.workers or config.train.workers,
    }


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _is_new_default(key: str, value: object) -> bool:
    """Whether ``config.<section>.<field>`` is a setting added after a comparison was made, at its
    default: the runs there were made with the behaviour that default keeps, so they still match."""
    parts = key.split(".")
    if parts[0] != "config" or len(parts) < 3:
        return False
    model: type = ExperimentConfig
    for name in parts[1:-1]:
        field = getattr(model, "model_fields", {}).get(name)
        if field is None or not isinstance(field.annotation, type):
            return False
        model = field.annotation
    field = getattr(model, "model_fields", {}).get(parts[-1])
    return field is not None and not field.is_required() and field.get_default(call_default_factory=True) == value


def _claim_out_dir(spec: CompareSpec, config: ExperimentConfig) -> None:
    """Create the output directory, or check that the one there holds runs of the same config."""
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    marker = spec.out_dir / "compare.json"
    mine = _fingerprint(spec, config)
    if marker.is_file():
        theirs = json.loads(marker.read_text(encoding="utf-8"))
        a, b = _flat(theirs), _flat(mine)
        diffs = [
            f"{k}: {a.get(k)!r} there, {b.get(k)!r} now"
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not (k not in a and _is_new_default(k, b.get(k)))
        ]
        if diffs:
            raise RecsysError(
                f"{spec.out_dir} holds a comparison of another config ({'; '.join(diffs[:5])}): "
                "use another --out, or delete the directory"
            )
    else:
        marker.write_text(json.dumps(mine, indent=1), encoding="utf-8")


def load_record(run_out: Path) -> RunRecord | None:
    """A finished run's record, or None if it has not finished successfully."""
    path = run_out / RESULT_FILE
    if not path.is_file() or not (run_out / PREDICTIONS_FILE).is_file():
        return None
    record = RunRecord(**json.loads(path.read_text(encoding="utf-8")))
    return record if record.status == "ok" else None


def _mean_speed(history: list[dict]) -> float | None:
    speeds = [h["samples_per_s"] for h in history if h.get("samples_per_s")]
    return sum(speeds) / len(speeds) if speeds else None


def run_one(spec: CompareSpec, config: ExperimentConfig, model: str, seed: int, train_fn: Callable) -> RunRecord:
    """Train and evaluate one model × seed; any exception becomes a failed record."""
    name = run_name(model, seed)
    run_out = spec.out_dir / "runs" / name
    shutil.rmtree(run_out, ignore_errors=True)
    shutil.rmtree(Path(config.train.storage_path) / name, ignore_errors=True)  # an unfinished earlier attempt
    run_out.mkdir(parents=True)
    cfg = config.model_copy(deep=True)
    cfg.model.name = model
    cfg.train.seed = seed
    started = time.perf_counter()
    try:
        result = train_fn(
            cfg,
            data_dir=spec.data_dir,
            cache_dir=spec.cache_dir,
            address=spec.address,
            workers=spec.workers,
            run_name=name,
        )
        evaluation = evaluate_checkpoint(result.best_checkpoint, Path(result.prepared_dir) / "test")
    except Exception as exc:
        record = RunRecord(
            model, seed, "failed", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started
        )
    else:
        record = RunRecord(
            model,
            seed,
            "ok",
            seconds=time.perf_counter() - started,
            run_dir=str(result.run_dir),
            checkpoint=str(result.best_checkpoint),
            best_epoch=result.best_metrics.get("epoch"),
            history=list(result.history),
            train_samples_per_s=_mean_speed(result.history),
            test=evaluation.to_json(),
        )
        evaluation.predictions.write_parquet(run_out / PREDICTIONS_FILE)
    _write_record(run_out, record)
    return record


def _write_record(run_out: Path, record: RunRecord) -> None:
    (run_out / RESULT_FILE).write_text(json.dumps(asdict(record), indent=1, default=str), encoding="utf-8")


def reevaluate_run(spec: CompareSpec, record: RunRecord) -> RunRecord:
    """A finished run evaluated again from its best checkpoint and prepared test split (no training)."""
    run_out = spec.out_dir / "runs" / record.name
    evaluation = evaluate_checkpoint(Path(record.checkpoint), Path(record.run_dir) / "prepared" / "test")
    evaluation.predictions.write_parquet(run_out / PREDICTIONS_FILE)
    record.test = evaluation.to_json()
    _write_record(run_out, record)
    return record


def _default_train_fn() -> Callable:
    from training.launch import run_training

    return run_training


def run_compare(spec: CompareSpec, train_fn: Callable | None = None, progress: bool = True) -> CompareResult:
    """Run (or resume) every model × seed of ``spec`` and write the report; see the module docstring.

    ``train_fn`` defaults to :func:`training.launch.run_training` (tests inject their own).
    """
    from recsys.reports.document import write_compare_report

    check_models(spec.models)
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"--seeds: give at least one seed, each once; got {spec.seeds}")
    peers = load_peers(spec.peer_files)  # a malformed peer file fails before hours of training
    config = spec.config.model_copy(deep=True)
    config.train.storage_path = str((spec.out_dir / "train").resolve())
    if spec.epochs is not None:
        config.train.epochs = spec.epochs
    _claim_out_dir(spec, config)
    own_ray = train_fn is None
    if own_ray:  # what every run needs (a valid dataset, encoded items) fails once, before any training
        from training.launch import check_inputs

        check_inputs(
            config, Path(spec.data_dir or config.data.path), spec.cache_dir, spec.workers or config.train.workers
        )
    train_fn = train_fn or _default_train_fn()
    ray_was_up = _ray_initialized() if own_ray else True

    records: list[RunRecord] = []
    # Seed by seed: an interrupted comparison already holds every model at the first seeds.
    jobs = [(m, s) for s in spec.seeds for m in spec.models]
    bar = tqdm(jobs, desc="compare", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        for model, seed in bar:
            bar.set_postfix_str(run_name(model, seed))
            record = load_record(spec.out_dir / "runs" / run_name(model, seed))
            reused = record is not None
            if reused and spec.reevaluate:
                record = reevaluate_run(spec, record)
            record = record or run_one(spec, config, model, seed, train_fn)
            records.append(record)
            outcome = (
                f"test AUC {record.test['segments']['all']['auc']:.4f}"
                if record.status == "ok"
                else f"FAILED: {record.error.splitlines()[0][:200]}"
            )
            how = (
                (" (reused, re-evaluated)" if spec.reevaluate else " (reused)")
                if reused
                else f" in {record.seconds:.0f} s"
            )
            bar.write(f"[compare] {record.name}: {outcome}{how}")
    finally:
        bar.close()
        if not ray_was_up:
            import ray

            ray.shutdown()
    records.sort(key=lambda r: (spec.models.index(r.model), spec.seeds.index(r.seed)))  # the report: by model
    md, page, results = write_compare_report(spec, config, records, peers)
    return CompareResult(spec.out_dir, records, md, page, results)


def _ray_initialized() -> bool:
    import ray

    return ray.is_initialized()


def load_predictions(out_dir: Path, records: list[RunRecord]) -> dict[str, list[pl.DataFrame]]:
    """Row-level test predictions of every successful run, per model, in seed order."""
    out: dict[str, list[pl.DataFrame]] = {}
    for rec in records:
        if rec.status == "ok":
            out.setdefault(rec.model, []).append(pl.read_parquet(out_dir / "runs" / rec.name / PREDICTIONS_FILE))
    return out
