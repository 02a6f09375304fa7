"""Aggregate comparison runs: mean ± std per model, metric and segment; gains over the best baseline.

Baselines are :data:`recsys.models.BASELINES` (``lr``, ``dnn``, ``din``); every other model of ours
is an ablation or MARN.
The best baseline is the one with the highest mean test AUC. A model's gain over it is the
difference of mean test AUC over seeds (and RelaImpr, the relative gain over a random
guesser), tested with a paired bootstrap over users (:mod:`recsys.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from recsys.models import BASELINES
from recsys.reports.peers import Peer
from recsys.reports.runs import RunRecord
from recsys.stats import PairedTest, paired_bootstrap_auc

METRICS = ("auc", "gauc", "logloss", "ratio")
#: Segments with fewer test rows show their count but no metrics (an AUC of a handful of rows is noise).
MIN_ROWS = 30


@dataclass
class Stat:
    """Mean, sample std (0 for one value) and count of one metric over runs."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> Stat:
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return cls(float("nan"), float("nan"), 0)
        return cls(float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0, len(finite))

    def format(self, digits: int = 4) -> str:
        if self.n == 0:
            return "-"
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if self.n > 1 else "")


@dataclass
class ModelSummary:
    """One row of the comparison: our model (over seeds) or a peer."""

    model: str
    kind: str  # baseline | ours | peer | oracle
    n_ok: int
    n_runs: int
    segments: dict[str, dict[str, Stat]] = field(default_factory=dict)
    samples_per_s: Stat = field(default_factory=lambda: Stat.of([]))
    errors: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # test rows per segment (the fewest over runs)


@dataclass
class Gain:
    """A model against the best baseline on test AUC."""

    model: str
    baseline: str
    diff: float
    rela_impr: float  # (AUC - 0.5) / (AUC_baseline - 0.5) - 1
    test: PairedTest | None
    note: str = ""


def kind_of(model: str) -> str:
    """``baseline`` for :data:`recsys.models.BASELINES` (lr, dnn, din), else ``ours`` (MARN and its ablations)."""
    return "baseline" if model in BASELINES else "ours"


def too_small(segment: dict[str, Any], min_rows: int) -> bool:
    """Whether a segment's metrics are withheld: it records fewer than ``min_rows`` rows (``n``)."""
    n = segment.get("n")
    return n is not None and n < min_rows


