"""Distributed training on a real Ray cluster: two nodes on this machine, faults, resume, bad input.

One cluster (a head node plus a second node, each its own raylet started with `ray start`) is
shared by every test here; jobs reach it by address, as on a real cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from conftest import ROOT, run_cli, write_config
from support.ray_cluster import ENV, two_node_cluster

from recsys.config import load_config
from recsys.errors import ConfigError, DatasetError
from recsys.features.prepared import examples_frame


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A head node plus a second `ray start` node (tests/support/ray_cluster.py)."""
    with two_node_cluster(tmp_path_factory.mktemp("ray-logs")) as address:
        yield address


@pytest.fixture(scope="module")
def small_data(small_dataset) -> Path:
    return small_dataset


def train_cli(config: Path, address: str, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("train", "--config", str(config), "--address", address, *extra, timeout=900)


def history(run_dir: Path) -> list[dict]:
    import torch

    return torch.load(run_dir / "latest" / "train_state.pt", weights_only=True)["state"]["history"]


#: Features prepared and the test split scored by the distributed Ray Data jobs, small as the data is
#: (batches of 256 rows: the ~1,200 test rows make several scoring tasks, for both nodes' actors).
ON_RAY_DATA = {
    "prepare": {"ray_min_rows": 0, "rows_per_partition": 2000},
    "evaluation": {"ray_min_rows": 0, "batch_size": 256},
}


@pytest.fixture(scope="module")
def baseline_run(cluster, small_data, default_dataset, tmp_path_factory):
    """An uninterrupted 2-worker run spread over both nodes."""
    root = tmp_path_factory.mktemp("baseline")
    config = write_config(
        root / "exp.yaml",
        small_data,
        default_dataset.cache_dir,
        root / "runs",
        sections=ON_RAY_DATA,
        placement_strategy="STRICT_SPREAD",
    )
    proc = train_cli(config, cluster, "--run-name", "base")
    return root / "runs" / "base", proc


def test_two_node_cluster_runs_workers_on_both_nodes(baseline_run) -> None:
    run_dir, proc = baseline_run
    epochs = history(run_dir)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(len(e["node_ids"].split(",")) == 2 for e in epochs), epochs  # one worker on each node
    assert all(0.5 < e["val_auc"] <= 1 and e["world_size"] == 2 for e in epochs)
    assert (run_dir / "best" / "model.pt").is_file() and (run_dir / "latest" / "model.pt").is_file()
    meta = json.loads((run_dir / "best" / "meta.json").read_text())
    assert meta["model"] == "marn"
    assert "best checkpoint:" in proc.stdout and "val AUC" in proc.stdout
    assert "samples/s" in proc.stdout + proc.stderr  # progress lines


def test_the_run_stores_its_item_table_once(baseline_run) -> None:
    """Epoch checkpoints reference the prepared item table; best and latest hard-link that one file."""
    run_dir, _ = baseline_run
    prepared = (run_dir / "prepared" / "item_table.pt").stat()
    assert prepared.st_nlink == 3  # prepared/, best/ and latest/: one file on disk
    for name in ("best", "latest"):
        assert (run_dir / name / "item_table.pt").stat().st_ino == prepared.st_ino
    epochs = sorted(p for p in (run_dir / "ray").rglob("checkpoint_*") if p.is_dir())
    assert epochs and not any((e / "item_table.pt").exists() for e in epochs)
    meta = json.loads((epochs[-1] / "meta.json").read_text())
    assert meta["item_table_file"] == str((run_dir / "prepared" / "item_table.pt").resolve())


def test_features_prepared_on_ray_data_are_the_single_process_examples_row_for_row(
    baseline_run, small_data, default_dataset
) -> None:
    from recsys.features.prepare import prepare_data
    from recsys.features.prepared import PreparedDir

    run_dir, proc = baseline_run
    assert "preparing features on Ray Data:" in proc.stdout and "user partitions" in proc.stdout
    assert "features prepared on 2 node(s)" in proc.stdout  # the example writers of both nodes had partitions
    distributed = PreparedDir.of_run(run_dir)
    assert len(list(distributed.split_dir("train").glob("*.parquet"))) >= 2  # a part per user partition
    config = load_config(run_dir / "best" / "config.yaml")
    single = prepare_data(config, small_data, default_dataset.cache_dir)
    assert distributed.load_feature_map().to_json() == single.feature_map.to_json()
    assert distributed.load_item_table().train_rows.tolist() == single.item_table.train_rows.tolist()
    for split in ("train", "valid", "test"):
        ours = examples_frame(single.examples.split(split))
        theirs = distributed.read_split(split)
        assert theirs.schema == ours.schema, split
        assert sorted(theirs.rows()) == sorted(ours.rows()), split  # same examples; parts in partition order


def test_the_test_split_scored_on_ray_data_gives_the_in_process_metrics(baseline_run) -> None:
    from recsys.evaluation import evaluate_checkpoint

    run_dir, _ = baseline_run
    on_ray = json.loads((run_dir / "test_metrics.json").read_text())
    assert sum(on_ray["rows_per_node"].values()) == on_ray["segments"]["all"]["n"]
    assert len(on_ray["rows_per_node"]) == 2 and min(on_ray["rows_per_node"].values()) > 0  # both nodes scored
    in_process = evaluate_checkpoint(run_dir / "best", overrides={"ray_min_rows": 10**12})
    assert in_process.rows_per_node is None
    for name, m in in_process.segments.items():
        for key in ("n", "auc", "gauc", "logloss"):
            assert on_ray["segments"][name][key] == pytest.approx(m[key], abs=1e-6, nan_ok=True), (name, key)


def test_encode_through_the_address_runs_actors_on_both_nodes_and_writes_the_in_process_vectors(
    cluster, small_data, default_dataset, tmp_path
) -> None:
    """`recsys encode --address` with a pool of 2 title encoders: one actor per node, each encoding items,
    and the cache holds the vectors the session's in-process encode wrote (same items, hashes)."""
    import numpy as np

    data = tmp_path / "data"  # the first 96 items (3 batches of 32) and their interactions
    data.mkdir()
    items = pl.read_parquet(small_data / "items.parquet").head(96)
    items.write_parquet(data / "items.parquet")
    shutil.copy(small_data / "users.parquet", data / "users.parquet")
    interactions = pl.read_parquet(small_data / "interactions.parquet")
    kept = interactions.filter(pl.col("item_id").is_in(items["item_id"].implode()))
    kept.write_parquet(data / "interactions.parquet")
    sections = {"encoders": {"actors": 2, "image": None, "audio": None}}
    config = write_config(tmp_path / "exp.yaml", data, tmp_path / "cache", tmp_path / "runs", sections=sections)
    proc = run_cli("encode", str(data), "--config", str(config), "--address", cluster, "--no-progress")
    assert "title encoded on 2 Ray node(s)" in proc.stdout, proc.stdout
    ours = pl.read_parquet(next((tmp_path / "cache" / "title").glob("*.parquet")))
    theirs = pl.read_parquet(next((default_dataset.cache_dir / "title").glob("*.parquet")))
    theirs = theirs.filter(pl.col("item_id").is_in(ours["item_id"].implode()))
    assert ours.height == 96 and ours.drop("vector").equals(theirs.drop("vector"))
    np.testing.assert_allclose(np.stack(ours["vector"].to_numpy()), np.stack(theirs["vector"].to_numpy()), atol=1e-5)


def test_train_prints_each_epoch_once_and_keeps_ray_output_in_the_log_file(baseline_run) -> None:
    run_dir, proc = baseline_run
    out = proc.stdout + proc.stderr
    assert out.count("epoch 1/2:") == 1 and out.count("epoch 2/2:") == 1  # once each (Ray Train wrote them twice)
    assert "[recsys:progress]" not in out and "RayTrainWorker" not in out and "Ray Train Controller" not in out
    assert "test: marn test AUC" in proc.stdout
    log = (run_dir / "recsys.log").read_text()
    assert "RayTrainWorker" in log and "Started training worker group" in log  # Ray's output, on file
    assert "Failed to query Ray Train Controller actor state" not in log  # dropped at its logger (ray_output.py)
    # the workers' State API client asks their own Ray (ray_output.own_state_api): the run does not wait ~14 s at
    # its end for the placement-group cleaner, stuck on the host's last-started Ray
    assert "Failed to stop PlacementGroupCleaner" not in log and "Monitor thread did not exit" not in log


def test_train_is_tracked_in_mlflow(baseline_run) -> None:
    """`recsys train` logs the resolved config, one metric value per epoch, the test metrics and artifacts."""
    from recsys.tracking import TrackedRun

    run_dir, proc = baseline_run
    tracked = TrackedRun.load(run_dir)
    assert tracked is not None and tracked.run_id in proc.stdout
    run = tracked.client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "base"
    params = run.data.params
    assert params["model.name"] == "marn" and params["train.epochs"] == "2" and params["train.workers"] == "2"
    assert params["train.placement_strategy"] == "STRICT_SPREAD"
    epochs = history(run_dir)
    for key in ("val_auc", "train_loss", "samples_per_s"):
        logged = tracked.client.get_metric_history(tracked.run_id, key)
        assert [(m.step, m.value) for m in logged] == [(e["epoch"], pytest.approx(e[key])) for e in epochs], key
    test = json.loads((run_dir / "test_metrics.json").read_text())["segments"]
    assert run.data.metrics["test_auc"] == pytest.approx(test["all"]["auc"])
    assert run.data.metrics["test_cold_items_auc"] == pytest.approx(test["cold_items"]["auc"])
    files = {f.path for d in ("checkpoint", "report") for f in tracked.client.list_artifacts(tracked.run_id, d)}
    assert {"checkpoint/model.pt", "checkpoint/config.yaml", "report/test_metrics.json", "report/run.json"} <= files


def test_killed_worker_is_restarted_and_the_run_matches(
    baseline_run, cluster, small_data, default_dataset, tmp_path
) -> None:
    write_config(
        tmp_path / "exp.yaml",
        small_data,
        default_dataset.cache_dir,
        tmp_path / "runs",
        sections=ON_RAY_DATA,  # the baseline's features: the same rows in the same order
        placement_strategy="STRICT_SPREAD",
    )
    steps_per_epoch = history(baseline_run[0])[0]["step"]
    marker = tmp_path / "crashed"
    code = (
        "import sys, json; sys.path[:0] = [%r, %r]\n"
        "from pathlib import Path\nfrom support.faults import crash_once\n"
        "from recsys.config import load_config\nfrom training.launch import run_training\n"
        "r = run_training(load_config(%r), address=%r, run_name='fault', "
        "loop_options={'step_callback': crash_once(%d, rank=1, marker=Path(%r))})\nprint(json.dumps(r.history))\n"
    ) % (str(ROOT), str(ROOT / "tests"), str(tmp_path / "exp.yaml"), cluster, steps_per_epoch + 5, str(marker))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.is_file(), "the worker was never killed"
    faulty = json.loads(proc.stdout.strip().splitlines()[-1])
    base = history(baseline_run[0])
    assert faulty[-1]["epoch"] == base[-1]["epoch"] == 2
    # Killed mid-epoch 2: the restarted group resumes from the epoch-1 checkpoint and replays epoch 2.
    assert abs(faulty[-1]["val_auc"] - base[-1]["val_auc"]) <= 0.005, (faulty[-1]["val_auc"], base[-1]["val_auc"])


def test_driver_crash_then_resume_continues_from_the_checkpoint(cluster, small_data, default_dataset, tmp_path) -> None:
    config = write_config(tmp_path / "exp.yaml", small_data, default_dataset.cache_dir, tmp_path / "runs", epochs=2)
    cmd = [
        sys.executable,
        "-m",
        "recsys.cli",
        "train",
        "--config",
        str(config),
        "--address",
        cluster,
        "--run-name",
        "crash",
    ]
    driver = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    ray_dir = tmp_path / "runs" / "crash" / "ray" / "crash"
    deadline = time.time() + 600
    while time.time() < deadline and not list(ray_dir.glob("checkpoint_*")):
        assert driver.poll() is None, driver.stdout.read()[-3000:]
        time.sleep(1)
    assert list(ray_dir.glob("checkpoint_*")), "no checkpoint within 10 minutes"
    time.sleep(2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver dies without any cleanup
    driver.wait(timeout=60)
    again = run_cli(
        "train", "--config", str(config), "--address", cluster, "--run-name", "crash", check=False, timeout=900
    )
    assert again.returncode == 2 and "--resume" in again.stderr  # a run name is never silently reused
    resumed = run_cli(
        "train", "--config", str(config), "--address", cluster, "--run-name", "crash", "--resume", timeout=900
    )
    epochs = history(tmp_path / "runs" / "crash")
    assert [e["epoch"] for e in epochs][-1] == 2
    assert "resumed from" in resumed.stdout + resumed.stderr
    steps_per_epoch = epochs[0]["step"]
    assert epochs[-1]["step"] == 2 * steps_per_epoch  # the step counter continued, it did not restart


def test_same_seed_one_worker_gives_the_same_metrics(trained_run, cluster, default_dataset, tmp_path) -> None:
    """The session's 1-worker run (`recsys train` on the local Ray it started) trained again with the same config and
    seed on the cluster: the same metrics. The second run trains on the first run's prepared features where they are
    (``run_training(prepared=...)``, as the benchmarks share them): no copy of its own."""
    config = write_config(
        tmp_path / "exp.yaml", trained_run.data_dir, default_dataset.cache_dir, tmp_path / "runs", epochs=1, workers=1
    )
    code = (
        "import sys; sys.path[:0] = [%r]\n"
        "from recsys.config import load_config\nfrom recsys.features.prepared import PreparedDir\n"
        "from training.launch import run_training\n"
        "run_training(load_config(%r), address=%r, run_name='r2', prepared=PreparedDir.of_run(%r))\n"
    ) % (str(ROOT), str(config), cluster, str(trained_run.run_dir))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "runs" / "r2" / "prepared").exists()
    results = [history(trained_run.run_dir)[-1], history(tmp_path / "runs" / "r2")[-1]]
    for key in ("val_auc", "val_gauc", "val_logloss", "train_loss"):
        assert abs(results[0][key] - results[1][key]) <= 1e-6, (key, results)


def test_gpus_the_cluster_lacks_are_refused_before_any_worker_starts(
    cluster, small_data, default_dataset, tmp_path
) -> None:
    import ray

    from training.launch import run_training

    exp = write_config(
        tmp_path / "exp.yaml", small_data, default_dataset.cache_dir, tmp_path / "runs", gpus_per_worker=1
    )
    try:
        with pytest.raises(
            ConfigError, match=r"^train.gpus_per_worker: 2 worker\(s\) x 1 GPU need 2 GPU\(s\), .* has 0$"
        ):
            run_training(load_config(exp), address=cluster, run_name="gpu")
    finally:
        ray.shutdown()  # this process only: the cluster stays up
    assert not (tmp_path / "runs" / "gpu" / "ray").exists()


def test_bad_inputs_fail_before_ray_starts_workers(small_data, default_dataset, tmp_path) -> None:
    import ray

    from training.launch import run_training

    was_initialized = ray.is_initialized()
    config = load_config(write_config(tmp_path / "exp.yaml", small_data, default_dataset.cache_dir, tmp_path / "runs"))
    with pytest.raises(ConfigError, match=r"train.workers: must be >= 1, got 0"):
        run_training(config, workers=0, run_name="w0")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad_storage = config.model_copy(deep=True)
    bad_storage.train.storage_path = str(blocker / "runs")
    with pytest.raises(ConfigError, match=r"train.storage_path: cannot write to .*a-file/runs"):
        run_training(bad_storage, run_name="s")
    broken = tmp_path / "broken"
    shutil.copytree(small_data, broken, symlinks=True)
    pl.read_parquet(broken / "interactions.parquet").with_columns(
        pl.lit(3, dtype=pl.Int8).alias("label")
    ).write_parquet(broken / "interactions.parquet")
    with pytest.raises(DatasetError, match=r"label.*other than 0/1"):
        run_training(config, data_dir=broken, run_name="d")
    assert ray.is_initialized() == was_initialized  # nothing above started Ray
    proc = run_cli("train", "--config", str(tmp_path / "exp.yaml"), "--workers", "0", check=False)
    assert proc.returncode == 2 and "train.workers" in proc.stderr and "Traceback" not in proc.stderr
