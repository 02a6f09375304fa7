"""The real datasets in ../shared/data (skipped when absent): they validate and encode."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import ROOT

from recsys.config import load_config
from recsys.data.validate import validate_dataset
from recsys.encoders.pipeline import encode_items, load_item_vectors

pytestmark = pytest.mark.shared_data


def test_ml_100k_mm_validates_and_encodes(shared_data, tmp_path) -> None:
    config = load_config(ROOT / "configs" / "ml-100k-mm.yaml")
    data_dir = shared_data / "ml-100k-mm"
    report = validate_dataset(data_dir, config)
    assert report.ok, report.format()
    result = encode_items(data_dir, config.encoders, cache_dir=tmp_path / "cache", progress=False)
    items = pl.read_parquet(data_dir / "items.parquet")
    titled = items.filter(pl.col("title").str.strip_chars().str.len_chars() > 0).height
    assert result.modalities["title"].n_items_with_vector == titled >= 1680  # a blank title counts as none
    assert result.modalities["image"].n_items_with_vector == 1667  # 15 items have no poster
    vectors = load_item_vectors(data_dir, config.encoders, cache_dir=tmp_path / "cache")
    assert vectors["image"].vectors.shape == (1667, 1280)


def test_lastfm_2k_mm_validates_and_uses_precomputed_audio(shared_data, tmp_path) -> None:
    config = load_config(ROOT / "configs" / "lastfm-2k-mm.yaml")
    data_dir = shared_data / "lastfm-2k-mm"
    assert validate_dataset(data_dir, config).ok
    encode_items(data_dir, config.encoders, cache_dir=tmp_path / "cache", progress=False)
    vectors = load_item_vectors(data_dir, config.encoders, cache_dir=tmp_path / "cache")
    assert vectors["audio_vggish"].vectors.shape == (1425, 128)
    assert vectors["audio_whisper"].vectors.shape == (1425, 512)
    assert vectors["title"].vectors.shape == (1425, 384)
