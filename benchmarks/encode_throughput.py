"""Encoder throughput: items/s per modality, batched vs one item at a time.

    python benchmarks/encode_throughput.py --items 128 --batch-size 32 [--threads 1]

Generates N in-memory items (titles, 256x256 images, 22.05 kHz mono clips), loads each
encoder once (load time reported apart), warms it up, then times ``encoder.encode`` over all
items in batches and one at a time. Decoding files is not timed (it is the same either way).
Prints a markdown table; writes nothing. On a shared machine compare with ``--threads 1``:
when other processes hold the cores, torch's multi-threaded kernels can wait on each other
and small (one-item) calls slow down far more than batched ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.config import AudioEncoderConfig, ImageEncoderConfig, TitleEncoderConfig
from recsys.encoders import build_encoder

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "love",
    "war",
    "night",
    "city",
    "star",
    "dark",
    "return",
    "story",
    "man",
    "woman",
    "life",
    "dead",
    "king",
    "house",
    "last",
    "big",
    "little",
    "secret",
    "journey",
    "summer",
    "winter",
    "blue",
    "red",
    "girl",
    "boy",
    "lost",
    "island",
    "river",
    "game",
    "heart",
    "time",
]


def make_titles(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 14)))).title() for _ in range(n)]


def make_images(n: int, rng: np.random.Generator) -> list[Image.Image]:
    images = []
    for _ in range(n):
        pixels = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        x, y = (int(v) for v in rng.integers(0, 160, size=2))
        ImageDraw.Draw(image).ellipse((x, y, x + 90, y + 90), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        images.append(image)
    return images


def make_clips(n: int, seconds: float, rng: np.random.Generator, rate: int = 22050) -> list[tuple[np.ndarray, int]]:
    t = np.arange(int(seconds * rate)) / rate
    clips = []
    for _ in range(n):
        freq = float(rng.uniform(100, 2000))
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
        clips.append((wave.astype(np.float32), rate))
    return clips


def items_per_second(encoder, inputs: list, batch_size: int) -> float:
    start = time.perf_counter()
    for first in range(0, len(inputs), batch_size):
        encoder.encode(inputs[first : first + batch_size])
    return len(inputs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128, help="items per modality")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--audio-seconds", type=float, default=5.0, help="length of each generated clip")
    parser.add_argument("--image-size", type=int, default=ImageEncoderConfig().image_size)
    parser.add_argument(
        "--modalities", default="title,image,audio_aisfx,audio_logmel", help="comma-separated subset to run"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    clips = make_clips(args.items, args.audio_seconds, rng)
    cases = {
        "title": ("title", TitleEncoderConfig(), make_titles(args.items, rng)),
        "image": ("image", ImageEncoderConfig(image_size=args.image_size), make_images(args.items, rng)),
        "audio_aisfx": ("audio", AudioEncoderConfig(kind="aisfx", max_seconds=args.audio_seconds), clips),
        "audio_logmel": ("audio", AudioEncoderConfig(kind="logmel", max_seconds=args.audio_seconds), clips),
    }
    rows = []
    for name in args.modalities.split(","):
        modality, cfg, inputs = cases[name]
        start = time.perf_counter()
        encoder = build_encoder(modality, cfg)
        load_s = time.perf_counter() - start
        encoder.encode(inputs[:2])  # warm-up: first-call allocations, lazy inits
        # `recsys encode` sorts titles by length before batching (less padding): the batched path
        # here does the same, so it measures what the pipeline runs.
        ordered = sorted(inputs, key=len) if modality == "title" else inputs
        batched = items_per_second(encoder, ordered, args.batch_size)
        single = items_per_second(encoder, inputs, 1)
        rows.append((name, encoder.dim, load_s, batched, single))
        print(f"{name}: done", file=sys.stderr)
        del encoder

    print(
        f"\n{args.items} items, batch {args.batch_size}, audio clips {args.audio_seconds:g} s at 22.05 kHz, "
        f"images 256x256 -> {args.image_size}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})\n"
    )
    print("| modality | dim | load s | batched items/s | one-at-a-time items/s | batched / one-at-a-time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, dim, load_s, batched, single in rows:
        print(f"| {name} | {dim} | {load_s:.1f} | {batched:.1f} | {single:.1f} | {batched / single:.2f}x |")


if __name__ == "__main__":
    main()
