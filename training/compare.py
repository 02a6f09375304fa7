"""``recsys compare``: train every model × seed with Ray, evaluate each on the test split, write a report.

Each run sets ``model.name`` and ``train.seed`` on the experiment config and goes through
:func:`training.launch.run_training` (the entry point of ``recsys train``; one local Ray is
started by the first run and reused by the others), then its best checkpoint is evaluated on
the run's prepared test split (the same rows for every run: the features do not depend on the
model). A run that raises is recorded as failed, with its error, and the others go on. The
report is :mod:`recsys.reports` (:func:`recsys.reports.document.write_compare_report`).

The output directory (``--out``)::

    compare.json                 the resolved config and data directory the runs belong to
    train/<model>-seed<seed>/    each run's training directory (checkpoints, prepared features)
    runs/<model>-seed<seed>/     result.json (status, error, history, test metrics), predictions.parquet
                                 (:mod:`recsys.reports.runs`)
    results.json                 every run, the per-model summaries, gains, peers
    report.md, report.html       the report (same content), plots/*.png

Resumable: running the same command again reuses every run that already finished (its
``result.json`` says ok) and redoes the others, so an interrupted comparison continues where it
stopped; a different config in the same directory is refused; ``--reevaluate`` scores the finished
runs again from their best checkpoints (after a change to the evaluation). External rows come from
``--peer-results`` files (format in :mod:`recsys.reports.peers`).

Tracking (``run_compare(tracker=...)``, :mod:`recsys.tracking`): one MLflow parent run for the
comparison (its id in ``<out>/mlflow.json``, reused when the comparison resumes) with a child run per
model × seed trained here (:func:`training.tracked.train_and_test`); the report's mean test metrics
and files are logged to the parent at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys import console
from recsys.config import ExperimentConfig, override
from recsys.errors import ConfigError, RecsysError
from recsys.evaluation import Evaluation, evaluate_checkpoint
from recsys.features.prepared import PreparedDir
from recsys.models import MODELS, comparison_config
from recsys.reports.document import write_compare_report
from recsys.reports.peers import load_peers
from recsys.reports.runs import RunRecord, load_record, record_dir, run_name, write_predictions, write_record
from recsys.reports.summary import MIN_ROWS
from recsys.tracking import TrackedRun, Tracker
from training.launch import TrainResult, check_inputs, run_training
from training.tracked import train_and_test

#: ``run_training``'s signature as compare calls it (tests pass a stand-in without Ray).
TrainFn = Callable[..., TrainResult]


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
    min_rows: int = MIN_ROWS  # the report shows segments with fewer test rows without metrics


@dataclass
class CompareResult:
    out_dir: Path
    records: list[RunRecord]
    report_md: Path
    report_html: Path
    results_json: Path


def check_models(models: list[str]) -> list[str]:
    """Refuse unknown or repeated model names before anything runs."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"--models: unknown model(s) {unknown}; valid names: {', '.join(MODELS)}")
    if not models or len(set(models)) != len(models):
        raise ConfigError(f"--models: give each model once, got {models}")
    return models


def _fingerprint(spec: CompareSpec, config: ExperimentConfig) -> dict[str, Any]:
    raw = config.model_dump(mode="json")
    raw["model"].pop("name")
    raw["train"].pop("seed")
    raw["train"].pop("storage_path")
    raw.pop("evaluation", None)  # where the test split is scored, not how: the same scores either way
    return {
        "config": raw,
        "data_dir": str(Path(spec.data_dir or config.data.path).resolve()),
        "workers": spec.workers or config.train.workers,
    }


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, object]:
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
        info = getattr(model, "model_fields", {}).get(name)
        if info is None or not isinstance(info.annotation, type):
            return False
        model = info.annotation
    info = getattr(model, "model_fields", {}).get(parts[-1])
    return info is not None and not info.is_required() and info.get_default(call_default_factory=True) == value


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


