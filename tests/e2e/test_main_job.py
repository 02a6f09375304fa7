"""The main job's first steps through the real CLI: make the built-in dataset, check it, encode it."""

from __future__ import annotations

import re

import polars as pl
from conftest import run_cli


def row(table: str, modality: str) -> list[str]:
    line = next(l for l in table.splitlines() if l.startswith(f"| {modality} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_default_dataset_validates_and_every_item_is_encoded(default_dataset) -> None:
    check = run_cli("data", "check", str(default_dataset.data_dir), "--config", str(default_dataset.config))
    assert "OK" in check.stdout
    items = pl.read_parquet(default_dataset.data_dir / "items.parquet")
    out = default_dataset.encode_output
    for modality, column, dim in (
        ("title", "title", "384"),
        ("image", "image_path", "1280"),
        ("audio", "audio_path", "512"),
    ):
        cells = row(out, modality)
        with_content = items.filter(pl.col(column).is_not_null()).height
        assert cells[2] == dim
        assert int(cells[3]) == with_content == int(cells[4]), cells  # every item with content encoded once
    assert re.search(r"models loaded: .*title.*image.*audio", out)


def test_second_encode_loads_no_model_and_encodes_nothing(default_dataset) -> None:
    again = run_cli(
        "encode",
        str(default_dataset.data_dir),
        "--config",
        str(default_dataset.config),
        "--cache-dir",
        str(default_dataset.cache_dir),
        "--no-progress",
    ).stdout
    for modality in ("title", "image", "audio"):
        cells = row(again, modality)
        assert cells[4] == "0" and int(cells[5]) == int(cells[3]), cells
    assert "models loaded: none" in again


def test_missing_media_file_is_masked_with_one_warning(default_dataset, tmp_path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(default_dataset.data_dir, data)
    items = pl.read_parquet(data / "items.parquet")
    victim = items.filter(pl.col("image_path").is_not_null()).row(0, named=True)
    (data / victim["image_path"]).unlink()
    check = run_cli("data", "check", str(data), "--config", str(default_dataset.config))
    assert "image file(s) not found" in check.stdout and str(victim["item_id"]) in check.stdout
    cache = tmp_path / "cache"  # a copy: this dataset differs, the session's cache must stay valid for others
    shutil.copytree(default_dataset.cache_dir, cache)
    enc = run_cli(
        "encode", str(data), "--config", str(default_dataset.config), "--cache-dir", str(cache), "--no-progress"
    )
    assert row(enc.stdout, "image")[6] == "1"  # one missing
    warnings = [l for l in enc.stderr.splitlines() if "warning" in l.lower() and "image" in l]
    assert len(warnings) == 1 and str(victim["item_id"]) in warnings[0], enc.stderr
    assert "Traceback" not in enc.stderr


def test_cli_rejects_bad_config_and_bad_dataset_cleanly(default_dataset, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("encoders:\n  imgae: null\n")
    proc = run_cli("encode", str(default_dataset.data_dir), "--config", str(bad), check=False)
    assert proc.returncode == 2 and "did you mean 'image'" in proc.stderr and "Traceback" not in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("encode", str(empty), "--config", str(default_dataset.config), check=False)
    assert proc.returncode == 2 and "items.parquet: missing file" in proc.stderr