def segment_rows(tests: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per segment over several evaluations' segments (the fewest; segments without ``n`` left out)."""
    rows: dict[str, int] = {}
    for t in tests:
        for name, values in t.items():
            if values.get("n") is not None:
                rows[name] = min(rows.get(name, int(values["n"])), int(values["n"]))
    return rows


def _segment_stats(tests: list[dict[str, Any]], min_rows: int = MIN_ROWS) -> dict[str, dict[str, Stat]]:
    """Mean ± std per segment and metric; a segment below ``min_rows`` rows gets empty stats (shown as its count)."""
    names = list(dict.fromkeys(name for t in tests for name in t))
    return {
        name: {
            m: Stat.of([t[name].get(m) for t in tests if name in t and not too_small(t[name], min_rows)])
            for m in METRICS
        }
        for name in names
    }


def test_evaluations(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """The test evaluations of the successful runs among ``records``, in order."""
    return [r.test for r in records if r.status == "ok" and r.test is not None]


def summarize_runs(records: Sequence[RunRecord], min_rows: int = MIN_ROWS) -> dict[str, ModelSummary]:
    """One summary per model of ``records``, in order (segments below ``min_rows`` test rows: no metrics)."""
    out: dict[str, ModelSummary] = {}
    for rec in records:
        s = out.setdefault(rec.model, ModelSummary(rec.model, kind_of(rec.model), 0, 0))
        s.n_runs += 1
        if rec.status == "ok":
            s.n_ok += 1
        else:
            s.errors.append(f"seed {rec.seed}: {rec.error}")
    for model, s in out.items():
        ok = [r for r in records if r.model == model and r.status == "ok"]
        tests = [test["segments"] for test in test_evaluations(ok)]
        s.segments = _segment_stats(tests, min_rows)
        s.rows = segment_rows(tests)
        s.samples_per_s = Stat.of([r.train_samples_per_s for r in ok])
    return out


def summarize_oracle(records: Sequence[RunRecord], min_rows: int = MIN_ROWS) -> ModelSummary | None:
    """The oracle (true click probabilities) on the test split: the same for every run."""
    oracles = [test["oracle"] for test in test_evaluations(records) if test.get("oracle")]
    if not oracles:
        return None
    return ModelSummary(
        "oracle", "oracle", 1, 1, _segment_stats([oracles[0]], min_rows), rows=segment_rows([oracles[0]])
    )


def epoch_cap(record: RunRecord, default: int) -> int:
    """The most epochs ``record``'s run could train: its config's ``train.epochs`` (``default`` without one)."""
    return int(((record.config or {}).get("train") or {}).get("epochs") or default)


def not_converged(records: Sequence[RunRecord], default_cap: int) -> list[str]:
    """Finished runs whose best epoch is the epoch cap: validation AUC still rose when training stopped."""
    return [
        r.name
        for r in records
        if r.status == "ok" and r.best_epoch is not None and r.best_epoch >= epoch_cap(r, default_cap)
    ]


def summarize_peer(peer: Peer) -> ModelSummary:
    """A peer's row: its runs' metrics (the ``all`` segment and any others it reports)."""
    tests = [{"all": run.test, **run.segments} for run in peer.runs]
    return ModelSummary(
        peer.model,
        "peer",
        len(peer.runs),
        len(peer.runs),
        _segment_stats(tests),
        Stat.of([run.train_samples_per_s for run in peer.runs]),
    )


def best_baseline(summaries: dict[str, ModelSummary]) -> str | None:
    """The baseline with the highest mean test AUC (None when no baseline has a successful run)."""
    scored = [
        (s.segments["all"]["auc"].mean, name)
        for name, s in summaries.items()
        if s.kind == "baseline" and "all" in s.segments and s.segments["all"]["auc"].n
    ]
    return max(scored)[1] if scored else None


def aligned(frames: list[pl.DataFrame]) -> bool:
    """Whether every predictions frame covers the same (user, item, label) rows in the same order.

    Peers' frames may lack ``item_id``; then users and labels are compared.
    """
    keys = ["user_id", "label"] + (["item_id"] if all("item_id" in f.columns for f in frames) else [])
    return all(f.height == frames[0].height and f.select(keys).equals(frames[0].select(keys)) for f in frames[1:])


def gains(
    summaries: dict[str, ModelSummary],
    predictions: dict[str, list[pl.DataFrame]],
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Gain]:
    """Gain of every other model (and peer) over the best baseline, with a paired bootstrap where possible."""
    base = best_baseline(summaries)
    if base is None:
        return []
    base_auc = summaries[base].segments["all"]["auc"].mean
    out = []
    for name, s in summaries.items():
        if name == base or s.kind == "oracle" or "all" not in s.segments or not s.segments["all"]["auc"].n:
            continue
        auc = s.segments["all"]["auc"].mean
        rela = (auc - 0.5) / (base_auc - 0.5) - 1 if base_auc != 0.5 else float("nan")
        test, note = None, ""
        frames = predictions.get(name, []) + predictions.get(base, [])
        if not predictions.get(name):
            note = "no row-level predictions: no paired test"
        elif not aligned(frames):
            note = "test rows differ between runs: no paired test"
        else:
            ref = frames[0]
            test = paired_bootstrap_auc(
                ref["user_id"].to_numpy(),
                ref["label"].to_numpy(),
                [f["prob"].to_numpy() for f in predictions[name]],
                [f["prob"].to_numpy() for f in predictions[base]],
                n_boot=n_boot,
                seed=seed,
            )
        out.append(Gain(name, base, auc - base_auc, rela, test, note))
    return out


def mean_attention(runs: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Average several runs' modal attention summaries (same modalities; None: a run without), overall
    and per category."""
    summaries = [s for s in runs if s]
    if not summaries:
        return None
    mods = summaries[0]["modalities"]

    def avg(weights: list[dict[str, float]]) -> dict[str, float]:
        return {m: Stat.of([w.get(m) for w in weights]).mean for m in mods}

    out: dict[str, Any] = {"modalities": mods, "overall": avg([s["overall"] for s in summaries])}
    cats = [s["by_category"] for s in summaries if s.get("by_category")]
    if cats:
        values = list(dict.fromkeys(v for c in cats for v in c["values"]))
        out["by_category"] = {
            "field": cats[0]["field"],
            "values": {
                v: {
                    "n": cats[0]["values"].get(v, {}).get("n", 0),
                    "weights": avg([c["values"][v]["weights"] for c in cats if v in c["values"]]),
                }
                for v in values
            },
        }
    return out
