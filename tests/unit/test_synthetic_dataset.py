"""The built-in default dataset generator: determinism, the dataset contract, the planted signal.

One small dataset (seed 0) is generated per module and shared by the tests; the determinism
test generates two more (seed 1, then seed 0 again over it).
"""

from __future__ import annotations

import colorsys
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import soundfile as sf
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from recsys.data.synthetic import SIZES, DatasetSummary, make_default_dataset
from recsys.data.synthetic.attributes import CATEGORIES, COLOURS, PITCHES, PRICE_TIERS, TEMPOS
from recsys.errors import DatasetError

HIDDEN = ("category", "colour", "texture", "brand", "price_tier", "tempo", "pitch")
PRIVATE = {"image": ("colour", "texture"), "title": ("brand", "price_tier"), "audio": ("tempo", "pitch")}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSummary]:
    out = tmp_path_factory.mktemp("synthetic") / "default"
    return out, make_default_dataset(out, seed=0, size="small", progress=False)


@pytest.fixture(scope="module")
def root(generated: tuple[Path, DatasetSummary]) -> Path:
    return generated[0]


@pytest.fixture(scope="module")
def frames(root: Path) -> dict[str, pl.DataFrame]:
    return {
        "items": pl.read_parquet(root / "items.parquet"),
        "users": pl.read_parquet(root / "users.parquet"),
        "interactions": pl.read_parquet(root / "interactions.parquet"),
        "truth_items": pl.read_parquet(root / "truth" / "items.parquet"),
        "truth_users": pl.read_parquet(root / "truth" / "users.parquet"),
    }


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_other_seed_differs(root: Path, tmp_path: Path) -> None:
    reference = _hashes(root)
    other = tmp_path / "again"
    make_default_dataset(other, seed=1, size="small", progress=False)
    seed1 = _hashes(other)
    changed = [name for name in reference if seed1.get(name) != reference[name]]
    assert {"items.parquet", "interactions.parquet", "users.parquet"} <= set(changed)
    assert any(n.startswith("images/") for n in changed) and any(n.startswith("audio/") for n in changed)
    assert len(changed) > 0.9 * len(reference), "most files should change with the seed"

    # Overwriting a previous generator output with seed 0 reproduces the reference exactly
    # (also proves no stale files of the seed-1 run survive).
    make_default_dataset(other, seed=0, size="small", progress=False)
    assert _hashes(other) == reference


# --------------------------------------------------------------------------- output directory rules


def test_refuses_non_empty_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        make_default_dataset(tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_refuses_directory_with_someone_elses_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"generator": "other-tool"}))
    (tmp_path / "items.parquet").write_bytes(b"x")
    with pytest.raises(DatasetError, match=str(tmp_path)):
        make_default_dataset(tmp_path, progress=False)
    assert (tmp_path / "items.parquet").read_bytes() == b"x"


def test_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        make_default_dataset(target, progress=False)


def test_rejects_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        make_default_dataset(tmp_path / "x", size="huge", progress=False)  # type: ignore[arg-type]


def test_large_size_is_ten_times_medium_over_the_same_catalogue() -> None:
    """Not generated here (12M impressions): its parameters, and that the command offers it."""
    from recsys.cli import build_parser

    medium, large = SIZES["medium"], SIZES["large"]
    assert large.n_impressions >= 10_000_000 and large.n_impressions == 10 * medium.n_impressions
    assert large.n_items == medium.n_items  # same seed -> medium's items, titles and media files
    assert large.n_impressions >= large.min_per_user * large.n_users
    assert build_parser().parse_args(["data", "make-default", "--out", "x", "--size", "large"]).size == "large"


# --------------------------------------------------------------------------- contract


def test_table_schemas(frames: dict[str, pl.DataFrame]) -> None:
    assert dict(frames["items"].schema) == {
        "item_id": pl.Int64,
        "title": pl.String,
        "image_path": pl.String,
        "audio_path": pl.String,
        "department": pl.String,
    }
    assert dict(frames["users"].schema) == {"user_id": pl.Int64, "age_group": pl.String, "country": pl.String}
    assert dict(frames["interactions"].schema) == {
        "user_id": pl.Int64,
        "item_id": pl.Int64,
        "timestamp": pl.Int64,
        "label": pl.Int8,
        "split": pl.String,
        "hour": pl.Int8,
        "device": pl.String,
        "true_prob": pl.Float64,
    }


