"""`recsys compare`'s orchestration and report, with a Ray-free stand-in for run_training.

The e2e test (tests/e2e/test_evaluate_compare.py) runs the same through the CLI and Ray.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from support.tiny_dataset import train_without_ray, write_tiny_dataset

from recsys.config import ExperimentConfig, load_config
from recsys.errors import ConfigError, RecsysError
from recsys.reports.peers import load_peers
from recsys.reports.runs import RunRecord
from recsys.reports.summary import not_converged
from recsys.tracking import TrackedRun, Tracker
from training.compare import CompareSpec, run_compare


class FakeTrain:
    """run_training's signature; fails for the (model, seed) pairs in ``fail``; counts calls."""

    def __init__(self, fail: set[tuple[str, int]] = frozenset()) -> None:
        self.fail, self.calls, self.workers = fail, [], []

    def __call__(self, config, *, data_dir, cache_dir, address, workers, run_name):
        self.calls.append(run_name)
        self.workers.append(workers)
        if (config.model.name, config.train.seed) in self.fail:
            raise RuntimeError("injected failure for the test")
        return train_without_ray(config, Path(data_dir or config.data.path), Path(config.train.storage_path) / run_name)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str):
    root = tmp_path_factory.mktemp("compare")
    config = load_config(write_tiny_dataset(root))
    peer = root / "peer.json"
    peer.write_text(
        json.dumps(
            {
                "model": "fuxictr_din",
                "source": "FuxiCTR DIN",
                "runs": [
                    {"seed": 0, "test": {"auc": 0.61, "gauc": 0.6, "logloss": 0.66}, "train_samples_per_s": 5000.0},
                    {"seed": 1, "test": {"auc": 0.63, "gauc": 0.6, "logloss": 0.65}, "cold_items": {"auc": 0.5}},
                ],
            }
        )
    )
    # A peer with row-level predictions (the true click probabilities, in test-row order): paired test.
    test = pl.read_parquet(Path(config.data.path) / "interactions.parquet").filter(pl.col("split") == "test")
    test.select(
        pl.int_range(pl.len()).alias("row_id"), "user_id", "label", pl.col("true_prob").alias("pred")
    ).reverse().write_parquet(root / "knows.parquet")
    knows = root / "knows.json"
    knows.write_text(
        json.dumps(
            [{"model": "knows_all", "runs": [{"seed": 0, "test": {"auc": 0.75}, "predictions": "knows.parquet"}]}]
        )
    )
    spec = CompareSpec(
        config,
        ["din", "marn"],
        [0, 1],
        root / "report",
        peer_files=[peer, knows],
        n_boot=200,
        command="recsys compare --models din,marn --seeds 2",
    )
    fake = FakeTrain(fail={("din", 1)})
    tracker = Tracker(mlflow_store, "compare-unit")
    return spec, run_compare(spec, train_fn=fake, progress=False, tracker=tracker), fake


def test_report_lists_every_model_and_seed_and_the_failed_run(compared) -> None:
    spec, result, fake = compared
    # trained seed by seed (an interrupted comparison already has every model), reported model by model
    assert fake.calls == ["din-seed0", "marn-seed0", "din-seed1", "marn-seed1"]
    assert [(r.name, r.status) for r in result.records] == [
        ("din-seed0", "ok"),
        ("din-seed1", "failed"),
        ("marn-seed0", "ok"),
        ("marn-seed1", "ok"),
    ]
    md, page = result.report_md.read_text(), result.report_html.read_text()
    for text in (md, page):
        for name in ("din-seed0", "din-seed1", "marn-seed0", "marn-seed1", "fuxictr_din", "oracle"):
            assert name in text, name
        assert "injected failure for the test" in text
        assert "Best baseline: din" in text and "p (paired bootstrap)" in text
        assert "cold_items" in text and "missing_audio" in text
    assert "| din | baseline | 1/2 |" in md and "| marn | ours | 2/2 |" in md
    assert "data:image/png;base64," in page  # plots embedded
    for png in ("roc", "calibration", "val_auc", "attention"):
        assert (spec.out_dir / "plots" / f"{png}.png").stat().st_size > 1000, png
        assert f"plots/{png}.png" in md


