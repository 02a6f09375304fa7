"""`recsys compare` and `recsys evaluate` through the CLI, with Ray, on the tiny dataset directory.

One comparison (din and marn × 2 seeds, 1 epoch, 1 worker) is shared by every test here; the
evaluate tests use its checkpoints. Orchestration details (failed runs, peers, gains) are
covered without Ray in tests/unit/test_compare_report.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from support.tiny_dataset import write_tiny_dataset

RUNS = ("din-seed0", "din-seed1", "marn-seed0", "marn-seed1")


def compare_cli(config: Path, out: Path, *extra: str):
    return run_cli(
        "compare",
        "--config",
        str(config),
        "--models",
        "din,marn",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--bootstrap",
        "200",
        "--out",
        str(out),
        *extra,
        check=False,
    )


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory):
    """(config, report dir, the CompletedProcess) of one comparison."""
    root = tmp_path_factory.mktemp("compare-e2e")
    config = write_tiny_dataset(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ADDRESS", "local")  # a fresh local Ray even if a cluster runs on this machine
        proc = compare_cli(config, root / "report")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return config, root / "report", proc


def test_compare_writes_the_report_with_every_model_and_seed(compared) -> None:
    _, out, proc = compared
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for name in (*RUNS, "oracle", "Best baseline: din"):
        assert name in md and name in page, name
    for png in ("roc", "calibration", "val_auc", "attention"):
        assert (out / "plots" / f"{png}.png").is_file(), png
    results = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["seed"], r["status"]) for r in results["runs"]] == [
        ("din", 0, "ok"),
        ("din", 1, "ok"),
        ("marn", 0, "ok"),
        ("marn", 1, "ok"),
    ]
    for run in results["runs"]:
        assert len(run["history"]) == 1 and 0 <= run["history"][0]["val_auc"] <= 1
        assert all(0 <= m["auc"] <= 1 for m in run["test"]["segments"].values() if m["auc"] is not None)
    assert "compare: 100%" in proc.stderr  # the progress bar across runs
    assert "report:" in proc.stdout
    assert "\r" not in proc.stderr  # not a terminal: plain progress lines, no carriage-return frames


def test_compare_is_tracked_as_a_parent_run_with_a_child_per_run(compared) -> None:
    from recsys.tracking import TrackedRun

    _, out, _ = compared
    parent = TrackedRun.load(out)
    client = parent.client
    experiment = client.get_run(parent.run_id).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(RUNS)
    assert all(
        r.info.status == "FINISHED" and len(client.get_metric_history(r.info.run_id, "val_auc")) == 1 for r in children
    )
    assert {f.path for f in client.list_artifacts(parent.run_id, "report")} >= {
        "report/report.md",
        "report/results.json",
    }


def test_evaluate_a_compare_checkpoint(compared) -> None:
    _, out, _ = compared
    checkpoint = out / "train" / "marn-seed0" / "best"
    proc = run_cli("evaluate", "--checkpoint", str(checkpoint))
    metrics = json.loads((checkpoint.parent / "eval-test" / "metrics.json").read_text())
    for name in ("all", "warm_items", "cold_items", "missing_audio"):
        assert name in proc.stdout and 0 <= metrics["segments"][name]["auc"] <= 1, name
    assert (
        set(metrics["oracle"]) == set(metrics["segments"])
        and metrics["modal_attention"]["by_category"]["field"] == "dept"
    )
    assert "modal attention" in proc.stdout
    recorded = json.loads((out / "runs" / "marn-seed0" / "result.json").read_text())["test"]["segments"]["all"]
    assert metrics["segments"]["all"]["auc"] == pytest.approx(recorded["auc"])  # compare evaluated the same way
    from recsys.tracking import TrackedRun

    tracked = TrackedRun.load(checkpoint.parent)  # the child run compare logged: evaluate logs to it
    assert tracked is not None and f"logged to mlflow run {tracked.run_id}" in proc.stdout
    assert len(tracked.client.get_metric_history(tracked.run_id, "test_auc")) == 2  # compare's, then evaluate's
    assert [f.path for f in tracked.client.list_artifacts(tracked.run_id, "eval-test")] == ["eval-test/metrics.json"]


def test_rerun_resumes_and_the_same_seed_reproduces_the_metrics(compared) -> None:
    config, out, _ = compared
    result = out / "runs" / "din-seed0" / "result.json"
    before = json.loads(result.read_text())["test"]["segments"]
    result.unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ADDRESS", "local")
        proc = compare_cli(config, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    lines = {line.split(":")[0]: line for line in log.splitlines() if line.startswith("[compare] ")}
    assert all(f"[compare] {name}" in lines for name in RUNS), lines
    assert "(reused)" not in lines["[compare] din-seed0"]  # trained again
    assert all("(reused)" in lines[f"[compare] {name}"] for name in RUNS[1:])
    after = json.loads(result.read_text())["test"]["segments"]
    for name, m in before.items():
        for key in ("auc", "gauc", "logloss"):
            assert after[name][key] == pytest.approx(m[key], abs=1e-6), (name, key)
    assert "| din | baseline | 2/2 |" in (out / "report.md").read_text()


def test_reevaluate_scores_finished_runs_again_without_training(compared) -> None:
    config, out, _ = compared
    result = out / "runs" / "marn-seed1" / "result.json"
    record = json.loads(result.read_text())
    truth = record["test"]["segments"]["all"]["auc"]
    record["test"]["segments"]["all"]["auc"] = 0.0  # what an outdated evaluation left behind
    result.write_text(json.dumps(record))
    proc = compare_cli(config, out, "--reevaluate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("[compare] ")]
    assert len(lines) == len(RUNS) and all("(reused, re-evaluated)" in line for line in lines), lines
    assert json.loads(result.read_text())["test"]["segments"]["all"]["auc"] == pytest.approx(truth, abs=1e-9)


def test_evaluate_on_ray_data_scores_every_row_as_in_process(compared, tmp_path: Path) -> None:
    _, out, _ = compared
    checkpoint = out / "train" / "marn-seed0" / "best"
    args = ("evaluate", "--checkpoint", str(checkpoint), "--ray-min-rows", "0", "--actors", "2", "--out", str(tmp_path))
    proc = run_cli(*args)
    assert "scored on Ray Data on 1 node(s)" in proc.stdout
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr  # Ray's log lines: in the log file
    on_ray = json.loads((tmp_path / "metrics.json").read_text())
    in_process = json.loads((out / "runs" / "marn-seed0" / "result.json").read_text())["test"]
    assert set(on_ray["segments"]) == set(in_process["segments"])
    for name, m in in_process["segments"].items():
        for key in ("n", "auc", "gauc", "logloss", "mean_pred"):
            assert on_ray["segments"][name][key] == pytest.approx(m[key], abs=1e-6, nan_ok=True), (name, key)
    assert on_ray["oracle"]["all"]["auc"] == pytest.approx(in_process["oracle"]["all"]["auc"], abs=1e-9)
    assert on_ray["modal_attention"]["overall"] == pytest.approx(in_process["modal_attention"]["overall"], abs=1e-6)


def test_compare_on_an_invalid_dataset_fails_once_before_training(tmp_path: Path) -> None:
    import polars as pl

    config = write_tiny_dataset(tmp_path)
    inter = tmp_path / "data" / "interactions.parquet"
    frame = pl.read_parquet(inter)
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(2).otherwise(pl.col("label")).cast(pl.Int8).alias("label")
    ).write_parquet(inter)
    proc = compare_cli(config, tmp_path / "report")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "label" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "report" / "runs").exists()  # no run was started, none recorded as failed
