"""Item media as the service serves them: only files inside the dataset directory, typed by their bytes."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from serving.media import OCTET_STREAM, CatalogueMedia, media_type

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "


def test_a_media_path_is_used_only_when_it_stays_inside_the_dataset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "1.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    paths = ["images/1.png", "../secret.png", "images/../../secret.png", str(tmp_path / "secret.png"), "~/x.png", ""]
    pl.DataFrame(
        {"item_id": list(range(1, 7)), "title": ["one", *["other"] * 5], "image_path": paths},
        schema={"item_id": pl.Int64, "title": pl.String, "image_path": pl.String},
    ).write_parquet(data / "items.parquet")
    media = CatalogueMedia(data)
    assert media.file(1, "image") == data / "images" / "1.png" and media.entry(1).title == "one"
    assert [media.file(i, "image") for i in range(2, 7)] == [None] * 5  # outside, absolute, home, empty
    assert media.file(1, "audio") is None  # no audio_path column: no item has audio
    assert media.file(99, "image") is None and media.entry(99) is None
    assert CatalogueMedia(None).file(1, "image") is None  # served without a dataset


def test_the_media_type_comes_from_the_bytes_and_anything_else_is_a_download() -> None:
    assert media_type(PNG) == "image/png" and media_type(WAV) == "audio/wav"
    assert media_type(b"\xff\xd8\xff\xe0") == "image/jpeg" and media_type(b"fLaC\x00") == "audio/flac"
    for other in (b"<html><script>alert(1)</script>", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b""):
        assert media_type(other) == OCTET_STREAM
