"""Render an item's raw media from its hidden attributes.

Pure functions of (attribute values, a numpy Generator): the same inputs give the same image,
title and audio, byte for byte.

- image: the category's shape, big and centred (small position/size jitter), in the item's
  colour with its texture, on a lightly jittered pale background;
- title: brand, a price-tier word and a category noun, in a random template with filler words;
- audio: the category's waveform family at the pitch register's frequency, played as pulses
  at the tempo's rate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from recsys.data.synthetic.attributes import (
    CATEGORIES,
    COLOURS,
    FILLER_WORDS,
    PITCHES,
    PRICE_TIERS,
    TEMPOS,
    TEXTURES,
)

IMAGE_SIZE = 96
SAMPLE_RATE = 16000
AUDIO_SECONDS = 2.5
_SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled: smooth edges, still deterministic

# --------------------------------------------------------------------------- image


def _polygon(
    cx: float, cy: float, r: float, k: int, rotation: float, inner: float | None = None
) -> list[tuple[float, float]]:
    """Vertices of a regular k-gon (or a k-pointed star when ``inner`` is a radius fraction)."""
    points = []
    steps = 2 * k if inner is not None else k
    for j in range(steps):
        angle = rotation + 2 * np.pi * j / steps
        radius = r * (inner if inner is not None and j % 2 else 1.0)
        points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
    return points


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> Image.Image:
    """An "L" ``(size, size)`` mask (255 inside) of ``shape`` centred at (cx, cy) with radius r."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    up = -np.pi / 2
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=255)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy + 0.15 * r, 1.1 * r, 3, up), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, 1.05 * r, 5, up, inner=0.5), fill=255)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4, up), fill=255)
    elif shape == "cross":
        a, b = r, 0.33 * r
        draw.rectangle([cx - a, cy - b, cx + a, cy + b], fill=255)
        draw.rectangle([cx - b, cy - a, cx + b, cy + a], fill=255)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, 0.0), fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        q = 0.55 * r
        draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _texture_levels(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(size, size)`` uint8 map of the shade of each pixel: 0 darker, 1 the colour, 2 lighter."""
    y = np.arange(size)[:, None]
    x = np.arange(size)[None, :]
    if texture == "plain":
        return np.ones((size, size), dtype=np.uint8)
    if texture == "stripes":
        period = 8 * _SUPERSAMPLE
        phase = int(rng.integers(0, period))
        return (1 + ((x + y + phase) // (period // 2)) % 2).astype(np.uint8)
    if texture == "dots":
        spacing = 10 * _SUPERSAMPLE
        ox, oy = (int(v) for v in rng.integers(0, spacing, size=2))
        dx = (x + ox) % spacing - spacing / 2
        dy = (y + oy) % spacing - spacing / 2
        return np.where(dx * dx + dy * dy <= (2.6 * _SUPERSAMPLE) ** 2, 0, 1).astype(np.uint8)
    raise ValueError(f"unknown texture {texture!r}")


def render_image(category: int, colour: int, texture: int, rng: np.random.Generator) -> Image.Image:
    """A 96x96 RGB image: the category's shape in the item's colour and texture."""
    size = IMAGE_SIZE * _SUPERSAMPLE
    background = tuple(int(v) for v in 238 + rng.integers(-12, 13, size=3))
    r = size * rng.uniform(0.34, 0.40)
    cx, cy = size / 2 + rng.uniform(-0.06, 0.06, size=2) * size
    mask = _shape_mask(CATEGORIES[category].shape, size, cx, cy, r)
    base = np.clip(np.array(list(COLOURS.values())[colour]) + rng.integers(-10, 11, size=3), 0, 255)
    levels = np.stack([0.4 * base, base, base + 0.6 * (255 - base)]).round().astype(np.uint8)
    fill = Image.fromarray(levels[_texture_levels(TEXTURES[texture], size, rng)])  # uint8 HxWx3: RGB
    big = Image.composite(fill, Image.new("RGB", (size, size), background), mask)
    return big.reduce(_SUPERSAMPLE)  # box filter: anti-aliased edges


# --------------------------------------------------------------------------- title


def render_title(category: int, brand: str, price_tier: str, rng: np.random.Generator) -> str:
    """A product title carrying the category noun, the brand and a price-tier word."""
    noun = str(rng.choice(CATEGORIES[category].nouns))
    price = str(rng.choice(PRICE_TIERS[price_tier]))
    f1, f2 = (str(w) for w in rng.choice(FILLER_WORDS, size=2, replace=False))
    templates = (
        f"{brand} {price} {noun} {f1} {f2}",
        f"{price} {noun} by {brand} - {f1}",
        f"{f1} {brand} {noun}, {price} {f2}",
        f"{brand} {noun} {f1} ({price})",
        f"the {price} {brand} {noun} {f2}",
    )
    title = templates[int(rng.integers(len(templates)))]
    return title[0].upper() + title[1:]


# --------------------------------------------------------------------------- audio


_N_SAMPLES = int(SAMPLE_RATE * AUDIO_SECONDS)
_T = (np.arange(_N_SAMPLES) / SAMPLE_RATE).astype(np.float32)
_TABLE_SIZE = 2048
_DECAY_S = 0.07  # pulse decay time constant (s)
_CHIRP_S = 0.12  # duration of a chirp's octave sweep after each onset (s)


def _wavetable(cycles: np.ndarray, f0: float, amplitude_of_k: Callable[[int], float]) -> np.ndarray:
    """Band-limited periodic wave: one period of the harmonics below 7 kHz, read at ``cycles``."""
    theta = 2 * np.pi * np.arange(_TABLE_SIZE) / _TABLE_SIZE
    ks = np.arange(1, max(2, int(7000.0 / f0) + 1))
    amps = np.array([amplitude_of_k(int(k)) for k in ks])
    table = (amps[:, None] * np.sin(ks[:, None] * theta[None, :])).sum(axis=0).astype(np.float32)
    index = (cycles * _TABLE_SIZE).astype(np.int64) % _TABLE_SIZE
    return table[index]


def render_audio(category: int, tempo: str, pitch: str, rng: np.random.Generator) -> np.ndarray:
    """2.5 s of mono float32 audio at 16 kHz, peak 0.5-0.8.

    Waveform family from the category; pulses at the tempo's rate (onsets per second), each a
    sharp attack and an exponential decay; base frequency from the pitch register (small random
    detune).
    """
    t = _T
    f0 = PITCHES[pitch] * 2 ** rng.uniform(-0.08, 0.08)
    rate = TEMPOS[tempo] * rng.uniform(0.95, 1.05)
    offset = rng.uniform(0.0, 0.1)
    pulse_pos = np.maximum((t - np.float32(offset)) * np.float32(rate), 0.0)  # pulses elapsed
    within = pulse_pos - np.floor(pulse_pos)  # position inside the current pulse, 0..1
    seconds_in = within / np.float32(rate)
    # Fixed attack and decay: faster tempos fill more of the clip (visible even to time-pooled features).
    envelope = np.minimum(seconds_in * np.float32(1 / 0.008), 1.0) * np.exp(seconds_in * np.float32(-1 / _DECAY_S))

    waveform = CATEGORIES[category].waveform
    cycles = t * np.float32(f0)  # float32 is exact enough over 2.5 s (error << one cycle)
    if waveform == "sine":
        signal = np.sin(np.float32(2 * np.pi) * cycles)
    elif waveform == "square":
        signal = _wavetable(cycles, f0, lambda k: 1.0 / k if k % 2 else 0.0)
    elif waveform == "sawtooth":
        signal = _wavetable(cycles, f0, lambda k: 1.0 / k)
    elif waveform == "noise":
        noise = rng.standard_normal(_N_SAMPLES, dtype=np.float32)
        kernel = np.hanning(max(3, int(SAMPLE_RATE / f0))).astype(np.float32)  # band ~ f0 +- 2 f0
        signal = np.convolve(noise, kernel / kernel.sum(), mode="same") * np.sin(np.float32(2 * np.pi) * cycles)
    elif waveform in ("chirp_up", "chirp_down"):
        sweep = np.minimum(seconds_in * np.float32(1 / _CHIRP_S), 1.0)  # one octave per onset
        octave = sweep if waveform == "chirp_up" else 1.0 - sweep
        freq = f0 * np.exp2(octave, dtype=np.float64)
        signal = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE).astype(np.float32)
    elif waveform == "tremolo":
        signal = np.sin(np.float32(2 * np.pi) * cycles) * (0.55 + 0.45 * np.sin(np.float32(2 * np.pi * 17.0) * t))
    elif waveform == "chord":
        phase = np.float32(2 * np.pi) * cycles
        signal = (np.sin(phase) + np.sin(np.float32(1.26) * phase) + np.sin(np.float32(1.5) * phase)) / 3.0
    else:
        raise ValueError(f"unknown waveform {waveform!r}")

    audio = signal * envelope
    audio *= np.float32(rng.uniform(0.5, 0.8) / (np.abs(audio).max() + 1e-9))
    return audio.astype(np.float32)
