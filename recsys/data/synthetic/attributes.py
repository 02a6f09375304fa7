"""Hidden ground truth of the synthetic dataset: item attributes, user personas, the click model.

Every item has hidden attributes. One of them, the *category*, is SHARED: it shows in every
modality (the image's shape, the title's noun, the audio's waveform family). The others are
PRIVATE to one modality: colour and texture only in the image, brand and price tier only in the
title, tempo and pitch register only in the audio. Users belong to one of 8 hidden personas whose
preference weights over attribute values (plus a little individual noise) drive the click
probability, so every modality carries signal that no other modality has.

Everything here is a pure function of a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- vocabularies


@dataclass(frozen=True)
class Category:
    """One category and how it shows in each modality."""

    name: str
    department: str
    shape: str  # image
    nouns: tuple[str, ...]  # title
    waveform: str  # audio


CATEGORIES: tuple[Category, ...] = (
    Category("sneakers", "footwear", "circle", ("sneaker", "trainer", "runner"), "sine"),
    Category("boots", "footwear", "square", ("boot", "ankle boot", "hiking boot"), "square"),
    Category("headphones", "electronics", "triangle", ("headphones", "earbuds", "headset"), "sawtooth"),
    Category("speakers", "electronics", "star", ("speaker", "soundbar", "boombox"), "noise"),
    Category("mugs", "home", "diamond", ("mug", "cup", "tumbler"), "chirp_up"),
    Category("lamps", "home", "cross", ("lamp", "lantern", "desk lamp"), "chirp_down"),
    Category("backpacks", "outdoor", "hexagon", ("backpack", "rucksack", "daypack"), "tremolo"),
    Category("tents", "outdoor", "ring", ("tent", "shelter", "canopy"), "chord"),
)
DEPARTMENTS: tuple[str, ...] = ("footwear", "electronics", "home", "outdoor")

#: Image-private attributes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 200),
    "yellow": (240, 200, 20),
    "purple": (140, 60, 180),
    "orange": (255, 127, 14),
}
TEXTURES: tuple[str, ...] = ("plain", "stripes", "dots")

#: Title-private attributes.
BRANDS: tuple[str, ...] = (
    "Zentro",
    "Kalvi",
    "Orbix",
    "Nuvola",
    "Tessar",
    "Brimo",
    "Quilla",
    "Varda",
    "Moxen",
    "Lumio",
)
PRICE_TIERS: dict[str, tuple[str, ...]] = {
    "budget": ("budget", "value", "basic"),
    "standard": ("standard", "everyday", "regular"),
    "premium": ("deluxe", "premium", "luxury"),
}
FILLER_WORDS: tuple[str, ...] = (
    "new",
    "original",
    "series",
    "model",
    "edition",
    "collection",
    "one",
    "go",
    "mk2",
    "plus",
    "2024",
    "line",
    "style",
    "range",
    "select",
    "version",
)

#: Audio-private attributes: pulse rate (onsets per second) and base frequency (Hz).
TEMPOS: dict[str, float] = {"slow": 1.5, "medium": 3.0, "fast": 6.0}
PITCHES: dict[str, float] = {"low": 160.0, "mid": 420.0, "high": 1100.0}

#: Hidden attribute name -> its values, in index order.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "category": tuple(c.name for c in CATEGORIES),
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "brand": BRANDS,
    "price_tier": tuple(PRICE_TIERS),
    "tempo": tuple(TEMPOS),
    "pitch": tuple(PITCHES),
}
#: Which modality shows each attribute ("shared" = all of them).
ATTRIBUTE_MODALITY: dict[str, str] = {
    "category": "shared",
    "colour": "image",
    "texture": "image",
    "brand": "title",
    "price_tier": "title",
    "tempo": "audio",
    "pitch": "audio",
}
#: Scale of each attribute's preference weights in the click logit (category strongest).
PREFERENCE_SCALE: dict[str, float] = {
    "category": 0.9,
    "colour": 0.68,
    "price_tier": 0.54,
    "tempo": 0.5,
    "brand": 0.45,
    "pitch": 0.4,
    "texture": 0.32,
}

N_PERSONAS = 8
USER_NOISE = 0.2  # std of a user's own deviation, as a fraction of the attribute's scale
QUALITY_SCALE = 0.2  # logit weight of the item's hidden quality (standard normal)
TARGET_CTR = 0.27
AGE_GROUPS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")

# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Items:
    """Hidden attributes of ``n`` items, as index arrays into the vocabularies above."""

    item_id: np.ndarray  # int64, 1..n
    attrs: dict[str, np.ndarray]  # attribute name -> int64 value index
    quality: np.ndarray  # float64, standard normal
    popularity: np.ndarray  # float64 > 0, impression sampling weight
    release_ts: np.ndarray  # int64 unix seconds
    is_cold: np.ndarray  # bool, released in the test period
    has_image: np.ndarray  # bool
    has_audio: np.ndarray  # bool

    @property
    def n(self) -> int:
        return len(self.item_id)

    @property
    def department(self) -> np.ndarray:
        """Department index of each item (a coarse function of the category)."""
        lookup = np.array([DEPARTMENTS.index(c.department) for c in CATEGORIES])
        return lookup[self.attrs["category"]]


@dataclass(frozen=True)
class Timeline:
    """The dataset's time range and its global train/valid/test boundaries (unix seconds)."""

    start: int
    end: int
    valid_start: int
    test_start: int


