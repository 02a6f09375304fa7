"""encode_items end to end on a tiny generated dataset: real encoders on a real local Ray, real cache files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from unittest.mock import patch

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import soundfile
from PIL import Image, ImageDraw

from recsys.config import AudioEncoderConfig, EncodersConfig, ImageEncoderConfig
from recsys.data.dataset import MEDIA_COLUMNS
from recsys.encoders import MediaWarning, build_encoder, encode_items, load_item_vectors
from recsys.encoders.stage import decode_content, vectors_from_arrow
from recsys.errors import ConfigError, DatasetError, EncoderError

CONFIG = EncodersConfig(
    image=ImageEncoderConfig(image_size=64), audio=AudioEncoderConfig(kind="aisfx", max_seconds=2.0), batch_size=2
)
PRECOMPUTED = np.arange(4 * 8, dtype=np.float32).reshape(4, 8) / 7.0


def _make_dataset(root: Path) -> Path:
    """5 items. Titles: 1-3 ok, 4 null, 5 blank. Images: 1, 2, 5 ok, 3 missing file, 4 garbage bytes.
    Audio: 1, 2, 4 ok, 3 null, 5 missing file. Plus item_features/audio_vggish.parquet (items 1-4)."""
    (root / "img").mkdir(parents=True)
    (root / "audio").mkdir()
    for item_id, colour in [(1, (220, 30, 30)), (2, (30, 200, 60)), (5, (20, 40, 230))]:
        image = Image.new("RGB", (40, 32), colour)
        ImageDraw.Draw(image).rectangle((5, 5, 20 + item_id, 25), fill=(250, 250, 0))
        image.save(root / "img" / f"{item_id}.png")
    (root / "img" / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    rng = np.random.default_rng(0)
    for item_id, seconds in [(1, 1.0), (2, 0.4), (4, 2.5)]:
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * 300 * item_id * t) + 0.02 * rng.standard_normal(t.size)
        soundfile.write(root / "audio" / f"{item_id}.wav", wave.astype(np.float32), 16000)
    pl.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5],
            "title": ["Toy Story", "GoldenEye", "Four Rooms", None, "  "],
            "image_path": ["img/1.png", "img/2.png", "img/3.png", "img/4.png", "img/5.png"],
            "audio_path": ["audio/1.wav", "audio/2.wav", None, "audio/4.wav", "audio/5.wav"],
            "genre": ["a", "b", "a", "c", "b"],
        },
        schema_overrides={"item_id": pl.Int64},
    ).write_parquet(root / "items.parquet")
    (root / "item_features").mkdir()
    pl.DataFrame(
        {"item_id": [1, 2, 3, 4], "vector": PRECOMPUTED.tolist()},
        schema={"item_id": pl.Int64, "vector": pl.List(pl.Float32)},
    ).write_parquet(root / "item_features" / "audio_vggish.parquet")
    return root


def _encode(data_dir: Path, config: EncodersConfig = CONFIG, **kwargs):
    """encode_items, returning (report, {modality: [its MediaWarning messages]}, all MediaWarning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = encode_items(data_dir, config, progress=False, **kwargs)
    media = [str(w.message) for w in caught if issubclass(w.category, MediaWarning)]
    return report, {m: [w for w in media if w.startswith(f"{m}:")] for m in ("title", "image", "audio")}, media


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (encode_items runs on the Ray it finds; alone it starts and stops its own)."""
    import ray

    ray.init(address="local", num_cpus=3, include_dashboard=False, object_store_memory=300 * 1024**2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def encoded(local_ray, tmp_path_factory: pytest.TempPathFactory):
    data_dir = _make_dataset(tmp_path_factory.mktemp("tiny") / "data")
    report, by_modality, all_media = _encode(data_dir)
    return data_dir, report, by_modality, all_media


def test_first_run_encodes_every_item_with_content(encoded) -> None:
    data_dir, report, _, _ = encoded
    assert report.models_loaded == ["title", "image", "audio"]
    title, image, audio = (report.modalities[m] for m in ("title", "image", "audio"))
    assert (title.dim, image.dim, audio.dim) == (384, 1280, 512)
    assert (title.n_encoded, title.n_items_with_vector, title.n_cached) == (3, 3, 0)
    assert (image.n_encoded, image.n_items_with_vector) == (3, 3)
    assert (audio.n_encoded, audio.n_items_with_vector) == (3, 3)
    assert report.cache_dir == data_dir / ".recsys_cache"
    assert image.path == data_dir / ".recsys_cache" / "image" / f"{image.fingerprint}.parquet"
    cache = pl.read_parquet(image.path)
    assert cache.schema == {"item_id": pl.Int64, "content_hash": pl.String, "vector": pl.List(pl.Float32)}
    assert not list(image.path.parent.glob("*.tmp"))  # atomic write left no temp file


def test_missing_and_unreadable_media_give_one_warning_per_modality(encoded) -> None:
    _, report, by_modality, all_media = encoded
    assert len(all_media) == 2 and by_modality["title"] == []  # null/blank titles are silent
    (image_warning,) = by_modality["image"]
    assert "2 of 5" in image_warning and "[3]" in image_warning and "[4]" in image_warning
    (audio_warning,) = by_modality["audio"]
    assert "1 of 4" in audio_warning and "[5]" in audio_warning
    assert report.modalities["image"].missing_ids == [3] and report.modalities["image"].unreadable_ids == [4]
    assert report.modalities["audio"].missing_ids == [5] and report.modalities["audio"].unreadable_ids == []


def test_vectors_are_what_the_encoder_gives_and_precomputed_are_as_is(encoded) -> None:
    data_dir, report, _, _ = encoded
    vectors = load_item_vectors(data_dir, CONFIG)
    assert set(vectors) == {"title", "image", "audio", "audio_vggish"}
    assert vectors["title"].item_ids.tolist() == [1, 2, 3]
    assert vectors["image"].item_ids.tolist() == [1, 2, 5]
    assert vectors["audio"].item_ids.tolist() == [1, 2, 4]
    assert vectors["image"].vectors.shape == (3, 1280) and vectors["image"].vectors.dtype == np.float32
    assert vectors["image"].item_ids.dtype == np.int64
    assert vectors["audio_vggish"].item_ids.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(vectors["audio_vggish"].vectors, PRECOMPUTED)
    assert report.modalities["audio_vggish"].source == "precomputed" and report.modalities["audio_vggish"].dim == 8
    only_none = load_item_vectors(data_dir, CONFIG.model_copy(update={"precomputed": []}))
    assert "audio_vggish" not in only_none


def test_ray_actors_give_the_vectors_of_the_in_process_encoders(encoded) -> None:
    """The actors' batches are the in-process loop's (titles by length, batch_size items): equal within 1e-6
    at the actors' torch threads (oneDNN's convolutions differ by ~7e-6 between 1 and 2 threads)."""
    import torch

    data_dir, _, _, _ = encoded
    threads = torch.get_num_threads()
    torch.set_num_threads(int(CONFIG.cpus_per_actor))
    try:
        _compare_with_in_process_encoders(data_dir)
    finally:
        torch.set_num_threads(threads)


def _compare_with_in_process_encoders(data_dir: Path) -> None:
    vectors = load_item_vectors(data_dir, CONFIG)
    items = {row["item_id"]: row for row in pl.read_parquet(data_dir / "items.parquet").iter_rows(named=True)}
    for modality in ("title", "image", "audio"):
        got = vectors[modality]
        values = [items[i][MEDIA_COLUMNS[modality]] for i in got.item_ids.tolist()]
        inputs = [decode_content(modality, v if modality == "title" else str(data_dir / v)) for v in values]
        order = sorted(range(len(values)), key=lambda k: len(values[k])) if modality == "title" else range(len(values))
        encoder, expected = build_encoder(modality, getattr(CONFIG, modality)), np.zeros_like(got.vectors)
        rows = list(order)
        for first in range(0, len(rows), CONFIG.batch_size):
            batch = rows[first : first + CONFIG.batch_size]
            expected[batch] = encoder.encode([inputs[k] for k in batch])
        np.testing.assert_allclose(got.vectors, expected, rtol=0, atol=1e-6, err_msg=modality)  # no train/serve skew


def test_second_run_loads_no_model_and_encodes_nothing(encoded) -> None:
    data_dir, first, _, _ = encoded
    before = {m: r.path.stat().st_mtime_ns for m, r in first.modalities.items() if r.source == "encoder"}
    report, by_modality, _ = _encode(data_dir)
    assert report.models_loaded == []
    for modality in ("title", "image", "audio"):
        r = report.modalities[modality]
        assert r.n_encoded == 0
        assert r.n_cached == first.modalities[modality].n_cached + first.modalities[modality].n_encoded + len(
            first.modalities[modality].unreadable_ids
        )
        assert r.path.stat().st_mtime_ns == before[modality]  # nothing rewritten
    assert len(by_modality["image"]) == 1 and len(by_modality["audio"]) == 1  # still reported, once


def test_changing_one_title_reencodes_exactly_that_item(encoded, tmp_path: Path) -> None:
    source_dir, _, _, _ = encoded
    data_dir = tmp_path / "data"
    shutil.copytree(source_dir, data_dir)  # with its .recsys_cache
    old = load_item_vectors(data_dir, CONFIG)
    items = pl.read_parquet(data_dir / "items.parquet")
    items.with_columns(
        pl.when(pl.col("item_id") == 2).then(pl.lit("Casino Royale")).otherwise(pl.col("title")).alias("title")
    ).write_parquet(data_dir / "items.parquet")
    with pytest.raises(EncoderError, match="stale.*ids \\[2\\].*recsys encode"):
        load_item_vectors(data_dir, CONFIG)

    report, _, _ = _encode(data_dir)
    assert report.models_loaded == ["title"]
    assert (report.modalities["title"].n_encoded, report.modalities["title"].n_cached) == (1, 2)
    assert report.modalities["image"].n_encoded == 0 and report.modalities["audio"].n_encoded == 0
    new = load_item_vectors(data_dir, CONFIG)
    np.testing.assert_array_equal(new["title"].vectors[[0, 2]], old["title"].vectors[[0, 2]])
    assert not np.allclose(new["title"].vectors[1], old["title"].vectors[1])


def test_load_without_a_cache_tells_to_run_encode(encoded, tmp_path: Path) -> None:
    data_dir, _, _, _ = encoded
    with pytest.raises(EncoderError, match="recsys encode"):
        load_item_vectors(data_dir, CONFIG, cache_dir=tmp_path / "empty-cache")
    other_params = CONFIG.model_copy(update={"image": ImageEncoderConfig(image_size=96)})
    with pytest.raises(EncoderError, match="no cached image vectors.*recsys encode"):
        load_item_vectors(data_dir, other_params)  # another fingerprint: its cache does not exist


def test_unwritable_cache_dir_names_the_config_field(encoded, tmp_path: Path) -> None:
    data_dir, _, _, _ = encoded
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(EncoderError, match="encoders.cache_dir") as info:
        encode_items(data_dir, CONFIG.model_copy(update={"cache_dir": str(blocker / "cache")}), progress=False)
    assert str(blocker) in str(info.value)


def test_precomputed_selection_and_errors(encoded, tmp_path: Path) -> None:
    source_dir, _, _, _ = encoded
    data_dir = tmp_path / "data"
    shutil.copytree(source_dir, data_dir)
    only_features = EncodersConfig(title=None, image=None, audio=None, precomputed=["audio_vggish"])
    report, _, _ = _encode(data_dir, only_features)
    assert report.models_loaded == [] and list(report.modalities) == ["audio_vggish"]
    with pytest.raises(DatasetError, match="encoders.precomputed lists 'nope'"):
        load_item_vectors(data_dir, only_features.model_copy(update={"precomputed": ["nope"]}))
    pl.DataFrame(
        {"item_id": [1, 2, 3], "vector": [[1.0, 2.0], [3.0, 4.0], [5.0]]},
        schema={"item_id": pl.Int64, "vector": pl.List(pl.Float32)},
    ).write_parquet(data_dir / "item_features" / "ragged.parquet")
    with pytest.raises(DatasetError, match="ragged.parquet.*same length.*\\[3\\]"):
        load_item_vectors(data_dir, only_features.model_copy(update={"precomputed": ["ragged"]}))


def test_zero_actors_encode_in_this_process_the_pools_vectors(encoded, tmp_path: Path) -> None:
    """encoders.actors 0: the same cache rows as the actor pool (1 CPU per actor: the same torch threads), no Ray."""
    import torch

    data_dir, first, first_warnings, _ = encoded
    threads = torch.get_num_threads()
    torch.set_num_threads(int(CONFIG.cpus_per_actor))
    try:
        with patch("recsys.cluster.ray_session", side_effect=AssertionError("Ray was used")):
            report, by_modality, _ = _encode(data_dir, CONFIG.model_copy(update={"actors": 0}), cache_dir=tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert sorted(report.models_loaded) == ["audio", "image", "title"] and by_modality == first_warnings
    for modality in ("title", "image", "audio"):
        ours, pool = pq.read_table(report.modalities[modality].path), pq.read_table(first.modalities[modality].path)
        assert ours.column("item_id").equals(pool.column("item_id")), modality
        assert ours.column("content_hash").equals(pool.column("content_hash")), modality
        a, _, _ = vectors_from_arrow(ours.column("vector"), modality)
        b, _, _ = vectors_from_arrow(pool.column("vector"), modality)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=modality)
    with pytest.raises(ConfigError, match=r"^encoders.actors: 0 encodes in this process; .* 10\.0\.0\.1:6379$"):
        encode_items(data_dir, CONFIG.model_copy(update={"actors": 0}), progress=False, address="10.0.0.1:6379")


def test_bad_encoder_pool_or_weights_fail_in_one_line_naming_the_field(encoded, tmp_path: Path) -> None:
    data_dir, _, _, _ = encoded
    for update, field in (
        ({"actors": 64}, "encoders.actors"),
        ({"cpus_per_actor": 64.0}, "encoders.cpus_per_actor"),
        ({"gpus_per_actor": 1.0}, "encoders.gpus_per_actor"),  # this machine has no GPU
    ):
        with pytest.raises(ConfigError, match=f"^{field}: .*Ray cluster"):
            encode_items(data_dir, CONFIG.model_copy(update=update), cache_dir=tmp_path / "cache", progress=False)
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(b"not a state dict")
    config = CONFIG.model_copy(update={"title": None, "audio": None, "image": ImageEncoderConfig(weights=str(garbage))})
    with pytest.raises(EncoderError, match=f"^encoders.image.weights: cannot load weights file {garbage}") as info:
        encode_items(data_dir, config, cache_dir=tmp_path / "cache", progress=False)  # raised inside an actor
    assert "\n" not in str(info.value)
