"""The scorer's per-request part compiled with ONNX Runtime (``serve.scorer: onnx``).

What a request costs after the item cache (:mod:`serving.model`) is the user side, the attention over
the history and the prediction head: ``model.score_candidates`` for one user against B cached
candidate representations. This module exports exactly that call (through :class:`ScoringGraph`,
the model's own code) to ONNX with the history padded to ``max_history`` plus a mask, so every shape
but the number of candidates is static, and runs it with ONNX Runtime on one CPU thread.

Measured against TorchScript and ``torch.compile`` on the same graph (benchmarks/RESULTS.md), ONNX
Runtime was the fastest. Before export, DIN's attention unit gets an inference form
(:class:`FoldedAttentionScorer`, the same function): its first layer on ``[h, t, h - t, h * t]``
becomes one matrix product of the candidates with per-request weights, so the (B, L, H) partial
sums are never written to memory.

The artefact is ``scorer.onnx`` plus ``scorer.json`` (its sha256, the sha256 of the ``model.pt`` it
was exported from, ``max_history``) inside the checkpoint directory, written by ``recsys export`` or
not at all: without it the service exports at load time, in memory. Either way the compiled scorer
is checked against the eager model on canary requests (within :data:`TOLERANCE`) before it serves.
A present artefact that is corrupt, stale or wrong is refused (:class:`ScorerError`; the service
answers 422 and keeps the model it serves) like a bad checkpoint; a model the exporter cannot handle
is scored eagerly, with one log line saying why.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.checkpoint import Checkpoint
from recsys.errors import RecsysError
from recsys.features.feature_map import FeatureMap
from recsys.models import ScoringModel, UserSide
from recsys.modules.sequence import AttentionScorer

log = logging.getLogger("recsys.serving")

#: Largest difference between compiled and eager click probabilities accepted when a scorer is checked.
TOLERANCE = 1e-5
ARTEFACT = "scorer.onnx"
ARTEFACT_META = "scorer.json"
#: ONNX inputs, in the order of :meth:`ScoringGraph.forward`.
INPUTS = ("user", "context", "numeric", "history", "history_mask", "candidates")
OPSET = 17


class ScorerError(RecsysError):
    """A compiled scorer that must not serve: its artefact is corrupt or stale, or it disagrees with the model."""


#: Activations that act on each value alone (PReLU's slope is per unit, so it is not one of them).
ELEMENTWISE = (nn.Sigmoid, nn.ReLU, nn.Tanh, nn.GELU, nn.LeakyReLU, nn.Dropout)


class FoldedAttentionScorer(nn.Module):
    """DIN's activation unit (:class:`~recsys.modules.sequence.AttentionScorer`, its weights) for one user's
    history shared by every candidate, with the first layer as one product of the candidates:

        W [h; t; h - t; h * t] + b = ((W_p ⊙ h) + W_t - W_d) t + (W_h + W_d) h + b

    per history item h, so (B, D) candidates times an (L·H, D) per-request matrix give the (B, L·H) hidden
    layer with the history part as its bias. Other shapes (training batches) use the unit as it is.
    """

    def __init__(self, scorer: AttentionScorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(1, L, D) history and (B, D) targets -> (B, L) relevance logits."""
        if history.shape[0] != 1:
            return self.scorer(history, target)
        layers = self.scorer.mlp.layers
        assert isinstance(layers, nn.Sequential)
        first, rest = layers[0], layers[1:]
        assert isinstance(first, nn.Linear) and isinstance(rest, nn.Sequential)
        w_h, w_t, w_d, w_p = first.weight.split(history.shape[-1], dim=1)  # (H, D) each
        h = history[0]  # (L, D)
        length, width = h.shape
        hidden = w_p.shape[0]
        weight = (w_p.unsqueeze(0) * h.unsqueeze(1) + (w_t - w_d).unsqueeze(0)).reshape(length * hidden, width)
        bias = F.linear(h, w_h + w_d, first.bias).reshape(length * hidden)
        out = F.linear(target, weight, bias)  # (B, L * H)
        # Elementwise activations before the reshape: ONNX Runtime then fuses them into the product.
        k = 0
        while k < len(rest) and isinstance(rest[k], ELEMENTWISE):
            out = rest[k](out)
            k += 1
        b = target.shape[0]
        return rest[k:](out.reshape(b * length, hidden)).reshape(b, length)


