"""The comparison report: tables, gains, plots and the run list, written as Markdown, HTML and JSON."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from recsys.config import ExperimentConfig
from recsys.evaluation import json_safe
from recsys.models import BASELINES
from recsys.reports import plots
from recsys.reports.peers import Peer, load_peer_predictions
from recsys.reports.render import Code, Document, Heading, Image, Paragraph, Table, write_report
from recsys.reports.runs import RunRecord, load_predictions
from recsys.reports.summary import (
    METRICS,
    Gain,
    ModelSummary,
    Stat,
    best_baseline,
    epoch_cap,
    gains,
    mean_attention,
    not_converged,
    summarize_oracle,
    summarize_peer,
    summarize_runs,
    test_evaluations,
    too_small,
)


class ComparisonSpec(Protocol):
    """What the report reads of a comparison's specification (``training.compare.CompareSpec`` has it)."""

    out_dir: Path
    models: list[str]
    seeds: list[int]
    data_dir: Path | None
    n_boot: int
    command: str  # the command line, quoted in the report
    min_rows: int  # segments with fewer test rows show their count, no metrics


METRIC_TITLES = {
    "auc": "AUC",
    "gauc": "GAUC",
    "logloss": "logloss (lower is better)",
    "ratio": "calibration: mean predicted / observed CTR (1 is perfect)",
}


def _cell(stats: dict[str, Stat], metric: str, digits: int = 4, rows: int | None = None) -> str:
    """A metric's mean ± std; for a segment whose metrics are withheld (too few rows) its row count."""
    if metric not in stats:
        return "-"
    if stats[metric].n == 0 and rows is not None:
        return f"({rows} rows)"
    return stats[metric].format(digits)


def _p(value: float) -> str:
    return "-" if value is None or math.isnan(value) else (f"{value:.3f}" if value >= 0.001 else "<0.001")


def _gain_cells(gain: Gain | None) -> list[str]:
    if gain is None:
        return ["-", "-", "-", "-"]
    t = gain.test
    ci = f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]" if t and not math.isnan(t.ci_low) else "-"
    return [f"{gain.diff:+.4f}", f"{100 * gain.rela_impr:+.1f}%", ci, _p(t.p_value) if t else gain.note or "-"]


def _summary_table(rows: list[ModelSummary], by_model: dict[str, Gain], base: str | None) -> Table:
    header = [
        "model",
        "kind",
        "runs ok",
        "AUC",
        "GAUC",
        "logloss",
        "pred/obs CTR",
        "train samples/s",
        f"ΔAUC vs {base or 'best baseline'}",
        "RelaImpr",
        "95% CI of ΔAUC",
        "p (paired bootstrap)",
    ]
    table = []
    for s in rows:
        runs = "-" if s.kind == "oracle" else f"{s.n_ok}/{s.n_runs}"
        if s.kind != "oracle" and s.n_ok == 0:
            table.append([s.model, s.kind, runs, *["failed"] * 5, *["-"] * 4])
            continue
        stats = s.segments.get("all", {})
        gain = ["(best baseline)", "", "", ""] if s.model == base else _gain_cells(by_model.get(s.model))
        table.append(
            [
                s.model,
                s.kind,
                runs,
                _cell(stats, "auc"),
                _cell(stats, "gauc"),
                _cell(stats, "logloss"),
                _cell(stats, "ratio", 3),
                s.samples_per_s.format(0),
                *gain,
            ]
        )
    return Table(header, table)


def _verdict(gain_list: list[Gain], base: str | None, summaries: dict[str, ModelSummary]) -> str:
    if base is None:
        return f"No baseline ({', '.join(BASELINES)}) finished, so there is no gain over a baseline to report."
    ours = [g for g in gain_list if summaries[g.model].kind == "ours"]
    if not ours:
        return f"The best baseline is {base}; no model of ours finished."
    lines = []
    for g in ours:
        sig = g.test is not None and not math.isnan(g.test.p_value) and g.test.p_value < 0.05
        word = "above" if g.diff > 0 else "below" if g.diff < 0 else "level with"
        lines.append(
            f"{g.model} is {word} {base} by {abs(g.diff):.4f} test AUC"
            + (f" (p={_p(g.test.p_value)}, {'significant' if sig else 'not significant'} at 0.05)" if g.test else "")
        )
    return f"Best baseline: {base}. " + "; ".join(lines) + "."


def _segment_tables(rows: list[ModelSummary], min_rows: int) -> list[Table]:
    segments = list(dict.fromkeys(seg for s in rows if s.kind != "peer" for seg in s.segments))

    def cell(s: ModelSummary, seg: str, metric: str) -> str:
        n = s.rows.get(seg)
        small = n if n is not None and n < min_rows else None
        return _cell(s.segments.get(seg, {}), metric, 3 if metric == "ratio" else 4, small)

    return [
        Table(
            ["model", *segments],
            [[s.model, *[cell(s, seg, metric) for seg in segments]] for s in rows if s.segments],
            caption=METRIC_TITLES[metric],
        )
        for metric in METRICS
    ]