def test_table_contents(frames: dict[str, pl.DataFrame]) -> None:
    items, users, inter = frames["items"], frames["users"], frames["interactions"]
    assert items["item_id"].is_unique().all() and users["user_id"].is_unique().all()
    assert items["title"].null_count() == 0
    assert items["department"].n_unique() == 4
    assert set(inter["item_id"].unique()) <= set(items["item_id"])
    assert set(inter["user_id"].unique()) <= set(users["user_id"])
    assert set(inter["label"].unique()) == {0, 1}
    assert set(inter["split"].unique()) == {"train", "valid", "test"}
    assert set(inter["device"].unique()) == {"mobile", "desktop", "tablet"}
    ts = inter["timestamp"].to_numpy()
    assert ((ts // 3600) % 24 == inter["hour"].to_numpy()).all()
    assert ts.max() - ts.min() <= 60 * 86400
    prob = inter["true_prob"].to_numpy()
    assert ((prob > 0) & (prob < 1)).all()
    assert 0.2 <= inter["label"].mean() <= 0.35
    # Global time split: train < valid < test, about 80/10/10 of the time range.
    bounds = inter.group_by("split").agg(lo=pl.col("timestamp").min(), hi=pl.col("timestamp").max())
    b = {row["split"]: (row["lo"], row["hi"]) for row in bounds.iter_rows(named=True)}
    assert b["train"][1] < b["valid"][0] and b["valid"][1] < b["test"][0]
    assert 0.75 <= (b["valid"][0] - ts.min()) / (ts.max() - ts.min()) <= 0.85
    assert 0.85 <= (b["test"][0] - ts.min()) / (ts.max() - ts.min()) <= 0.95


def test_summary_and_metadata_match_files(
    root: Path, generated: tuple[Path, DatasetSummary], frames: dict[str, pl.DataFrame]
) -> None:
    summary = generated[1]
    items, inter, truth = frames["items"], frames["interactions"], frames["truth_items"]
    assert summary.path == root
    assert summary.n_items == items.height and summary.n_users == frames["users"].height
    assert summary.n_interactions == inter.height
    assert summary.n_cold_items == truth["is_cold"].sum()
    assert summary.n_missing_image == items["image_path"].null_count()
    assert summary.n_missing_audio == items["audio_path"].null_count()
    test = inter.filter(pl.col("split") == "test")
    assert summary.oracle_auc_test == pytest.approx(roc_auc_score(test["label"], test["true_prob"]), abs=1e-6)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["generator"] == "recsys.data.synthetic" and meta["complete"] is True
    assert (meta["seed"], meta["size"]) == (0, "small")
    assert meta["counts"]["interactions"] == inter.height
    assert (root / "README.md").read_text().startswith("# ")
    # sizes promised for "small"
    assert 1000 <= items.height <= 3000 and 400 <= summary.n_users <= 1000 and 40_000 <= inter.height <= 100_000


def test_media_files_are_real(root: Path, frames: dict[str, pl.DataFrame]) -> None:
    items, truth = frames["items"], frames["truth_items"]
    images = items["image_path"].drop_nulls().to_list()
    audios = items["audio_path"].drop_nulls().to_list()
    for rel in images:
        with Image.open(root / rel) as im:
            assert im.format == "PNG" and im.size == (96, 96) and im.mode == "RGB", rel
    for rel in audios:
        info = sf.info(root / rel)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 40000), rel
    # No orphan files; null paths exactly where the truth says the modality is missing.
    assert sorted(str(p.relative_to(root)) for p in (root / "images").iterdir()) == sorted(images)
    assert sorted(str(p.relative_to(root)) for p in (root / "audio").iterdir()) == sorted(audios)
    joined = items.join(truth, on="item_id")
    assert (joined["image_path"].is_null() == ~joined["has_image"]).all()
    assert (joined["audio_path"].is_null() == ~joined["has_audio"]).all()


def test_some_items_lack_audio_or_image(frames: dict[str, pl.DataFrame]) -> None:
    items = frames["items"]
    assert 0.05 <= items["audio_path"].null_count() / items.height <= 0.15
    assert 0.02 <= items["image_path"].null_count() / items.height <= 0.10


def test_cold_items_appear_only_in_test(frames: dict[str, pl.DataFrame]) -> None:
    inter, truth = frames["interactions"], frames["truth_items"]
    per_item = inter.group_by("item_id").agg(
        first=pl.col("timestamp").min(),
        train=(pl.col("split") == "train").sum(),
        non_test=(pl.col("split") != "test").sum(),
    )
    only_test = per_item.filter(pl.col("non_test") == 0)
    assert only_test.height >= 0.10 * truth.height
    assert (only_test["train"] == 0).all()
    cold_ids = set(truth.filter(pl.col("is_cold"))["item_id"])
    assert truth["is_cold"].mean() >= 0.12
    cold_rows = inter.filter(pl.col("item_id").is_in(cold_ids))
    assert (cold_rows["split"] == "test").all()
    # nearly every cold item is actually shown in test
    assert cold_rows["item_id"].n_unique() >= 0.9 * len(cold_ids)


# --------------------------------------------------------------------------- rendering carries the attributes


def test_titles_carry_category_brand_and_price_but_not_colour(frames: dict[str, pl.DataFrame]) -> None:
    rows = frames["items"].join(frames["truth_items"], on="item_id")
    by_name = {c.name: c for c in CATEGORIES}
    for row in rows.iter_rows(named=True):
        title = row["title"].lower()
        assert any(noun in title for noun in by_name[row["category"]].nouns), row["title"]
        assert row["brand"].lower() in title, row["title"]
        words = title.replace("(", " ").replace(")", " ").replace(",", " ").split()
        assert any(word in words for word in PRICE_TIERS[row["price_tier"]]), row["title"]
        assert not any(colour in words for colour in COLOURS), row["title"]
    assert rows["title"].n_unique() > 0.9 * rows.height


def _hue(rgb: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*(rgb / 255.0))[0]


def test_images_show_the_item_colour_large(root: Path, frames: dict[str, pl.DataFrame]) -> None:
    rows = (
        frames["items"].join(frames["truth_items"], on="item_id").filter(pl.col("image_path").is_not_null()).head(150)
    )
    palette = {name: _hue(np.array(rgb, dtype=float)) for name, rgb in COLOURS.items()}
    for row in rows.iter_rows(named=True):
        pixels = np.asarray(Image.open(root / row["image_path"]), dtype=float).reshape(-1, 3)
        saturated = pixels[(pixels.max(1) - pixels.min(1)) > 50]
        assert len(saturated) > 0.10 * len(pixels), f"{row['image_path']}: shape too small"
        hue = _hue(np.median(saturated, axis=0))
        nearest = min(palette, key=lambda c: min(abs(palette[c] - hue), 1 - abs(palette[c] - hue)))
        assert nearest == row["colour"], row["image_path"]


def test_audio_pitch_and_tempo(root: Path, frames: dict[str, pl.DataFrame]) -> None:
    rows = (
        frames["items"]
        .join(frames["truth_items"], on="item_id")
        .filter(pl.col("audio_path").is_not_null() & (pl.col("waveform") != "noise"))
        .head(240)
    )
    peak: dict[str, list[float]] = {p: [] for p in PITCHES}
    active: dict[str, list[float]] = {t: [] for t in TEMPOS}
    for row in rows.iter_rows(named=True):
        audio, sr = sf.read(root / row["audio_path"])
        spectrum = np.abs(np.fft.rfft(audio))
        peak[row["pitch"]].append(np.fft.rfftfreq(len(audio), 1 / sr)[spectrum.argmax()])
        rms = np.sqrt((audio[: len(audio) // 160 * 160].reshape(-1, 160) ** 2).mean(1))
        active[row["tempo"]].append(float((rms > 0.1 * rms.max()).mean()))
    low, mid, high = (np.median(peak[p]) for p in ("low", "mid", "high"))
    assert 120 < low < 400 < mid < 1000 < high < 2600, (low, mid, high)
    slow, medium, fast = (np.mean(active[t]) for t in ("slow", "medium", "fast"))
    assert slow + 0.05 < medium and medium + 0.05 < fast, (slow, medium, fast)


# --------------------------------------------------------------------------- the planted signal


@pytest.fixture(scope="module")
def signal_frame(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return (
        frames["interactions"]
        .join(frames["truth_items"], on="item_id")
        .join(frames["truth_users"].select("user_id", "persona"), on="user_id")
    )


def _hidden_lr_test_auc(df: pl.DataFrame, drop: tuple[str, ...] = ()) -> float:
    """Test AUC of a logistic regression on persona x hidden-attribute crosses + context, fit on train."""
    columns = [(df["persona"].cast(pl.String) + f"|{a}=" + df[a]).to_numpy() for a in HIDDEN if a not in drop]
    columns.append(("hour=" + df["hour"].cast(pl.String)).to_numpy())
    columns.append((df["device"] + "|" + df["department"]).to_numpy())
    codes, offset = [], 0
    for column in columns:
        values, inverse = np.unique(column, return_inverse=True)
        codes.append(inverse + offset)
        offset += len(values)
    rows = np.repeat(np.arange(df.height), len(columns))
    x = sp.csr_matrix((np.ones(len(rows)), (rows, np.stack(codes, 1).ravel())), shape=(df.height, offset))
    y = df["label"].to_numpy()
    train = (df["split"] == "train").to_numpy()
    test = (df["split"] == "test").to_numpy()
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x[train], y[train])
    return float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))


@pytest.fixture(scope="module")
def full_auc(signal_frame: pl.DataFrame) -> float:
    return _hidden_lr_test_auc(signal_frame)


def test_hidden_attributes_reach_the_oracle(signal_frame: pl.DataFrame, full_auc: float) -> None:
    test = signal_frame.filter(pl.col("split") == "test")
    oracle = roc_auc_score(test["label"], test["true_prob"])
    assert 0.7 <= oracle <= 0.9
    assert full_auc >= oracle - 0.02, (full_auc, oracle)


@pytest.mark.parametrize("modality", sorted(PRIVATE))
def test_each_modality_carries_private_signal(signal_frame: pl.DataFrame, full_auc: float, modality: str) -> None:
    without = _hidden_lr_test_auc(signal_frame, drop=PRIVATE[modality])
    assert full_auc - without > 0.005, (modality, full_auc, without)