def make_timeline(start: int, days: int, train_frac: float = 0.8, valid_frac: float = 0.1) -> Timeline:
    """A ``days``-long time range split by global time into train/valid/test."""
    span = days * 86400
    return Timeline(
        start=start,
        end=start + span,
        valid_start=start + int(span * train_frac),
        test_start=start + int(span * (train_frac + valid_frac)),
    )


def sample_items(
    rng: np.random.Generator,
    n: int,
    timeline: Timeline,
    cold_frac: float = 0.14,
    missing_image: float = 0.05,
    missing_audio: float = 0.10,
) -> Items:
    """Draw ``n`` items with uniform independent attributes.

    About half the non-cold items exist from the start, the rest are released during the train
    period; ``cold_frac`` of items are released in the first 70% of the test period, so they can
    only ever be seen in test rows.
    """
    attrs = {name: rng.integers(0, len(values), size=n) for name, values in ATTRIBUTE_VALUES.items()}
    quality = rng.standard_normal(n)
    popularity = rng.lognormal(mean=0.0, sigma=1.0, size=n)
    n_cold = int(round(cold_frac * n))
    is_cold = np.zeros(n, dtype=bool)
    is_cold[rng.choice(n, size=n_cold, replace=False)] = True
    # Keyword arguments are evaluated in order: the draws below keep the generator's sequence.
    return Items(
        item_id=np.arange(1, n + 1, dtype=np.int64),
        attrs=attrs,
        quality=quality,
        popularity=popularity,
        is_cold=is_cold,
        release_ts=_release_times(rng, timeline, is_cold),
        has_image=rng.random(n) >= missing_image,
        has_audio=rng.random(n) >= missing_audio,
    )


def _release_times(rng: np.random.Generator, timeline: Timeline, is_cold: np.ndarray) -> np.ndarray:
    """Unix release second of each item: half at launch, the rest in the train period; cold ones in test."""
    n = len(is_cold)
    train_span = timeline.valid_start - timeline.start
    test_span = timeline.end - timeline.test_start
    launch = rng.random(n) < 0.5
    warm_release = np.where(launch, 0, (rng.random(n) * 0.8 * train_span).astype(np.int64))
    cold_release = (timeline.test_start - timeline.start) + (rng.random(n) * 0.7 * test_span).astype(np.int64)
    return timeline.start + np.where(is_cold, cold_release, warm_release).astype(np.int64)


# --------------------------------------------------------------------------- users