def test_results_json_has_every_run_summaries_and_the_gain_test(compared) -> None:
    spec, result, _ = compared
    results = json.loads(result.results_json.read_text())
    assert [r["status"] for r in results["runs"]] == ["ok", "failed", "ok", "ok"]
    assert "injected failure" in results["runs"][1]["error"]
    summary = results["summary"]
    assert summary["din"]["n_ok"] == 1 and summary["marn"]["segments"]["all"]["auc"]["n"] == 2
    assert summary["fuxictr_din"]["kind"] == "peer" and summary["fuxictr_din"]["segments"]["all"]["auc"][
        "mean"
    ] == pytest.approx(0.62)
    assert summary["oracle"]["segments"]["all"]["auc"]["mean"] > 0.6
    gain = {g["model"]: g for g in results["gains"]}
    assert results["best_baseline"] == "din"
    marn = gain["marn"]
    expected = summary["marn"]["segments"]["all"]["auc"]["mean"] - summary["din"]["segments"]["all"]["auc"]["mean"]
    assert marn["diff_auc"] == pytest.approx(expected)
    assert 0 < marn["test"]["p_value"] <= 1 and marn["test"]["ci_low"] <= marn["diff_auc"] <= marn["test"]["ci_high"]
    assert gain["fuxictr_din"]["test"] is None and "no row-level predictions" in gain["fuxictr_din"]["note"]
    assert summary["fuxictr_din"]["segments"]["cold_items"]["auc"]["mean"] == pytest.approx(0.5)
    assert gain["knows_all"]["test"]["p_value"] < 0.05 and gain["knows_all"]["test"]["ci_low"] > 0
    for run in results["runs"]:
        if run["status"] == "ok":
            assert all(0 <= m["auc"] <= 1 for m in run["test"]["segments"].values() if m["auc"] is not None)


def test_rerun_resumes_only_the_failed_run_and_a_changed_config_is_refused(compared) -> None:
    spec, _, _ = compared
    again = FakeTrain()
    result = run_compare(spec, train_fn=again, progress=False)
    assert again.calls == ["din-seed1"]
    assert all(r.status == "ok" for r in result.records)
    assert "| din | baseline | 2/2 |" in result.report_md.read_text()
    changed = CompareSpec(spec.config.model_copy(deep=True), ["din"], [0], spec.out_dir)
    changed.config.train.learning_rate = 0.5
    with pytest.raises(RecsysError, match=r"another config .*train.learning_rate"):
        run_compare(changed, train_fn=FakeTrain(), progress=False)


def test_a_setting_added_later_at_its_default_still_matches_the_comparison(compared) -> None:
    """A comparison made before a config field existed is resumed when the field keeps its default
    (the runs there had that behaviour), and refused when it does not."""
    spec, _, _ = compared
    marker = spec.out_dir / "compare.json"
    saved = marker.read_text()
    try:
        older = json.loads(saved)
        del older["config"]["model"]["specific_norm"]
        marker.write_text(json.dumps(older))
        again = FakeTrain()
        run_compare(spec, train_fn=again, progress=False)
        assert again.calls == []  # every run reused
        changed = CompareSpec(spec.config.model_copy(deep=True), spec.models, spec.seeds, spec.out_dir)
        changed.config.model.specific_norm = True
        with pytest.raises(RecsysError, match=r"model.specific_norm: None there, True now"):
            run_compare(changed, train_fn=FakeTrain(), progress=False)
    finally:
        marker.write_text(saved)


def test_bad_models_seeds_and_peer_files_fail_before_any_run(compared, tmp_path) -> None:
    spec, _, _ = compared
    fake = FakeTrain()
    with pytest.raises(ConfigError, match=r"unknown model\(s\) \['marnn'\]"):
        run_compare(CompareSpec(spec.config, ["marnn"], [0], tmp_path / "a"), train_fn=fake)
    with pytest.raises(ConfigError, match="--seeds"):
        run_compare(CompareSpec(spec.config, ["din"], [1, 1], tmp_path / "b"), train_fn=fake)
    bad = tmp_path / "peer.json"
    bad.write_text(json.dumps({"model": "x", "runs": [{"seed": 0, "test": {"auc": "high"}}]}))
    with pytest.raises(RecsysError, match=r"peer.json \(x\): runs\[0\].test.auc must be a number"):
        load_peers([bad])
    assert fake.calls == []


def test_reports_name_paths_beside_the_project_relative_to_it(tmp_path) -> None:
    from recsys.reports.document import shown_path

    here = Path.cwd()
    assert shown_path(here / "runs" / "x") == "runs/x"
    assert shown_path(here.parent / "shared" / "data") == "../shared/data"
    assert shown_path("runs/x") == "runs/x"


def test_a_symlinked_sibling_folder_stays_relative(tmp_path, monkeypatch) -> None:
    """CI clones the project beside a symlink to the shared data: following the link would print
    the machine directory it points to."""
    from recsys.reports.document import shown_path

    elsewhere = tmp_path / "elsewhere" / "data"
    elsewhere.mkdir(parents=True)
    (tmp_path / "checkout" / "project").mkdir(parents=True)
    (tmp_path / "checkout" / "shared").symlink_to(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "checkout" / "project")
    assert shown_path(tmp_path / "checkout" / "shared" / "data") == "../shared/data"
    assert shown_path(elsewhere) == str(elsewhere)


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("workers", 0, "--workers: must be >= 1, got 0"),
        ("n_boot", 0, "--bootstrap: must be >= 1 resample, got 0"),
        ("epochs", 0, "--epochs: Input should be greater than or equal to 1 (got 0)"),
        ("epochs", 5000, "--epochs: Input should be less than or equal to 1000 (got 5000)"),
    ],
)
def test_bad_run_options_are_refused_before_anything_is_written(
    tmp_path: Path, option: str, value: int, fragment: str
) -> None:
    """0 is an error, never "the config's value"; a value out of the config's limits names the option."""
    spec = CompareSpec(ExperimentConfig(), ["marn"], [0], tmp_path / "report", **{option: value})
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        run_compare(spec, train_fn=FakeTrain(), progress=False)
    assert not (tmp_path / "report").exists()


