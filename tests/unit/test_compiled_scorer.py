"""The compiled scorer (serve.scorer onnx): the same probabilities as the eager model, a verified artefact."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny import make_tiny

import serving.model
from recsys.checkpoint import save_checkpoint
from recsys.config import ServeConfig
from recsys.errors import ConfigError, RecsysError
from recsys.models import build_model
from recsys.modules.sequence import AttentionScorer
from serving.compiled import ARTEFACT, ARTEFACT_META, FoldedAttentionScorer
from serving.model import ServedModel, ServingError, export_scorer
from serving.settings import ServeSettings

#: configs/default.yaml's model (MARN, DIN attention, user tower), configs/ml-100k-mm.yaml's (content added to
#: the ids through a content gate, SimTier 20 bins), MARN's attention GRU, and the baselines.
VARIANTS = {
    "marn-default": {"name": "marn", "user_tower": True},
    "marn-ml-100k-mm": {
        "name": "marn",
        "id_path": "beside",
        "content_merge": "add",
        "content_gate": True,
        "simtier_bins": 20,
    },
    "marn-apgru": {"name": "marn", "sequence": "apgru"},
    "din-simtier": {"name": "din", "simtier_bins": 4},
    "lr": {"name": "lr"},
}


def tiny_checkpoint(path: Path, seed: int = 0, **model: object) -> Path:
    """A checkpoint of a tiny model with random weights (a content gate at 0.5, so content moves the scores)."""
    tiny = make_tiny(**model)
    torch.manual_seed(seed)
    built = build_model(tiny.config.model, tiny.feature_map, tiny.table.dims())
    with torch.no_grad():
        for name, p in built.named_parameters():
            if name.endswith("gate"):
                p.fill_(0.5)
    return save_checkpoint(path, built.eval(), tiny.config, tiny.feature_map, tiny.table)


def requests(ids: list[int], max_history: int) -> list[tuple[list[int], list[int], dict]]:
    """(history, candidates, context): no history, short, full and longer than max_history; 1 to all items."""
    rng = np.random.default_rng(1)
    out = []
    for length in (0, 1, 3, max_history, max_history + 4):
        history = [int(i) for i in rng.choice(ids, length)]
        for n in (1, 7, len(ids)):
            context = {"device": str(rng.choice(["mobile", "desktop", "never-seen"])), "price": float(rng.normal(10))}
            out.append((history, [int(i) for i in rng.permutation(ids)[:n]], context))
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onnx_scorer_gives_the_eager_probabilities(variant: str, tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / variant, **VARIANTS[variant])
    eager = ServedModel.load(path)
    compiled = ServedModel.load(path, scorer="onnx")
    assert eager.scorer_name == "eager" and compiled.scorer_name == "onnx"
    ids = list(eager.catalogue.row_of)
    worst = 0.0
    for user_id in (100, 105, -1):
        user = eager.user_features(user_id, {})
        for history, candidates, context in requests(ids, eager.feature_map.max_history):
            ctx = eager.context_features(context)
            a = eager.score(user, ctx, history, candidates)
            b = compiled.score(user, ctx, history, candidates)
            assert a.shape == b.shape == (len(candidates),)
            worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= 1e-5, worst


def test_folded_attention_unit_equals_the_unit() -> None:
    torch.manual_seed(0)
    unit = AttentionScorer(16).eval()
    history, target = torch.randn(1, 9, 16), torch.randn(5, 16)
    with torch.no_grad():
        expected = unit(history, target)
        folded = FoldedAttentionScorer(unit)
        assert torch.allclose(folded(history, target), expected, atol=1e-5)
        batched = torch.randn(5, 9, 16)  # training shapes: the unit itself
        assert torch.equal(folded(batched, target), unit(batched, target))


def test_export_writes_an_artefact_that_serves_and_a_corrupt_one_is_refused(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "ckpt", **VARIANTS["marn-default"])
    artefact, worst = export_scorer(path)
    assert artefact == path / ARTEFACT and worst <= 1e-5
    meta = json.loads((path / ARTEFACT_META).read_text())
    assert meta["max_history"] == 5 and len(meta["sha256"]) == 64
    served = ServedModel.load(path, scorer="onnx")
    assert served.compiled is not None and served.compiled.origin == str(artefact)

    data = bytearray(artefact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artefact.write_bytes(bytes(data))
    with pytest.raises(ServingError) as err:
        ServedModel.load(path, scorer="onnx")
    assert err.value.status == 422 and err.value.field == "scorer"
    assert ARTEFACT in err.value.message and "sha256 differs" in err.value.message
    assert "\n" not in err.value.message
    assert ServedModel.load(path).scorer_name == "eager"  # the eager scorer never reads it


def test_an_artefact_of_other_weights_is_refused(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "a", **VARIANTS["marn-default"])
    other = tiny_checkpoint(tmp_path / "b", seed=1, **VARIANTS["marn-default"])
    export_scorer(other)
    for name in (ARTEFACT, ARTEFACT_META):
        (path / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ServingError, match="other weights"):
        ServedModel.load(path, scorer="onnx")


def test_serve_scorer_is_checked_by_the_strict_config(tmp_path: Path) -> None:
    assert ServeConfig().scorer == "eager"
    assert ServeSettings.resolve(tmp_path, ServeConfig(), {"scorer": "onnx"}).scorer == "onnx"
    with pytest.raises(ConfigError, match=r"^serve\.scorer: .*'eager' or 'onnx'"):
        ServeSettings.resolve(tmp_path, ServeConfig(), {"scorer": "tensorrt"})


def test_without_onnx_runtime_or_agreement_the_model_is_scored_eagerly_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The eager fallback: ONNX Runtime not importable on this host, or a load-time export that does not score
    the canaries as the model does."""
    path = tiny_checkpoint(tmp_path / "ckpt", **VARIANTS["marn-default"])
    monkeypatch.setattr(logging.getLogger("recsys"), "propagate", True)  # caplog listens on the root logger
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="recsys.serving"):
        m.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
        assert ServedModel.load(path, scorer="onnx").scorer_name == "eager"
        # `recsys export` cannot check an artefact without the runtime: one-line error, nothing written
        with pytest.raises(RecsysError, match="ONNX Runtime cannot be imported.*nothing written"):
            export_scorer(path)
        assert not (path / ARTEFACT).exists()
    assert "ONNX Runtime cannot be imported" in caplog.text and "scoring with the eager model" in caplog.text

    caplog.clear()
    monkeypatch.setattr(serving.model, "TOLERANCE", -1.0)  # no difference, not even 0, is within it
    with caplog.at_level(logging.WARNING, logger="recsys.serving"):
        assert ServedModel.load(path, scorer="onnx").scorer_name == "eager"
    assert "differs from the eager model" in caplog.text and "scoring with the eager model" in caplog.text