def _mean_speed(history: list[dict[str, Any]]) -> float | None:
    speeds = [h["samples_per_s"] for h in history if h.get("samples_per_s")]
    return sum(speeds) / len(speeds) if speeds else None


def _save_evaluation(run_out: Path, record: RunRecord, evaluation: Evaluation) -> RunRecord:
    """Keep ``evaluation`` as the run's test result: its predictions file and ``record.test``."""
    if evaluation.predictions is not None:
        write_predictions(run_out, evaluation.predictions)
    record.test = evaluation.to_json()
    return record


def run_one(
    spec: CompareSpec,
    config: ExperimentConfig,
    model: str,
    seed: int,
    train_fn: TrainFn,
    tracker: Tracker | None = None,
    parent: TrackedRun | None = None,
) -> RunRecord:
    """Train and evaluate one model × seed (tracked as a child of ``parent``); any exception becomes a
    failed record."""
    name = run_name(model, seed)
    run_out = record_dir(spec.out_dir, name)
    shutil.rmtree(run_out, ignore_errors=True)
    shutil.rmtree(Path(config.train.storage_path) / name, ignore_errors=True)  # an unfinished earlier attempt
    run_out.mkdir(parents=True)
    cfg = config.model_copy(deep=True)
    cfg.model = comparison_config(cfg.model, model)  # the id-only baselines stay id-only
    cfg.train.seed = seed
    settings = cfg.model_dump(mode="json")
    settings.pop("tracking", None)
    started = time.perf_counter()
    try:
        tested = train_and_test(
            cfg,
            tracker,
            parent=parent,
            train_fn=train_fn,
            data_dir=spec.data_dir,
            cache_dir=spec.cache_dir,
            address=spec.address,
            workers=spec.workers,
            run_name=name,
        )
    except Exception as exc:
        record = RunRecord(
            model,
            seed,
            "failed",
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - started,
            config=settings,
        )
    else:
        result = tested.train
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
            config=settings,
        )
        _save_evaluation(run_out, record, tested.test)
    write_record(run_out, record)
    return record


def reevaluate_run(spec: CompareSpec, record: RunRecord) -> RunRecord:
    """A finished run evaluated again from its best checkpoint and prepared test split (no training)."""
    if record.checkpoint is None or record.run_dir is None:
        raise RecsysError(f"{record.name}: the record names no checkpoint to evaluate again")
    run_out = record_dir(spec.out_dir, record.name)
    evaluation = evaluate_checkpoint(Path(record.checkpoint), PreparedDir.of_run(record.run_dir), address=spec.address)
    write_record(run_out, _save_evaluation(run_out, record, evaluation))
    tracked = TrackedRun.load(Path(record.run_dir))
    if tracked is not None:
        tracked.log_evaluation(evaluation.to_json(), "test")
    return record


def _outcome(record: RunRecord) -> str:
    """The run's one-line result: its test AUC, or why it failed."""
    if record.status == "ok" and record.test is not None:
        return f"test AUC {record.test['segments']['all']['auc']:.4f}"
    lines = (record.error or "").splitlines()
    return f"FAILED: {lines[0][:200] if lines else ''}"


def _parent_run(spec: CompareSpec, tracker: Tracker) -> TrackedRun:
    """The comparison's MLflow run: the one recorded in ``<out>/mlflow.json`` (a resumed comparison), or a new one."""
    saved = TrackedRun.load(spec.out_dir)
    if saved is not None and saved.tracker == tracker:
        saved.reopen()
        return saved
    parent = tracker.start(f"compare {spec.out_dir.name}", tags={"recsys.command": "compare"})
    parent.log_params({"models": ",".join(spec.models), "seeds": ",".join(map(str, spec.seeds))})
    parent.save(spec.out_dir)
    return parent