def _standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit population std along the last axis."""
    x = x - x.mean(axis=-1, keepdims=True)
    return x / x.std(axis=-1, keepdims=True)


def persona_preferences(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per attribute, an ``(N_PERSONAS, n_values)`` matrix of logit weights.

    Each persona's weights over an attribute's values are standardised then scaled by
    :data:`PREFERENCE_SCALE`; for the category each persona also has a distinct favourite.
    """
    prefs: dict[str, np.ndarray] = {}
    for name, values in ATTRIBUTE_VALUES.items():
        z = rng.standard_normal((N_PERSONAS, len(values)))
        if name == "category":
            favourite = rng.permutation(len(values))[:N_PERSONAS]
            z[np.arange(N_PERSONAS), favourite] += 2.0
        prefs[name] = PREFERENCE_SCALE[name] * _standardise(z)
    return prefs


@dataclass(frozen=True)
class Users:
    """Hidden and visible user attributes."""

    user_id: np.ndarray  # int64, 1..n
    persona: np.ndarray  # int64 in [0, N_PERSONAS)
    prefs: dict[str, np.ndarray]  # attribute -> (n_users, n_values) logit weights
    activity: np.ndarray  # float64 > 0, relative impression volume
    primary_device: np.ndarray  # int64 index into DEVICES
    age_group: np.ndarray  # int64 index into AGE_GROUPS (weakly tied to persona)
    country: np.ndarray  # int64 index into COUNTRIES (noise)

    @property
    def n(self) -> int:
        return len(self.user_id)


def sample_users(rng: np.random.Generator, n: int, persona_prefs: dict[str, np.ndarray]) -> Users:
    """Draw ``n`` users: a persona each, its preferences plus individual noise, and visible noise."""
    persona = rng.integers(0, N_PERSONAS, size=n)
    # Keyword arguments are evaluated in order: the draws keep the generator's sequence.
    return Users(
        user_id=np.arange(1, n + 1, dtype=np.int64),
        persona=persona,
        prefs={
            name: w[persona] + USER_NOISE * PREFERENCE_SCALE[name] * rng.standard_normal((n, w.shape[1]))
            for name, w in persona_prefs.items()
        },
        activity=rng.lognormal(mean=0.0, sigma=0.5, size=n),
        primary_device=rng.choice(len(DEVICES), size=n, p=[0.6, 0.3, 0.1]),
        age_group=np.where(rng.random(n) < 0.4, persona % len(AGE_GROUPS), rng.integers(0, len(AGE_GROUPS), size=n)),
        country=rng.choice(len(COUNTRIES), size=n, p=_zipf_weights(len(COUNTRIES))),
    )


def _zipf_weights(k: int) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1)
    return w / w.sum()


# --------------------------------------------------------------------------- context + clicks

#: CTR effect of the hour of day (UTC): higher in the evening, lowest at night.
HOUR_EFFECT: np.ndarray = 0.35 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24)
#: Hour-of-day impression volume profile (busier in the evening).
HOUR_VOLUME: np.ndarray = 1.0 + 0.8 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24)
#: CTR effect of device x department (rows DEVICES, columns DEPARTMENTS).
DEVICE_DEPARTMENT_EFFECT: np.ndarray = np.array(
    [
        [0.30, 0.25, -0.30, 0.00],  # mobile: footwear + electronics, not home
        [-0.20, 0.35, 0.30, -0.25],  # desktop: electronics + home
        [-0.10, -0.30, 0.35, 0.25],  # tablet: home + outdoor
    ]
)


def click_logit_without_bias(
    users: Users,
    items: Items,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    hour: np.ndarray,
    device: np.ndarray,
) -> np.ndarray:
    """The click logit of each impression, minus the global bias.

    Sum over attributes of the user's weight for the item's value, plus the hour effect, the
    device x department effect and a small item quality term.
    """
    logit = np.zeros(len(user_idx))
    for name, w in users.prefs.items():
        logit += w[user_idx, items.attrs[name][item_idx]]
    logit += HOUR_EFFECT[hour]
    logit += DEVICE_DEPARTMENT_EFFECT[device, items.department[item_idx]]
    logit += QUALITY_SCALE * items.quality[item_idx]
    return logit


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def bias_for_ctr(logit: np.ndarray, target: float = TARGET_CTR) -> float:
    """The global bias b such that mean(sigmoid(b + logit)) == target (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if sigmoid(mid + logit).mean() < target:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 6)
