"""A training run, its best checkpoint tested, and both tracked: what `recsys train` and `recsys demo` run.

:func:`train_and_test` trains through :func:`training.launch.run_training`, evaluates the best
checkpoint on the run's prepared test split (``<run>/test_metrics.json``) and, with a
:class:`recsys.tracking.Tracker`, logs the run to MLflow (:func:`log_training`): the resolved config
as params, the per-epoch history, the test metrics, the checkpoint and the report files as
artifacts. ``recsys compare`` logs its runs with the same :func:`log_training`, as child runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsys.config import ExperimentConfig
from recsys.evaluation import Evaluation, evaluate_checkpoint
from recsys.features.prepared import PreparedDir
from recsys.tracking import TrackedRun, Tracker
from training.launch import RUN_INFO, TrainResult, run_training

TEST_METRICS = "test_metrics.json"


@dataclass
class TestedRun:
    """A finished training run and its best checkpoint's evaluation on the test split."""

    train: TrainResult
    test: Evaluation
    tracked: TrackedRun | None = None


def log_training(run: TrackedRun, config: ExperimentConfig, result: TrainResult, test: dict[str, Any] | None) -> None:
    """Log a finished training run to ``run``: config, history, test metrics, checkpoint and report files."""
    run.log_config(config)
    run.log_history(result.history)
    run.log_metrics({"best_epoch": float(result.best_metrics.get("epoch", 0))})
    if test is not None:
        run.log_evaluation(test, "test")
    run.log_artifacts(result.best_checkpoint, "checkpoint")
    for name in (RUN_INFO, TEST_METRICS):
        run.log_artifacts(result.run_dir / name, "report")
    run.save(result.run_dir)


def train_and_test(
    config: ExperimentConfig,
    tracker: Tracker | None = None,
    *,
    parent: TrackedRun | None = None,
    train_fn: Callable[..., TrainResult] = run_training,
    **options: Any,
) -> TestedRun:
    """Train (``options``: :func:`training.launch.run_training`'s), test the best checkpoint, track both.

    With a ``tracker`` the finished run is logged as one MLflow run (a child of ``parent`` when given;
    its start time the training's). A run that fails is not logged: nothing is created in the store
    for a refused or broken run (a comparison lists its failed runs in its report).
    """
    started = time.time()
    result = train_fn(config, **options)
    evaluation = evaluate_checkpoint(
        result.best_checkpoint, PreparedDir(result.prepared_dir), address=options.get("address")
    )
    (result.run_dir / TEST_METRICS).write_text(json.dumps(evaluation.to_json(), indent=1))
    tracked = None
    if tracker is not None:
        tags = {"recsys.command": "train", "recsys.run_dir": str(result.run_dir)}
        tracked = tracker.start(result.run_dir.name, parent=parent, tags=tags, start_time=started)
        try:
            log_training(tracked, config, result, evaluation.to_json())
        except BaseException:
            tracked.finish(ok=False)
            raise
        tracked.finish()
    return TestedRun(result, evaluation, tracked)
