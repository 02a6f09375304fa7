"""What the frozen encoders' vectors reveal of the built-in dataset's hidden item attributes.

For every modality's cached vectors (``recsys encode`` output) and every hidden attribute of
the built-in dataset (``truth/items.parquet``: the category shows in every modality, colour and
texture only in the image, brand and price tier only in the title, tempo and pitch only in the
audio), a linear probe (scikit-learn logistic regression on standardised vectors, 5-fold
stratified cross-validation) predicts the attribute from the vector. Its accuracy next to the
majority-class rate says how much of the planted signal a model can read from that modality:
the click model only sees attributes through these vectors, so an attribute no modality exposes
caps every content model below the oracle.

    .venv/bin/python benchmarks/encoder_probe.py --data data/default --config configs/default.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ATTRIBUTES = ("category", "colour", "texture", "brand", "price_tier", "tempo", "pitch")
HOME = {
    "category": "every",
    "colour": "image",
    "texture": "image",
    "brand": "title",
    "price_tier": "title",
    "tempo": "audio",
    "pitch": "audio",
}


def probe_accuracy(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Mean held-out accuracy of a logistic-regression probe over stratified folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, x, y, cv=splits, scoring="accuracy").mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/default", help="a built-in dataset directory (has truth/)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="its encoders section")
    parser.add_argument("--cache-dir", help="encoder cache (overrides encoders.cache_dir)")
    args = parser.parse_args()

    from recsys.config import load_config
    from recsys.encoders.pipeline import load_item_vectors

    data = Path(args.data)
    truth = pl.read_parquet(data / "truth" / "items.parquet")
    vectors = load_item_vectors(
        data, load_config(args.config).encoders, cache_dir=Path(args.cache_dir) if args.cache_dir else None
    )
    print(f"{args.data}: {truth.height} items; probe = logistic regression, 5-fold CV accuracy (majority rate)\n")
    print("| attribute | shows in | " + " | ".join(vectors) + " | majority |")
    print("|---|---|" + "---:|" * (len(vectors) + 1))
    for attr in ATTRIBUTES:
        cells = []
        for mv in vectors.values():
            labels = truth.join(pl.DataFrame({"item_id": mv.item_ids}), on="item_id", how="semi")
            order = {int(i): k for k, i in enumerate(mv.item_ids)}
            rows = np.array([order[int(i)] for i in labels["item_id"]])
            y = labels[attr].to_numpy()
            cells.append(f"{probe_accuracy(mv.vectors[rows], y):.2f}")
        majority = truth[attr].value_counts(sort=True)["count"][0] / truth.height
        print(f"| {attr} | {HOME[attr]} | " + " | ".join(cells) + f" | {majority:.2f} |")


if __name__ == "__main__":
    main()
