"""Write the built-in default dataset: hidden truth -> impressions -> files with real media.

:func:`make_default_dataset` draws the hidden item attributes and user personas
(:mod:`~recsys.data.synthetic.attributes`), renders each item's title, PNG and WAV
(:mod:`~recsys.data.synthetic.media`), samples impressions over 60 days with the click model,
and writes a dataset directory in the project's format (docs/dataset-format.md). The same seed
gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import soundfile as sf
from sklearn.metrics import roc_auc_score

from recsys import console
from recsys.data.dataset import INTERACTIONS_FILE, ITEMS_FILE, SPLITS, USERS_FILE
from recsys.data.synthetic import attributes as A
from recsys.data.synthetic.media import SAMPLE_RATE, render_audio, render_image, render_title
from recsys.errors import DatasetError

GENERATOR_NAME = "recsys.data.synthetic"
GENERATOR_VERSION = 1
EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
DAYS = 60
FRESH_WINDOW_S = 7 * 86400  # items released this recently get extra "new arrivals" exposure
FRESH_SHARE = 0.2  # share of impressions drawn uniformly from fresh items (when there are any)

Size = Literal["small", "medium", "large"]


@dataclass(frozen=True)
class SizeSpec:
    """How big a generated dataset is."""

    n_items: int
    n_users: int
    n_impressions: int
    min_per_user: int


SIZES: dict[str, SizeSpec] = {
    "small": SizeSpec(n_items=1500, n_users=600, n_impressions=60_000, min_per_user=20),
    "medium": SizeSpec(n_items=4000, n_users=20_000, n_impressions=1_200_000, min_per_user=10),
    # 10x medium's impressions and users over medium's catalogue: the same seed draws the same items and
    # media, so an encoder cache made for medium (--cache-dir) serves large with nothing to encode.
    "large": SizeSpec(n_items=4000, n_users=200_000, n_impressions=12_000_000, min_per_user=10),
}

#: Entries of the output directory the generator owns (removed before an overwrite).
OWNED_ENTRIES = (
    "dataset.json",
    "README.md",
    ITEMS_FILE,
    USERS_FILE,
    INTERACTIONS_FILE,
    "images",
    "audio",
    "truth",
)


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`make_default_dataset` wrote."""

    path: Path
    n_items: int
    n_users: int
    n_interactions: int
    n_cold_items: int
    n_missing_image: int
    n_missing_audio: int
    oracle_auc_test: float  # AUC of true_prob vs label on the test split


# --------------------------------------------------------------------------- impressions


@dataclass(frozen=True)
class Impressions:
    """Sampled impressions (sorted by timestamp, then user), as index arrays."""

    user_idx: np.ndarray
    item_idx: np.ndarray
    timestamp: np.ndarray
    hour: np.ndarray
    device: np.ndarray
    split: np.ndarray  # index into SPLITS: 0 train, 1 valid, 2 test
    true_prob: np.ndarray
    label: np.ndarray
    bias: float