def _log_report(parent: TrackedRun, result: CompareResult) -> None:
    """The report's tables on the parent run: mean test metrics per model as metrics, the report files as artifacts."""
    summary = json.loads(result.results_json.read_text(encoding="utf-8"))["summary"]
    metrics = {
        f"{model}_test_{metric}": stat["mean"]
        for model, row in summary.items()
        for metric, stat in row["segments"].get("all", {}).items()
        if stat.get("mean") is not None
    }
    parent.log_metrics(metrics)
    for name in ("report.md", "report.html", "results.json"):
        parent.log_artifacts(result.out_dir / name, "report")
    parent.log_artifacts(result.out_dir / "plots", "report/plots")


def run_compare(
    spec: CompareSpec, train_fn: TrainFn | None = None, progress: bool = True, tracker: Tracker | None = None
) -> CompareResult:
    """Run (or resume) every model × seed of ``spec`` and write the report; see the module docstring.

    ``train_fn`` defaults to :func:`training.launch.run_training` (tests inject their own). With a
    ``tracker``: one MLflow parent run for the comparison, a child per model × seed trained here.
    """
    check_models(spec.models)
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"--seeds: give at least one seed, each once; got {spec.seeds}")
    if spec.workers is not None and spec.workers < 1:  # 0 is an error, never "the config's value"
        raise ConfigError(f"--workers: must be >= 1, got {spec.workers}")
    if spec.n_boot < 1:
        raise ConfigError(f"--bootstrap: must be >= 1 resample, got {spec.n_boot}")
    if spec.min_rows < 1:
        raise ConfigError(f"--min-rows: must be >= 1 row, got {spec.min_rows}")
    peers = load_peers(spec.peer_files)  # a malformed peer file fails before hours of training
    config = spec.config.model_copy(deep=True)
    config.train.storage_path = str((spec.out_dir / "train").resolve())
    if spec.epochs is not None:
        override(config.train, "epochs", spec.epochs, "--epochs")
    _claim_out_dir(spec, config)
    if spec.workers is not None:  # after the claim: compare.json records --workers beside the config
        override(config.train, "workers", spec.workers, "--workers")  # results.json: what the runs used
    own_ray = train_fn is None
    if own_ray:  # what every run needs (a valid dataset, encoded items) fails once, before any training
        check_inputs(
            config, Path(spec.data_dir or config.data.path), spec.cache_dir, spec.workers or config.train.workers
        )
    train = train_fn or run_training
    ray_was_up = _ray_initialized() if own_ray else True

    records: list[RunRecord] = []
    parent = _parent_run(spec, tracker) if tracker is not None else None
    # Seed by seed: an interrupted comparison already holds every model at the first seeds.
    jobs = [(m, s) for s in spec.seeds for m in spec.models]
    bar = console.progress(jobs, desc="compare", unit="run", disable=not progress)
    try:
        for model, seed in bar:
            bar.set_postfix_str(run_name(model, seed))
            record = load_record(record_dir(spec.out_dir, run_name(model, seed)))
            reused = record is not None
            if record is not None and spec.reevaluate:
                record = reevaluate_run(spec, record)
            record = record or run_one(spec, config, model, seed, train, tracker, parent)
            records.append(record)
            how = (
                (" (reused, re-evaluated)" if spec.reevaluate else " (reused)")
                if reused
                else f" in {record.seconds:.0f} s"
            )
            bar.write(f"[compare] {record.name}: {_outcome(record)}{how}")
    finally:
        bar.close()
        if not ray_was_up:
            import ray

            ray.shutdown()
    records.sort(key=lambda r: (spec.models.index(r.model), spec.seeds.index(r.seed)))  # the report: by model
    md, page, results = write_compare_report(spec, config, records, peers)
    result = CompareResult(spec.out_dir, records, md, page, results)
    if parent is not None:
        _log_report(parent, result)
        parent.finish(ok=all(r.status == "ok" for r in records))
    return result


def _ray_initialized() -> bool:
    import ray

    return ray.is_initialized()