def _segment_sizes(records: list[RunRecord], min_rows: int) -> Table | None:
    tests = test_evaluations(records)
    if not tests:
        return None
    segments = tests[0]["segments"]
    return Table(
        ["segment", "test rows", "observed CTR"],
        [
            [
                name,
                str(int(m["n"])) + (f" (< {min_rows}: no metrics)" if too_small(m, min_rows) else ""),
                f"{m['mean_label']:.4f}",
            ]
            for name, m in segments.items()
        ],
    )


def _attention_blocks(records: list[RunRecord], out_dir: Path) -> list:
    attention = {}
    for model in dict.fromkeys(r.model for r in records):
        summary = mean_attention(
            [test.get("modal_attention") for test in test_evaluations([r for r in records if r.model == model])]
        )
        if summary:
            attention[model] = summary
    if not attention:
        return [Paragraph("No model in this comparison has modal attention.")]
    blocks: list = [
        Paragraph(
            "Modal attention, read through what it weights: each modality's share of the candidate's "
            "fused item feature, |a_m * s_m|_1 / sum_k |a_k * s_k|_1 (a_m = tanh(W_m s_m + b_m), the "
            "paper's element-wise weights; their raw mean saturates near 1). Mean over the test "
            "candidates that have the modality, averaged over seeds; per value of the first item "
            "categorical feature."
        )
    ]
    for model, att in attention.items():
        mods = att["modalities"]
        by = att.get("by_category")
        total = str(sum(e["n"] for e in by["values"].values())) if by else ""
        rows = [["all", total, *[f"{att['overall'][m]:.3f}" for m in mods]]]
        if by:
            rows += [
                [f"{by['field']}={v}", str(e["n"]), *[f"{e['weights'][m]:.3f}" for m in mods]]
                for v, e in list(by["values"].items())[:20]
            ]
        blocks.append(Table(["candidates", "rows", *mods], rows, caption=model))
    path = plots.attention_plot(attention, out_dir / "plots" / "attention.png")
    if path:
        blocks.append(Image("plots/attention.png", "Modal attention share per modality and item category"))
    return blocks


def _plot_blocks(records: list[RunRecord], predictions: dict[str, list[pl.DataFrame]], out_dir: Path) -> list:
    curves = {}
    seeds = {r.model: r.seed for r in reversed(records) if r.status == "ok"}
    for model, frames in predictions.items():
        label = f"{model} (seed {seeds[model]})" if model in seeds else f"{model} (first run)"
        curves[label] = (frames[0]["label"].to_numpy(), frames[0]["prob"].to_numpy())
    oracle = next((f[0] for f in predictions.values() if "true_prob" in f[0].columns), None)
    if oracle is not None:
        curves["oracle (true_prob)"] = (oracle["label"].to_numpy(), oracle["true_prob"].to_numpy())
    blocks: list = []
    if curves:
        plots.roc_plot(curves, out_dir / "plots" / "roc.png")
        plots.calibration_plot(curves, out_dir / "plots" / "calibration.png")
        blocks += [
            Image("plots/roc.png", "ROC curves on the test split (first seed of each model)"),
            Image("plots/calibration.png", "Calibration curves on the test split (first seed of each model)"),
        ]
    histories: dict[str, list[list[dict]]] = {}
    for r in records:
        if r.status == "ok" and r.history:
            histories.setdefault(r.model, []).append(r.history)
    if histories:
        plots.val_auc_plot(histories, out_dir / "plots" / "val_auc.png")
        blocks.append(Image("plots/val_auc.png", "Validation AUC per epoch"))
    return blocks or [Paragraph("No run finished: nothing to plot.")]


def _runs_table(records: list[RunRecord], epochs: int) -> Table:
    rows = []
    capped = set(not_converged(records, epochs))
    for r in records:
        best_val = max((h.get("val_auc", float("nan")) for h in r.history), default=float("nan"))
        test_auc = r.test["segments"]["all"]["auc"] if r.status == "ok" and r.test is not None else None
        error = (r.error or "").strip().splitlines()[0][:300] if r.error else ""
        rows.append(
            [
                r.name,
                r.status,
                str(r.best_epoch or "-") + (f" of {epoch_cap(r, epochs)}: not converged" if r.name in capped else ""),
                "-" if math.isnan(best_val) else f"{best_val:.4f}",
                "-" if test_auc is None else f"{test_auc:.4f}",
                f"{r.train_samples_per_s:,.0f}" if r.train_samples_per_s else "-",
                f"{r.seconds / 60:.1f}",
                error,
            ]
        )
    return Table(
        ["run", "status", "best epoch", "best val AUC", "test AUC", "train samples/s", "minutes", "error"], rows
    )


