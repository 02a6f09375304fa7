"""Offline evaluation (recsys.evaluation) on a tiny checkpoint trained without Ray."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from support.tiny_dataset import train_without_ray, write_tiny_dataset

from recsys.checkpoint import CheckpointError
from recsys.config import load_config
from recsys.errors import DatasetError, RecsysError
from recsys.evaluation import evaluate_checkpoint, format_evaluation, segment_masks


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset dir, best checkpoint) of a tiny MARN run."""
    root = tmp_path_factory.mktemp("tiny-eval")
    config = load_config(write_tiny_dataset(root))
    result = train_without_ray(config, Path(config.data.path), root / "runs" / "marn")
    return Path(config.data.path), result.best_checkpoint


def _in_unit_interval(value: float) -> bool:
    return math.isnan(value) or 0.0 <= value <= 1.0


def test_segments_oracle_and_attention(tiny_run, tmp_path) -> None:
    _, checkpoint = tiny_run
    ev = evaluate_checkpoint(checkpoint)
    assert ev.source.endswith("prepared/test") and ev.model == "marn"
    assert {"all", "warm_items", "cold_items", "missing_audio"} <= set(ev.segments)
    assert any(name.startswith("history_") for name in ev.segments)
    assert set(ev.oracle) == set(ev.segments)
    for m in [*ev.segments.values(), *ev.oracle.values()]:
        assert all(_in_unit_interval(m[k]) for k in ("auc", "gauc", "mean_pred", "mean_label")), m
        assert m["logloss"] > 0 and m["n"] > 0
    assert ev.segments["warm_items"]["n"] + ev.segments["cold_items"]["n"] == ev.segments["all"]["n"]
    assert ev.oracle["all"]["auc"] > 0.6  # the planted signal
    att = ev.attention
    assert sorted(att["modalities"]) == ["audio", "id", "image"]
    assert all(0.0 <= att["overall"][m] <= 1.0 for m in att["modalities"])
    assert att["by_category"]["field"] == "dept"
    assert sum(v["n"] for v in att["by_category"]["values"].values()) == ev.segments["all"]["n"]
    written = json.loads(ev.write(tmp_path).read_text())  # strict JSON: NaN became null
    assert written["segments"]["all"]["auc"] == pytest.approx(ev.segments["all"]["auc"])
    table = format_evaluation(ev)
    assert "cold_items" in table and "oracle AUC" in table and "modal attention" in table and "dept=" in table


def test_data_dir_is_featurised_with_the_checkpoint_and_matches_the_prepared_split(tiny_run) -> None:
    data, checkpoint = tiny_run
    prepared, raw = evaluate_checkpoint(checkpoint), evaluate_checkpoint(checkpoint, data_dir=data)
    assert raw.source == str(data)
    for name, m in prepared.segments.items():
        assert raw.segments[name] == pytest.approx(m, nan_ok=True), name


def test_unknown_items_are_named(tiny_run, tmp_path) -> None:
    data, checkpoint = tiny_run
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    items = pl.read_parquet(copy / "items.parquet")
    new = items.head(1).with_columns(pl.lit(9999, dtype=items["item_id"].dtype).alias("item_id"))
    pl.concat([items, new]).write_parquet(copy / "items.parquet")
    inter = pl.read_parquet(copy / "interactions.parquet")
    extra = (
        inter.filter(pl.col("split") == "test")
        .head(2)
        .with_columns(pl.lit(9999, dtype=inter["item_id"].dtype).alias("item_id"))
    )
    pl.concat([inter, extra]).write_parquet(copy / "interactions.parquet")
    with pytest.raises(DatasetError, match=r"1 item id\(s\) unknown to the checkpoint's item table .*\[9999\]"):
        evaluate_checkpoint(checkpoint, data_dir=copy)


def test_users_without_training_rows_form_the_cold_users_segment(tiny_run, tmp_path) -> None:
    """A test user with no training rows (their rows moved to another user id, unseen in training) is a
    cold user: the cold_users and warm_users segments split the rows, and the ids add up."""
    data, checkpoint = tiny_run
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    inter = pl.read_parquet(copy / "interactions.parquet")
    newcomer = int(inter["user_id"].max()) + 1
    test_user = inter.filter(pl.col("split") == "test")["user_id"][0]
    moved = (pl.col("user_id") == test_user) & (pl.col("split") == "test")
    inter = inter.with_columns(pl.when(moved).then(newcomer).otherwise(pl.col("user_id")).alias("user_id"))
    inter.write_parquet(copy / "interactions.parquet")
    users = pl.read_parquet(copy / "users.parquet")
    new_user = users.filter(pl.col("user_id") == test_user).with_columns(
        pl.lit(newcomer).cast(users["user_id"].dtype).alias("user_id")
    )
    pl.concat([users, new_user]).write_parquet(copy / "users.parquet")
    ev = evaluate_checkpoint(checkpoint, data_dir=copy)
    n_moved = inter.filter(pl.col("user_id") == newcomer).height
    assert ev.segments["cold_users"]["n"] == n_moved > 0
    assert ev.segments["warm_users"]["n"] + n_moved == ev.segments["all"]["n"]
    assert "cold_users" in format_evaluation(ev)
    # the tiny data's own test split has no new user: no user segments there
    assert "cold_users" not in evaluate_checkpoint(checkpoint).segments


def test_missing_checkpoint_and_missing_split_are_clear_errors(tiny_run, tmp_path) -> None:
    _, checkpoint = tiny_run
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        evaluate_checkpoint(tmp_path / "nope")
    alone = tmp_path / "run" / "best"
    shutil.copytree(checkpoint, alone)
    with pytest.raises(RecsysError, match=r"run/prepared/test: no prepared 'test' split .*--data"):
        evaluate_checkpoint(alone)


def test_history_buckets_and_missing_modality_segments() -> None:
    lengths = [0, 3, 7, 25, 1]
    hist = np.array([[i < n for i in range(30)] for n in lengths])
    frame = pl.DataFrame(
        {
            "hist_mask": pl.Series(hist, dtype=pl.Array(pl.Boolean, 30)),
            "meta_is_cold": [False, True, False, False, False],
        }
    )
    masks = segment_masks(frame)
    assert masks["history_0"].tolist() == [True, False, False, False, False]
    assert masks["history_1-4"].tolist() == [False, True, False, False, True]
    assert masks["history_5-19"].tolist() == [False, False, True, False, False]
    assert masks["history_20+"].tolist() == [False, False, False, True, False]
    assert masks["cold_items"].tolist() == [False, True, False, False, False]


def test_cli_evaluate_with_data_prints_the_table_and_writes_metrics(tiny_run, tmp_path, capsys) -> None:
    from recsys.cli import main

    data, checkpoint = tiny_run
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--split",
                "valid",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "marn on valid" in out and "warm_items" in out and f"wrote {tmp_path / 'metrics.json'}" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["split"] == "valid"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "error: " in capsys.readouterr().err