class ScoringGraph(nn.Module):
    """What is compiled: click probabilities (B,) of candidate reps (B, D) for one user's side, through the
    model's own ``score_candidates``; inputs user (1, U), context (1, C), numeric (1, K), history (1, L, D),
    history_mask (1, L) and candidates (B, D)."""

    def __init__(self, model: ScoringModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        user: torch.Tensor,
        context: torch.Tensor,
        numeric: torch.Tensor,
        history: torch.Tensor,
        history_mask: torch.Tensor,
        candidates: torch.Tensor,
    ) -> torch.Tensor:
        side = UserSide(user, context, numeric, history, history_mask)
        return torch.sigmoid(self.model.score_candidates(side, candidates))


def inference_graph(model: ScoringModel) -> ScoringGraph:
    """A copy of ``model`` (eval mode) with every DIN attention unit in its inference form, as a ScoringGraph."""
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, AttentionScorer):
                setattr(module, name, FoldedAttentionScorer(child))
    return ScoringGraph(folded).eval()


def example_inputs(feature_map: FeatureMap, width: int, max_history: int) -> tuple[torch.Tensor, ...]:
    """Inputs of the right dtypes and shapes for :class:`ScoringGraph` (what the exporter traces), 2 candidates."""
    n_user = len(feature_map.by("user", "categorical"))
    n_context = len(feature_map.by("context", "categorical"))
    n_numeric = len(feature_map.by("context", "numeric"))
    return (
        torch.zeros(1, n_user, dtype=torch.long),
        torch.zeros(1, n_context, dtype=torch.long),
        torch.zeros(1, n_numeric, dtype=torch.float32),
        torch.zeros(1, max_history, width, dtype=torch.float32),
        torch.zeros(1, max_history, dtype=torch.bool),
        torch.zeros(2, width, dtype=torch.float32),
    )


def export_onnx(model: ScoringModel, feature_map: FeatureMap, width: int, fold: bool = True) -> bytes:
    """The ONNX graph of ``model``'s per-request part (history padded to ``feature_map.max_history``), in its
    inference form (``fold``) or as trained."""
    graph = inference_graph(model) if fold else ScoringGraph(model).eval()
    with tempfile.TemporaryDirectory(prefix="recsys-export-") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks that hold for these static shapes
        torch.onnx.export(
            graph,
            example_inputs(feature_map, width, feature_map.max_history),
            Path(tmp) / ARTEFACT,
            dynamo=False,
            input_names=list(INPUTS),
            output_names=["probs"],
            dynamic_axes={"candidates": {0: "candidates"}, "probs": {0: "candidates"}},
            opset_version=OPSET,
        )
        return (Path(tmp) / ARTEFACT).read_bytes()


class CompiledScorer:
    """An ONNX Runtime session of :class:`ScoringGraph` on one thread; scores one user against B candidates."""

    name = "onnx"

    def __init__(self, onnx_model: bytes, max_history: int, origin: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.used = {i.name for i in self.session.get_inputs()}  # the exporter drops unused inputs
        self.max_history = max_history
        self.origin = origin  # "exported at load time" or the artefact's path

    def __call__(
        self,
        user: np.ndarray,
        context: tuple[np.ndarray, np.ndarray],
        history: np.ndarray,
        candidates: np.ndarray,
    ) -> np.ndarray:
        """(B,) probabilities for user fields (U,), context ((C,), (K,)), history reps (L, D) oldest first with
        L <= max_history (left-padded here), and candidate reps (B, D)."""
        length, width = history.shape
        padded = np.zeros((1, self.max_history, width), np.float32)
        mask = np.zeros((1, self.max_history), bool)
        if length:
            padded[0, -length:] = history
            mask[0, -length:] = True
        categorical, numeric = context
        feed = {
            "user": user[None],
            "context": categorical[None],
            "numeric": numeric[None].astype(np.float32, copy=False),
            "history": padded,
            "history_mask": mask,
            "candidates": np.ascontiguousarray(candidates, dtype=np.float32),
        }
        out = self.session.run(None, {k: v for k, v in feed.items() if k in self.used})[0]
        return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- the artefact


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_digest(checkpoint: Checkpoint) -> str:
    return str(checkpoint.meta.get("files", {}).get("model.pt", ""))


def write_artefact(checkpoint: Checkpoint, width: int) -> Path:
    """Export ``checkpoint``'s scorer and write ``scorer.onnx`` + ``scorer.json`` into its directory (atomically,
    the ONNX file first); the artefact's path."""
    model = checkpoint.model
    assert isinstance(model, ScoringModel)
    onnx_model = export_onnx(model, checkpoint.feature_map, width)
    meta = {
        "format": "onnx",
        "opset": OPSET,
        "sha256": _sha256(onnx_model),
        "model_sha256": _model_digest(checkpoint),
        "max_history": checkpoint.feature_map.max_history,
        "width": width,
    }
    for name, data in ((ARTEFACT, onnx_model), (ARTEFACT_META, json.dumps(meta, indent=1).encode())):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=checkpoint.path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, checkpoint.path / name)
    return checkpoint.path / ARTEFACT