def write_compare_report(
    spec: ComparisonSpec,
    config: ExperimentConfig,
    records: list[RunRecord],
    peers: list[Peer],
) -> tuple[Path, Path, Path]:
    """Write report.md, report.html, plots/ and results.json into ``spec.out_dir``."""
    out = spec.out_dir
    (out / "plots").mkdir(parents=True, exist_ok=True)
    summaries = summarize_runs(records, spec.min_rows) | {p.model: summarize_peer(p) for p in peers}
    predictions = load_predictions(out, records)
    predictions |= {p.model: frames for p in peers if (frames := load_peer_predictions(p))}
    base = best_baseline(summaries)
    gain_list = gains(summaries, predictions, n_boot=spec.n_boot)
    oracle = summarize_oracle(records, spec.min_rows)
    capped = not_converged(records, config.train.epochs)
    rows = list(summaries.values()) + ([oracle] if oracle else [])
    n_ok = sum(r.status == "ok" for r in records)
    n_users = next((g.test.n_users for g in gain_list if g.test), None)

    doc = Document("Model comparison")
    doc.add(
        Paragraph(
            f"{len(records)} run(s): models {', '.join(spec.models)} × seeds {', '.join(map(str, spec.seeds))}; "
            f"{n_ok} finished, {len(records) - n_ok} failed. Test split of "
            f"{shown_path(spec.data_dir or config.data.path)}; {config.train.epochs} epoch(s) at most, "
            f"early stopping patience {config.train.early_stopping_patience}, best checkpoint by validation AUC. "
            f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}."
        ),
        Code(spec.command or "recsys compare"),
        Heading("Summary (test split, all rows)"),
        _summary_table(rows, {g.model: g for g in gain_list}, base),
        Paragraph(_verdict(gain_list, base, summaries)),
        Paragraph(
            "Mean ± sample std over seeds. ΔAUC: difference of mean test AUC to the best baseline (by mean "
            f"test AUC among {', '.join(BASELINES)}); RelaImpr = (AUC − 0.5) / (AUC_baseline − 0.5) − 1. "
            "The 95% CI and p-value come from a paired bootstrap over "
            f"{n_users or 'the'} test users ({spec.n_boot} resamples, "
            "every seed of both models scored on the same resample); they measure user sampling noise, "
            "the ± std the seed-to-seed spread."
        ),
        Heading("Per segment"),
        Paragraph(
            f"Segments with fewer than {spec.min_rows} test rows show their row count instead of metrics "
            "(an AUC of a handful of rows says nothing)."
        ),
    )
    sizes = _segment_sizes(records, spec.min_rows)
    if sizes:
        doc.add(sizes)
    doc.add(
        *_segment_tables(rows, spec.min_rows),
        Heading("Modal attention"),
        *_attention_blocks(records, out),
        Heading("Plots"),
        *_plot_blocks(records, predictions, out),
        Heading("Runs"),
        _runs_table(records, config.train.epochs),
    )
    if capped:
        doc.add(
            Paragraph(
                f"{len(capped)} of {len(records)} run(s) had their best validation AUC at the last epoch allowed "
                f"(not converged: {', '.join(capped)}); more epochs may change their numbers."
            )
        )
    if peers:
        doc.add(
            Heading("Peers"),
            Table(["model", "source", "file", "runs"], [[p.model, p.source, p.file, str(len(p.runs))] for p in peers]),
        )
    md, page = write_report(doc, out)

    results = {
        "command": spec.command,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "data_dir": shown_path(spec.data_dir or config.data.path),
        "models": spec.models,
        "seeds": spec.seeds,
        "config": config.model_dump(mode="json"),  # as the runs used it (--epochs, --workers applied)
        "min_rows": spec.min_rows,
        "not_converged": capped,
        "runs": [asdict(r) for r in records],
        "peers": [asdict(p) for p in peers],
        "summary": {
            s.model: {
                "kind": s.kind,
                "n_ok": s.n_ok,
                "n_runs": s.n_runs,
                "errors": s.errors,
                "samples_per_s": asdict(s.samples_per_s),
                "segments": {seg: {m: asdict(st) for m, st in ms.items()} for seg, ms in s.segments.items()},
                "rows": s.rows,
            }
            for s in rows
        },
        "best_baseline": base,
        "gains": [
            {
                "model": g.model,
                "baseline": g.baseline,
                "diff_auc": g.diff,
                "rela_impr": g.rela_impr,
                "test": g.test.to_json() if g.test else None,
                "note": g.note,
            }
            for g in gain_list
        ],
    }
    path = out / "results.json"
    path.write_text(json.dumps(_portable(json_safe(results)), indent=1, default=_json_default), encoding="utf-8")
    return md, page, path


def shown_path(path: str | Path) -> str:
    """A path as reports show it: relative to the working directory when it lies beside it (the
    project and its sibling folders), so a committed report names no machine's directories."""
    # abspath, not resolve(): a sibling folder may be a symlink (e.g. ../shared), and following it
    # would turn a path beside the project into some other machine directory.
    full = Path(os.path.abspath(path))
    base = Path(os.path.abspath(Path.cwd()))
    return os.path.relpath(full, base) if full.is_relative_to(base.parent) else str(full)


def _portable(obj: object) -> object:
    """Every absolute path string in ``obj`` through :func:`shown_path`, recursively."""
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(os.sep) and "\n" not in obj:
        return shown_path(obj)
    return obj


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
