"""Which engine runs the scorer's per-request part fastest: eager PyTorch, TorchScript, torch.compile, ONNX Runtime.

The graph is :class:`serving.compiled.ScoringGraph` of the ``serve_latency.py`` checkpoint (MARN at
configs/default.yaml sizes), the history padded to ``max_history`` (30 items, all real), 1 thread; each
engine runs it as exported/traced from the model as trained and from its inference form
(:func:`serving.compiled.inference_graph`, DIN's attention folded). The engines alternate call by call
on the same inputs; median wall ms and median thread-CPU ms per call, and the largest difference from
eager. Run:

    .venv/bin/python benchmarks/scorer_backends.py [--reps 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    import numpy as np
    import torch
    from serve_latency import make_checkpoint

    from serving.compiled import INPUTS, CompiledScorer, ScoringGraph, export_onnx, inference_graph
    from serving.model import ServedModel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=200, help="timed calls per engine at 10 and 100 candidates")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    served = ServedModel.load(make_checkpoint(Path(tempfile.mkdtemp(prefix="backends-")), 5000))
    model, fm = served.model, served.feature_map
    reps = served.catalogue.reps
    rng = np.random.default_rng(0)

    def inputs(n: int) -> tuple[torch.Tensor, ...]:
        hist = torch.from_numpy(rng.choice(np.arange(1, reps.shape[0]), fm.max_history, replace=False))
        cand = torch.from_numpy(rng.choice(np.arange(1, reps.shape[0]), n, replace=False))
        categorical, numeric = served.context_features({"hour": 12, "device": "mobile"})
        return (
            torch.from_numpy(served.user_features(3, {}))[None],
            torch.from_numpy(categorical)[None],
            torch.from_numpy(numeric)[None],
            reps[hist][None],
            torch.ones(1, fm.max_history, dtype=torch.bool),
            reps[cand],
        )

    example = inputs(100)
    engines: dict[str, Callable[..., object]] = {}
    for label, graph in (("as trained", ScoringGraph(model).eval()), ("folded", inference_graph(model))):
        engines[f"eager, {label}"] = graph
        with torch.no_grad():
            traced = torch.jit.trace(graph, example, check_trace=False)
            engines[f"TorchScript (frozen), {label}"] = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        engines[f"torch.compile (dynamic), {label}"] = torch.compile(graph, dynamic=True)
        onnx = CompiledScorer(export_onnx(model, fm, reps.shape[1], fold=label == "folded"), fm.max_history, label)

        def run_onnx(*x: torch.Tensor, session: CompiledScorer = onnx) -> object:
            feed = {k: v.numpy() for k, v in zip(INPUTS, x) if k in session.used}
            return session.session.run(None, feed)[0]

        engines[f"ONNX Runtime, {label}"] = run_onnx

    print("| engine | candidates | wall ms (median) | CPU ms (median) | max abs diff from eager |")
    print("|---|---:|---:|---:|---:|")
    for n in (10, 100, 1000):
        batch = [inputs(n) for _ in range(16)]
        calls = args.reps if n < 1000 else max(args.reps // 4, 10)
        wall: dict[str, list[float]] = {name: [] for name in engines}
        cpu: dict[str, list[float]] = {name: [] for name in engines}
        diff = dict.fromkeys(engines, 0.0)
        with torch.inference_mode():
            for i in range(calls + 5):
                x = batch[i % len(batch)]
                reference = np.asarray(engines["eager, as trained"](*x))
                for name, engine in engines.items():
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    out = np.asarray(engine(*x))
                    if i >= 5:
                        wall[name].append((time.perf_counter() - start) * 1000)
                        cpu[name].append((time.thread_time() - start_cpu) * 1000)
                    diff[name] = max(diff[name], float(np.abs(out - reference).max()))
        for name in engines:
            print(
                f"| {name} | {n} | {statistics.median(wall[name]):.3f} | {statistics.median(cpu[name]):.3f} | "
                f"{diff[name]:.1e} |"
            )


if __name__ == "__main__":
    main()
