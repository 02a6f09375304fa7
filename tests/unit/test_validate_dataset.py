"""Dataset validation reports every problem at once, naming file, column and offending ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile
from PIL import Image

from recsys.cli import main
from recsys.config import ExperimentConfig
from recsys.data.validate import validate_dataset
from recsys.errors import DatasetError


def write_valid(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(root / "images" / "1.png")
    (root / "item_features").mkdir()
    pl.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["a", "b", None],
            "image_path": ["images/1.png", None, None],
            "department": ["x", "y", "x"],
        }
    ).write_parquet(root / "items.parquet")
    pl.DataFrame({"user_id": [10, 11], "gender": ["F", "M"]}).write_parquet(root / "users.parquet")
    pl.DataFrame(
        {
            "user_id": [10, 10, 11, 11],
            "item_id": [1, 2, 3, 1],
            "timestamp": [1, 2, 3, 4],
            "label": pl.Series([1, 0, 1, 0], dtype=pl.Int8),
            "split": ["train", "train", "valid", "test"],
            "hour": [1, 2, 3, 4],
        }
    ).write_parquet(root / "interactions.parquet")
    pl.DataFrame(
        {"item_id": [1, 2, 3], "vector": pl.Series([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=pl.List(pl.Float32))}
    ).write_parquet(root / "item_features" / "audio_x.parquet")


CONFIG = ExperimentConfig.model_validate(
    {"features": {"user_categorical": ["gender"], "item_categorical": ["department"], "context_categorical": ["hour"]}}
)


def test_valid_dataset_is_ok(tmp_path: Path) -> None:
    write_valid(tmp_path)
    report = validate_dataset(tmp_path, CONFIG)
    assert report.ok and not report.problems, report.format()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write_valid(tmp_path)
    pl.DataFrame(
        {
            "item_id": [1, 2, 2, 4],
            "title": ["a", "b", "c", "d"],
            "image_path": ["images/1.png", "images/missing.png", None, None],
        }
    ).write_parquet(tmp_path / "items.parquet")  # duplicate 2, missing media, no `department`
    pl.DataFrame({"user_id": [10, 11], "gender": ["F", "M"]}).write_parquet(tmp_path / "users.parquet")
    pl.DataFrame(
        {
            "user_id": [10, 10, 99, 11, 11],
            "item_id": [1, 77, 2, 4, 1],
            "timestamp": ["1", "2", "3", "4", "5"],  # wrong dtype
            "label": pl.Series([1, 0, 2, 1, -1], dtype=pl.Int8),
            "split": ["train", "train", "valid", "tset", "test"],
            "hour": [1, 2, 3, 4, 5],
        }
    ).write_parquet(tmp_path / "interactions.parquet")
    pl.DataFrame(
        {
            "item_id": [1, 2, 4],
            "vector": pl.Series([[0.1, 0.2], [0.3, float("nan")], [0.5, 0.6, 0.7]], dtype=pl.List(pl.Float32)),
        }
    ).write_parquet(tmp_path / "item_features" / "audio_x.parquet")

    report = validate_dataset(tmp_path, CONFIG)
    messages = [str(p) for p in report.problems]
    text = "\n".join(messages)

    def has(*parts: str) -> bool:
        return any(all(part in m for part in parts) for m in messages)

    assert has("error", "items.parquet[department]", "missing column", "features.item_categorical"), text
    assert has("error", "items.parquet[item_id]", "duplicate", ": 2"), text
    assert has("warning", "items.parquet[image_path]", "not found", ": 2"), text
    assert has("error", "interactions.parquet[timestamp]", "wrong dtype"), text
    assert has("error", "interactions.parquet[item_id]", "not in items.parquet", ": 77"), text
    assert has("error", "interactions.parquet[user_id]", "not in users.parquet", ": 99"), text
    assert has("error", "interactions.parquet[label]", "other than 0/1", "[-1, 2]"), text
    assert has("error", "interactions.parquet[split]", "tset"), text
    assert has("error", "item_features/audio_x.parquet[vector]", "wrong length", "expected 2", ": 4"), text
    assert has("error", "item_features/audio_x.parquet[vector]", "NaN/inf", ": 2"), text
    assert not report.ok
    with pytest.raises(DatasetError, match="duplicate"):
        report.raise_for_errors()


def test_missing_files_and_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "items.parquet").write_bytes(b"not parquet at all")
    report = validate_dataset(tmp_path, CONFIG)
    text = report.format()
    assert "items.parquet: cannot read as Parquet" in text
    assert "interactions.parquet: missing file" in text
    assert "users.parquet: missing file, needed by features.user_categorical (gender)" in text


def test_missing_directory(tmp_path: Path) -> None:
    assert "dataset directory not found" in validate_dataset(tmp_path / "nope").format()


def test_offending_ids_are_capped_with_count(tmp_path: Path) -> None:
    write_valid(tmp_path)
    n = 40
    pl.DataFrame(
        {
            "user_id": [10] * n,
            "item_id": list(range(100, 100 + n)),
            "timestamp": list(range(n)),
            "label": [0, 1] * (n // 2),
        }
    ).write_parquet(tmp_path / "interactions.parquet")
    problem = next(p for p in validate_dataset(tmp_path, CONFIG).problems if p.column == "item_id")
    assert problem.ids == (100, 101, 102, 103, 104) and problem.n_ids == n
    assert "(showing 5 of 40)" in str(problem)


def test_cli_data_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_valid(tmp_path)
    assert main(["data", "check", str(tmp_path)]) == 0
    assert "OK" in capsys.readouterr().out
    (tmp_path / "images" / "1.png").unlink()  # a warning only
    assert main(["data", "check", str(tmp_path)]) == 0
    assert main(["data", "check", str(tmp_path), "--strict"]) == 1
    pl.DataFrame({"item_id": [1, 1]}).write_parquet(tmp_path / "items.parquet")
    assert main(["data", "check", str(tmp_path)]) == 1
    assert "duplicate id(s): 1" in capsys.readouterr().out


def test_undecodable_media_are_warnings_naming_file_column_and_item(tmp_path: Path) -> None:
    """A corrupt or truncated image or audio file is reported like a missing one: a warning (the encoder masks
    that modality), naming items.parquet's column, the media file and the item ids."""
    write_valid(tmp_path)
    images, audio = tmp_path / "images", tmp_path / "audio"
    audio.mkdir()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(images / "ok.jpg", quality=90)
    jpeg = (images / "ok.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated JPEG: the header alone still parses
    png = (images / "1.png").read_bytes()
    (images / "bad.png").write_bytes(png[:-20] + b"x" * 20)  # corrupt tail of a PNG
    soundfile.write(audio / "ok.wav", np.zeros(800, dtype=np.float32), 8000)
    (audio / "bad.wav").write_bytes(b"RIFF" + b"\x00" * 60)
    pl.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5],
            "title": ["a", "b", "c", "d", "e"],
            "image_path": ["images/1.png", "images/ok.jpg", "images/cut.jpg", "images/bad.png", None],
            "audio_path": ["audio/ok.wav", "audio/bad.wav", None, None, "audio/bad.wav"],
            "department": ["x", "y", "x", "y", "x"],
        }
    ).write_parquet(tmp_path / "items.parquet")
    report = validate_dataset(tmp_path, CONFIG)
    assert report.ok and not report.errors, report.format()
    by_column = {p.column: p for p in report.warnings}
    assert set(by_column) == {"image_path", "audio_path"}, report.format()
    image, sound = by_column["image_path"], by_column["audio_path"]
    assert image.ids == (3, 4) and "2 image file(s) cannot be decoded" in image.message
    assert "images/cut.jpg" in image.message and "truncated" in image.message.lower()
    assert sound.ids == (2, 5) and "audio/bad.wav" in sound.message
    assert "items.parquet[audio_path]" in str(sound) and "BytesIO" not in report.format()
    assert main(["data", "check", str(tmp_path)]) == 0  # warnings only, as for a missing file
    assert main(["data", "check", str(tmp_path), "--strict"]) == 1
