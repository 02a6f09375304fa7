"""Experiment tracking with MLflow: what `recsys train`, `compare` and `evaluate` log, and where.

Where (:func:`resolve_uri`): ``--tracking-uri``, else the config's ``tracking.uri``, else the
``MLFLOW_TRACKING_URI`` environment variable, else a local store under the working directory:
``sqlite:///mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts`` (MLflow 3 refuses its old
file store). Nothing here reaches the network unless the URI names a server, and MLflow's usage
telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``) before MLflow is imported.

What: a training run logs its resolved config as params (flattened, ``model.name`` ...), one value
per epoch of every numeric history field (``val_auc``, ``train_loss``, ``samples_per_s`` ...; step =
epoch), the best checkpoint's evaluation as ``<split>_<metric>`` (``all`` segment) and
``<split>_<segment>_<metric>``, and artifacts. A comparison is a parent run with one child run per
model × seed. The run's id is written to :data:`RUN_FILE` in the run's directory, so that
`recsys evaluate` logs to the run it evaluates and a resumed comparison to its parent.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import console
from recsys.config import ExperimentConfig, TrackingConfig
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

RUN_FILE = "mlflow.json"
LOCAL_DIR = "mlruns"
PARENT_TAG = "mlflow.parentRunId"
#: History fields that are not per-epoch measurements (the step itself, identifiers, a running best).
NOT_METRICS = frozenset({"epoch", "step", "node_ids", "world_size", "epoch_end_unix", "best_val_auc"})
_BATCH = 100  # params per log_batch call (MLflow's limit), metrics stay far below its 1000


class TrackingError(RecsysError):
    """The tracking store cannot be used (bad URI, unreachable server, unwritable directory)."""


def resolve_uri(option: str | None, config: TrackingConfig) -> str:
    """The tracking URI: ``--tracking-uri``, ``tracking.uri``, ``MLFLOW_TRACKING_URI``, else ./mlruns (sqlite)."""
    uri = option or config.uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / LOCAL_DIR / 'mlflow.db').as_posix()}"


def _local_artifacts(uri: str) -> str | None:
    """Where a local sqlite store keeps artifacts: ``artifacts/`` beside the database file."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()


def metric_key(name: str) -> str:
    """``name`` in the characters MLflow allows in keys (``history_20+`` -> ``history_20plus``)."""
    return re.sub(r"[^\w\-. /]", "_", name.replace("+", "plus"))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``section.key`` -> text (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | type(None)) else str(value)
    return out


def evaluation_metrics(evaluation: Mapping[str, Any], split: str) -> dict[str, float]:
    """``recsys.evaluation.Evaluation.to_json()`` as flat metrics: ``<split>_auc`` (all rows),
    ``<split>_<segment>_<metric>``, ``<split>_oracle_auc`` ... (finite values only)."""
    out: dict[str, float] = {}
    for source, segments in (("", evaluation.get("segments") or {}), ("oracle_", evaluation.get("oracle") or {})):
        for segment, values in segments.items():
            where = "" if segment == "all" else f"{segment}_"
            for name, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    out[metric_key(f"{split}_{source}{where}{name}")] = float(value)
    return out


@dataclass(frozen=True)
class Tracker:
    """An MLflow store and experiment to log runs to."""

    uri: str
    experiment: str

    @classmethod
    def from_config(cls, config: ExperimentConfig, option: str | None = None) -> Tracker | None:
        """The tracker the config asks for (None when ``tracking.enabled`` is false and no ``--tracking-uri``)."""
        if not config.tracking.enabled and not option:
            return None
        return cls(resolve_uri(option, config.tracking), config.tracking.experiment)

    def client(self) -> MlflowClient:
        """An MLflow client on this store (MLflow imported here: it takes seconds)."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        console.adopt_library_loggers(["mlflow", "alembic"])
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            return MlflowClient(tracking_uri=self.uri)
        except Exception as exc:
            raise TrackingError(f"tracking.uri: cannot open the MLflow store {self.uri}: {exc}") from exc

    def experiment_id(self, client: MlflowClient) -> str:
        """The experiment's id, created (with local artifacts beside a local store) when missing."""
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(client.create_experiment(self.experiment, artifact_location=_local_artifacts(self.uri)))

    def start(
        self,
        name: str,
        parent: TrackedRun | None = None,
        tags: Mapping[str, str] | None = None,
        start_time: float | None = None,
    ) -> TrackedRun:
        """A new run named ``name`` (a child of ``parent`` when given), status RUNNING; ``start_time``:
        unix seconds (default now)."""
        client = self.client()
        all_tags = dict(tags or {}) | ({PARENT_TAG: parent.run_id} if parent else {})
        ms = int(1000 * start_time) if start_time is not None else None
        try:
            run = client.create_run(self.experiment_id(client), start_time=ms, run_name=name, tags=all_tags)
        except Exception as exc:
            raise TrackingError(f"tracking: cannot create a run in {self.uri}: {exc}") from exc
        return TrackedRun(self, run.info.run_id, client)