def test_compare_is_one_mlflow_parent_run_with_a_child_per_model_and_seed(compared) -> None:
    spec, result, _ = compared
    parent = TrackedRun.load(spec.out_dir)
    client = parent.client
    children = {
        r.info.run_name: r
        for r in client.search_runs(
            [client.get_run(parent.run_id).info.experiment_id],
            f"tags.mlflow.parentRunId = '{parent.run_id}'",
        )
    }
    # din-seed1 failed (nothing logged for it); retrained later by a rerun without tracking
    assert sorted(children) == ["din-seed0", "marn-seed0", "marn-seed1"]
    marn = children["marn-seed1"]
    assert marn.info.status == "FINISHED"
    assert marn.data.params["model.name"] == "marn" and marn.data.params["train.seed"] == "1"
    assert [(m.step, m.value) for m in client.get_metric_history(marn.info.run_id, "val_auc")] == [
        (1, pytest.approx(result.records[3].history[0]["val_auc"]))
    ]
    assert marn.data.metrics["test_auc"] == pytest.approx(result.records[3].test["segments"]["all"]["auc"])
    assert "test_cold_items_auc" in marn.data.metrics and "test_oracle_auc" in marn.data.metrics
    files = {f.path for f in client.list_artifacts(marn.info.run_id, "checkpoint")}
    assert "checkpoint/model.pt" in files
    assert TrackedRun.load(Path(result.records[3].run_dir)).run_id == marn.info.run_id  # recorded in the run dir
    top = client.get_run(parent.run_id)
    assert top.data.params["models"] == "din,marn"
    assert top.data.metrics["marn_test_auc"] == pytest.approx(
        json.loads(result.results_json.read_text())["summary"]["marn"]["segments"]["all"]["auc"]["mean"]
    )
    assert {f.path for f in client.list_artifacts(parent.run_id, "report")} >= {
        "report/report.md",
        "report/results.json",
        "report/plots",
    }


def test_runs_whose_best_epoch_is_the_cap_are_flagged_not_converged(compared) -> None:
    spec, result, _ = compared
    results = json.loads(result.results_json.read_text())
    # the stand-in trains one epoch with train.epochs 1: every finished run stopped at the cap
    finished = [f"{r['model']}-seed{r['seed']}" for r in results["runs"] if r["status"] == "ok"]
    assert len(finished) >= 3 and results["not_converged"] == finished
    md = result.report_md.read_text()
    assert "| marn-seed1 | ok | 1 of 1: not converged |" in md and f"{len(finished)} of 4 run(s)" in md
    train = {"train": {"epochs": 5}}
    records = [
        RunRecord("din", 0, "ok", best_epoch=5, config=train),
        RunRecord("din", 1, "ok", best_epoch=3, config=train),
        RunRecord("marn", 0, "ok", best_epoch=4),  # no recorded config: the comparison's cap (4)
        RunRecord("marn", 1, "failed"),
    ]
    assert not_converged(records, default_cap=4) == ["din-seed0", "marn-seed0"]


def test_segments_below_min_rows_show_their_count_and_no_metrics(compared, tmp_path) -> None:
    spec, result, _ = compared
    sizes = result.records[0].test["segments"]
    small, n_small = min(((name, int(m["n"])) for name, m in sizes.items()), key=lambda x: x[1])
    assert n_small < sizes["all"]["n"]
    shutil.copytree(spec.out_dir, tmp_path / "report")
    again = CompareSpec(spec.config, spec.models, spec.seeds, tmp_path / "report", n_boot=50, min_rows=n_small + 1)
    redone = run_compare(again, train_fn=FakeTrain(), progress=False)  # every run reused: the report only
    summary = json.loads(redone.results_json.read_text())["summary"]["marn"]
    assert summary["segments"][small]["auc"]["n"] == 0 and summary["rows"][small] == n_small
    assert summary["segments"]["all"]["auc"]["n"] == 2
    md = redone.report_md.read_text()
    assert f"({n_small} rows)" in md and f"{n_small} (< {n_small + 1}: no metrics)" in md
    assert f"({n_small} rows)" not in result.report_md.read_text()  # the default (30) kept its metrics


def test_results_json_records_the_workers_the_runs_used(tmp_path) -> None:
    config = load_config(write_tiny_dataset(tmp_path))
    config.train.workers = 2
    fake = FakeTrain()
    result = run_compare(
        CompareSpec(config, ["din"], [0], tmp_path / "report", workers=1, n_boot=20), train_fn=fake, progress=False
    )
    results = json.loads(result.results_json.read_text())
    assert fake.workers == [1]
    assert results["config"]["train"]["workers"] == 1 and results["runs"][0]["config"]["train"]["workers"] == 1