def sample_impressions(
    rng: np.random.Generator, users: A.Users, items: A.Items, timeline: A.Timeline, spec: SizeSpec
) -> Impressions:
    """Impressions spread over the timeline, items drawn from those already released.

    Each user gets ``min_per_user`` impressions plus a share of the rest proportional to their
    activity; times follow an evening-heavy hour profile; the device is usually the user's
    primary one. An impression shows a released item drawn by popularity, or (with probability
    :data:`FRESH_SHARE`) one released in the last 7 days, uniformly. The label is drawn from the
    click model with the bias set for :data:`~recsys.data.synthetic.attributes.TARGET_CTR`.
    """
    extra = rng.multinomial(spec.n_impressions - spec.min_per_user * users.n, users.activity / users.activity.sum())
    user_idx = np.repeat(np.arange(users.n), spec.min_per_user + extra)
    n = len(user_idx)
    day = rng.integers(0, DAYS, size=n)
    hour = rng.choice(24, size=n, p=A.HOUR_VOLUME / A.HOUR_VOLUME.sum())
    timestamp = timeline.start + day * 86400 + hour * 3600 + rng.integers(0, 3600, size=n)
    device = np.where(rng.random(n) < 0.8, users.primary_device[user_idx], rng.integers(0, len(A.DEVICES), size=n))
    order = np.lexsort((user_idx, timestamp))
    user_idx, timestamp, hour, device = user_idx[order], timestamp[order], hour[order], device[order]

    by_release = np.argsort(items.release_ts, kind="stable")
    released_at = items.release_ts[by_release]
    n_released = np.searchsorted(released_at, timestamp, side="right")  # >= 1: launch items exist
    cum_pop = np.cumsum(items.popularity[by_release])
    pos = np.searchsorted(cum_pop, rng.random(n) * cum_pop[n_released - 1], side="right")
    pos = np.minimum(pos, n_released - 1)
    n_launch = int(np.searchsorted(released_at, timeline.start, side="right"))
    fresh_lo = np.maximum(np.searchsorted(released_at, timestamp - FRESH_WINDOW_S, side="left"), n_launch)
    fresh = (rng.random(n) < FRESH_SHARE) & (n_released > fresh_lo)
    fresh_pos = fresh_lo + np.floor(rng.random(n) * (n_released - fresh_lo)).astype(np.int64)
    pos = np.where(fresh, fresh_pos, pos)
    item_idx = by_release[pos]

    logit = A.click_logit_without_bias(users, items, user_idx, item_idx, hour, device)
    bias = A.bias_for_ctr(logit)
    true_prob = A.sigmoid(bias + logit)
    label = (rng.random(n) < true_prob).astype(np.int8)
    split = np.select([timestamp < timeline.valid_start, timestamp < timeline.test_start], [0, 1], default=2)
    return Impressions(user_idx, item_idx, timestamp, hour, device, split, true_prob, label, bias)


# --------------------------------------------------------------------------- output directory


def _prepare_output(out: Path) -> None:
    """Create ``out``, or clear a previous generator output; refuse anything else non-empty."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()):
        marker = out / "dataset.json"
        try:
            previous = json.loads(marker.read_text(encoding="utf-8")).get("generator")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous != GENERATOR_NAME:
            raise DatasetError(
                f"{out}: directory is not empty and is not a previous output of the default dataset "
                f"generator (no {marker.name} written by {GENERATOR_NAME}); refusing to overwrite it. "
                "Choose an empty or new directory."
            )
        for name in OWNED_ENTRIES:
            entry = out / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _names(values: tuple[str, ...], idx: np.ndarray) -> list[str]:
    return [values[i] for i in idx]


# --------------------------------------------------------------------------- entry point


def make_default_dataset(out: Path, seed: int = 0, size: Size = "small", progress: bool = True) -> DatasetSummary:
    """Generate the default multimodal CTR dataset into ``out`` and return its summary.

    Deterministic: the same seed and size give byte-identical files. Raises
    :class:`~recsys.errors.DatasetError` when ``out`` is a file, or a non-empty directory that
    is not a previous output of this generator (one with its ``dataset.json``).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    spec = SIZES[size]
    out = Path(out)
    _prepare_output(out)
    # Marks the directory as ours at once, so an interrupted run can be overwritten later.
    _write_json(out / "dataset.json", {"generator": GENERATOR_NAME, "complete": False})

    timeline = A.make_timeline(EPOCH, DAYS)
    persona_prefs = A.persona_preferences(np.random.default_rng([seed, 0]))  # same for every size
    items = A.sample_items(np.random.default_rng([seed, 1]), spec.n_items, timeline)
    users = A.sample_users(np.random.default_rng([seed, 2]), spec.n_users, persona_prefs)
    imp = sample_impressions(np.random.default_rng([seed, 3]), users, items, timeline, spec)

    titles, image_paths, audio_paths = _write_media(out, seed, items, progress)
    _write_tables(out, items, users, imp, titles, image_paths, audio_paths)

    test = imp.split == 2
    oracle_auc = round(float(roc_auc_score(imp.label[test], imp.true_prob[test])), 6)
    summary = DatasetSummary(
        path=out,
        n_items=items.n,
        n_users=users.n,
        n_interactions=len(imp.label),
        n_cold_items=int(items.is_cold.sum()),
        n_missing_image=int((~items.has_image).sum()),
        n_missing_audio=int((~items.has_audio).sum()),
        oracle_auc_test=oracle_auc,
    )
    ctr = {name: round(float(imp.label[imp.split == k].mean()), 6) for k, name in enumerate(SPLITS)}
    (out / "README.md").write_text(_readme(seed, size, summary, ctr), encoding="utf-8")
    _write_json(
        out / "dataset.json",
        {
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "complete": True,
            "seed": seed,
            "size": size,
            "counts": {
                "items": summary.n_items,
                "users": summary.n_users,
                "interactions": summary.n_interactions,
                "cold_items": summary.n_cold_items,
                "missing_image": summary.n_missing_image,
                "missing_audio": summary.n_missing_audio,
                "rows_per_split": {name: int((imp.split == k).sum()) for k, name in enumerate(SPLITS)},
            },
            "ctr": ctr,
            "oracle_auc_test": oracle_auc,
            "click_bias": imp.bias,
            "time": {
                "start": timeline.start,
                "valid_start": timeline.valid_start,
                "test_start": timeline.test_start,
                "end": timeline.end,
            },
        },
    )
    return summary