class TrackedRun:
    """One MLflow run, logged to by run id (no global active run: children and parents side by side)."""

    def __init__(self, tracker: Tracker, run_id: str, client: MlflowClient | None = None) -> None:
        self.tracker, self.run_id = tracker, run_id
        self._client = client

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = self.tracker.client()
        return self._client

    def log_params(self, params: Mapping[str, str]) -> None:
        """Params (text values), in batches of MLflow's limit."""
        from mlflow.entities import Param

        items = list(params.items())
        for first in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[first : first + _BATCH]])

    def log_config(self, config: ExperimentConfig) -> None:
        """The resolved config as params (``tracking.*`` left out: where the run is logged is not the experiment)."""
        raw = config.model_dump(mode="json")
        raw.pop("tracking", None)
        self.log_params(flatten(raw))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, timestamp: float | None = None) -> None:
        """Metrics at one ``step`` (``timestamp``: unix seconds, default now)."""
        from mlflow.entities import Metric

        ms = int(1000 * (timestamp or time.time()))
        batch = [Metric(metric_key(k), float(v), ms, step) for k, v in metrics.items() if math.isfinite(float(v))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_history(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Every numeric field of every epoch's report, at step = its epoch."""
        for report in history:
            values = {
                k: float(v)
                for k, v in report.items()
                if k not in NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
            }
            self.log_metrics(values, step=int(report.get("epoch", 0)), timestamp=report.get("epoch_end_unix"))

    def log_evaluation(self, evaluation: Mapping[str, Any], split: str) -> None:
        """An evaluation (``Evaluation.to_json()``) as ``<split>_...`` metrics (see :func:`evaluation_metrics`)."""
        self.log_metrics(evaluation_metrics(evaluation, split))

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        """A file or a directory's files as artifacts under ``artifact_path``."""
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def finish(self, ok: bool = True) -> None:
        """End the run: FINISHED or FAILED."""
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

    def reopen(self) -> None:
        """Mark an ended run RUNNING again (a resumed comparison's parent)."""
        self.client.update_run(self.run_id, status="RUNNING")

    def save(self, directory: Path) -> Path:
        """Record this run in ``directory/mlflow.json`` (its URI, experiment and run id)."""
        path = Path(directory) / RUN_FILE
        path.write_text(
            json.dumps({"tracking_uri": self.tracker.uri, "experiment": self.tracker.experiment, "run_id": self.run_id})
        )
        return path

    @classmethod
    def load(cls, directory: Path, uri: str | None = None) -> TrackedRun | None:
        """The run recorded in ``directory/mlflow.json`` (on ``uri`` when given), or None."""
        path = Path(directory) / RUN_FILE
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            return cls(Tracker(uri or saved["tracking_uri"], saved["experiment"]), saved["run_id"])
        except (ValueError, KeyError) as exc:
            raise TrackingError(f"{path}: not a tracking record ({exc})") from None


def log_checkpoint_evaluation(
    checkpoint: Path, evaluation: Mapping[str, Any], metrics_file: Path, uri: str | None = None
) -> TrackedRun | None:
    """Log an evaluation (``Evaluation.to_json()``) of ``checkpoint`` to the run that trained it, if that
    run was tracked (``<run>/mlflow.json`` beside the checkpoint); ``uri`` overrides the store recorded there."""
    run = TrackedRun.load(Path(checkpoint).resolve().parent, uri)
    if run is None:
        return None
    split = str(evaluation.get("split", "test"))
    run.log_evaluation(evaluation, split)
    run.log_artifacts(metrics_file, f"eval-{split}")
    return run
