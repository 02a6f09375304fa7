"""Where tracking logs to and how evaluations become MLflow metrics (recsys/tracking.py); the runs
themselves are read back in tests/unit/test_compare_report.py and tests/e2e/test_training.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import ExperimentConfig, TrackingConfig, load_config
from recsys.errors import ConfigError
from recsys.tracking import Tracker, evaluation_metrics, flatten, resolve_uri


def test_the_uri_comes_from_the_option_the_config_the_environment_else_a_local_store(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert resolve_uri(None, TrackingConfig()) == local  # never a server nobody configured
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_uri(None, TrackingConfig()) == "sqlite:///env.db"
    assert resolve_uri(None, TrackingConfig(uri="http://mlflow:5000")) == "http://mlflow:5000"
    assert resolve_uri("sqlite:///cli.db", TrackingConfig(uri="http://mlflow:5000")) == "sqlite:///cli.db"
    off = ExperimentConfig(tracking=TrackingConfig(enabled=False))
    assert Tracker.from_config(off) is None
    assert Tracker.from_config(off, "sqlite:///cli.db") == Tracker("sqlite:///cli.db", "recsys")


def test_the_tracking_section_is_strict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracking:\n  url: http://mlflow:5000\n")
    with pytest.raises(ConfigError, match=r"line 2: unknown key 'tracking.url'; did you mean 'uri'"):
        load_config(bad)
    bad.write_text("tracking:\n  experiment: ''\n")
    with pytest.raises(ConfigError, match=r"tracking.experiment: String should have at least 1 character"):
        load_config(bad)


def test_evaluations_and_configs_flatten_to_mlflow_names() -> None:
    evaluation = {
        "segments": {"all": {"auc": 0.7, "n": 100}, "history_20+": {"auc": None, "gauc": 0.6}},
        "oracle": {"all": {"auc": 0.8}},
    }
    assert evaluation_metrics(evaluation, "test") == {
        "test_auc": 0.7,
        "test_n": 100.0,
        "test_history_20plus_gauc": 0.6,
        "test_oracle_auc": 0.8,
    }
    params = flatten(ExperimentConfig().model_dump(mode="json"))
    assert params["model.name"] == "marn" and params["model.mlp_hidden"] == "[200, 80]"
    assert params["data.split.method"] == "auto" and params["model.modalities"] == "null"