def read_artefact(checkpoint: Checkpoint, width: int | None = None) -> bytes | None:
    """The checkpoint's exported scorer, checked against ``scorer.json`` and the checkpoint (and the width of
    its cached item representations, when given): None when there is none; :class:`ScorerError` naming the
    file and the reason when it is corrupt or stale."""
    path, meta_path = checkpoint.path / ARTEFACT, checkpoint.path / ARTEFACT_META
    if not path.exists() and not meta_path.exists():
        return None

    def refuse(reason: str) -> ScorerError:
        return ScorerError(f"{path}: {reason}; run `recsys export {checkpoint.path}` again")

    try:
        data = path.read_bytes()
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"cannot read the exported scorer ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != "onnx":
        raise refuse(f"{ARTEFACT_META} is not an ONNX scorer description")
    if meta.get("sha256") != _sha256(data):
        raise refuse(f"content does not match {ARTEFACT_META} (sha256 differs): truncated, corrupt or modified")
    if meta.get("model_sha256") != _model_digest(checkpoint):
        raise refuse("exported from other weights than this checkpoint's model.pt")
    if meta.get("max_history") != checkpoint.feature_map.max_history or width not in (None, meta.get("width")):
        raise refuse("exported for other shapes than this checkpoint's (max_history, item representation width)")
    return data


def runtime_missing() -> str | None:
    """Why ONNX Runtime cannot be imported on this host, or None when it can."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def compile_scorer(checkpoint: Checkpoint, width: int) -> CompiledScorer | None:
    """The compiled scorer of ``checkpoint``: from its artefact when it has one (a bad one raises
    :class:`ScorerError`), else exported now; None, with one log line, when the model cannot be exported or
    ONNX Runtime cannot be imported on this host."""
    max_history = checkpoint.feature_map.max_history
    data = read_artefact(checkpoint, width)
    missing = runtime_missing()
    if missing is not None:  # no runtime on this host: the artefact may be fine, it cannot run here
        log.warning("serve.scorer onnx: ONNX Runtime cannot be imported (%s); scoring with the eager model", missing)
        return None
    if data is not None:
        try:
            return CompiledScorer(data, max_history, str(checkpoint.path / ARTEFACT))
        except Exception as exc:  # onnxruntime raises its own exception types for an invalid graph
            message = str(exc).splitlines()[0][:300]
            raise ScorerError(f"{checkpoint.path / ARTEFACT}: not a loadable ONNX graph ({message})") from None
    model = checkpoint.model
    assert isinstance(model, ScoringModel)
    try:
        return CompiledScorer(export_onnx(model, checkpoint.feature_map, width), max_history, "exported at load time")
    except Exception as exc:  # the exporter's failures are many types; any of them means: score eagerly
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log.warning(
            "serve.scorer onnx: cannot compile model %r (%s: %s); scoring with the eager model",
            checkpoint.config.model.name,
            type(exc).__name__,
            reason,
        )
        return None


def canary_requests(catalogue_ids: list[int], max_history: int) -> Iterator[tuple[list[int], list[int]]]:
    """(history, candidates) pairs that exercise every shape a request has: no history, a short one, a full
    one; one candidate and many."""
    ids = catalogue_ids[: max(64, max_history + 8)]
    for history in ([], ids[:3], ids[-max_history:]):
        yield history, ids[:1]
        yield history, ids[:64]