def _write_media(
    out: Path, seed: int, items: A.Items, progress: bool
) -> tuple[list[str], list[str | None], list[str | None]]:
    """Render every item's title, PNG and WAV; return titles and relative media paths."""
    (out / "images").mkdir()
    (out / "audio").mkdir()
    titles: list[str] = []
    image_paths: list[str | None] = []
    audio_paths: list[str | None] = []
    a = items.attrs
    for i in console.progress(range(items.n), desc="writing images+audio", unit="item", disable=not progress):
        item_id = int(items.item_id[i])
        title_rng, image_rng, audio_rng = (np.random.default_rng([seed, 4, item_id, m]) for m in range(3))
        titles.append(
            render_title(
                int(a["category"][i]),
                A.BRANDS[a["brand"][i]],
                A.ATTRIBUTE_VALUES["price_tier"][a["price_tier"][i]],
                title_rng,
            )
        )
        if items.has_image[i]:
            rel = f"images/{item_id}.png"
            image = render_image(int(a["category"][i]), int(a["colour"][i]), int(a["texture"][i]), image_rng)
            image.save(out / rel, format="PNG", compress_level=6)
            image_paths.append(rel)
        else:
            image_paths.append(None)
        if items.has_audio[i]:
            rel = f"audio/{item_id}.wav"
            audio = render_audio(
                int(a["category"][i]),
                A.ATTRIBUTE_VALUES["tempo"][a["tempo"][i]],
                A.ATTRIBUTE_VALUES["pitch"][a["pitch"][i]],
                audio_rng,
            )
            buffer = io.BytesIO()  # soundfile fsyncs real files on close: slow for thousands
            sf.write(buffer, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            (out / rel).write_bytes(buffer.getvalue())
            audio_paths.append(rel)
        else:
            audio_paths.append(None)
    return titles, image_paths, audio_paths


def _write_tables(
    out: Path,
    items: A.Items,
    users: A.Users,
    imp: Impressions,
    titles: list[str],
    image_paths: list[str | None],
    audio_paths: list[str | None],
) -> None:
    """Write the visible tables and the hidden truth tables."""
    department = _names(A.DEPARTMENTS, items.department)
    pl.DataFrame(
        {
            "item_id": items.item_id,
            "title": titles,
            "image_path": image_paths,
            "audio_path": audio_paths,
            "department": department,
        },
        schema={
            "item_id": pl.Int64,
            "title": pl.String,
            "image_path": pl.String,
            "audio_path": pl.String,
            "department": pl.String,
        },
    ).write_parquet(out / ITEMS_FILE)
    pl.DataFrame(
        {
            "user_id": users.user_id,
            "age_group": _names(A.AGE_GROUPS, users.age_group),
            "country": _names(A.COUNTRIES, users.country),
        },
        schema={"user_id": pl.Int64, "age_group": pl.String, "country": pl.String},
    ).write_parquet(out / USERS_FILE)
    pl.DataFrame(
        {
            "user_id": users.user_id[imp.user_idx],
            "item_id": items.item_id[imp.item_idx],
            "timestamp": imp.timestamp.astype(np.int64),
            "label": imp.label,
            "split": pl.Series(np.array(SPLITS)[imp.split]),
            "hour": imp.hour.astype(np.int8),
            "device": pl.Series(np.array(A.DEVICES)[imp.device]),
            "true_prob": imp.true_prob,
        },
        schema={
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "timestamp": pl.Int64,
            "label": pl.Int8,
            "split": pl.String,
            "hour": pl.Int8,
            "device": pl.String,
            "true_prob": pl.Float64,
        },
    ).write_parquet(out / INTERACTIONS_FILE)

    truth = out / "truth"
    truth.mkdir()
    cat = items.attrs["category"]
    hidden = {name: _names(values, items.attrs[name]) for name, values in A.ATTRIBUTE_VALUES.items()}
    pl.DataFrame(
        {
            "item_id": items.item_id,
            **hidden,
            "department": department,
            "shape": [A.CATEGORIES[c].shape for c in cat],
            "waveform": [A.CATEGORIES[c].waveform for c in cat],
            "quality": items.quality,
            "popularity": items.popularity,
            "release_ts": items.release_ts,
            "is_cold": items.is_cold,
            "has_image": items.has_image,
            "has_audio": items.has_audio,
        }
    ).write_parquet(truth / "items.parquet")
    pl.DataFrame(
        {
            "user_id": users.user_id,
            "persona": users.persona.astype(np.int64),
            "primary_device": _names(A.DEVICES, users.primary_device),
            "activity": users.activity,
            **{f"pref_{name}": pl.Series(w.tolist(), dtype=pl.List(pl.Float64)) for name, w in users.prefs.items()},
        }
    ).write_parquet(truth / "users.parquet")


def _readme(seed: int, size: str, s: DatasetSummary, ctr: dict[str, float]) -> str:
    return f"""# Default synthetic multimodal CTR dataset (seed {seed}, size {size})

Generated by `{GENERATOR_NAME}` version {GENERATOR_VERSION}; regenerate with the same seed for
byte-identical files. Synthetic: no licence restrictions.

## Files
- `items.parquet`: item_id, title, image_path (`images/<id>.png`, 96x96 RGB, null for
  {s.n_missing_image} items), audio_path (`audio/<id>.wav`, mono 16 kHz PCM_16, 2.5 s, null for
  {s.n_missing_audio} items), department (4 values).
- `users.parquet`: user_id, age_group (weakly tied to the hidden persona), country (noise).
- `interactions.parquet`: user_id, item_id, timestamp (unix s, 60 days from 2024-01-01),
  label (int8), split (global time: first 80% train, 10% valid, last 10% test), hour, device,
  true_prob (the click probability the label was drawn from: for evaluation, never a feature).
- `truth/`: hidden ground truth (item attributes, quality, release time, is_cold; user persona
  and preference weights). For tests and analysis only, never features.

## Counts
items {s.n_items}, users {s.n_users}, impressions {s.n_interactions}; cold items (released in the
test period, never in train) {s.n_cold_items}. CTR train {ctr["train"]}, valid {ctr["valid"]},
test {ctr["test"]}. Oracle test AUC (true_prob vs label) {s.oracle_auc_test}.

## The planted signal
Each item has hidden attributes. The category (8 values) is shared by every modality: the
image's shape, the title's noun, the audio's waveform family. The rest are private to one
modality: colour and texture only in the image; brand and price tier only in the title; tempo
(pulse rate) and pitch register only in the audio. Users belong to 8 hidden personas with
preference weights over every attribute (category strongest), plus small individual noise.
Click logit = bias + sum of the user's preference weights for the item's attribute values
+ hour-of-day effect + device x department effect + a small item quality term;
label ~ Bernoulli(sigmoid(logit)). A model therefore needs every modality to reach the oracle,
and needs content (not item ids) for the cold items.
"""
