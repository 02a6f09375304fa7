"""`recsys serve --scorer onnx` over real HTTP: the eager model's scores, across a hot swap, a corrupt exported
scorer refused (by the running service and before a service starts), and a host without ONNX Runtime served by
the eager model, saying so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import run_cli
from support.server import API_KEY, Server, perturbed_checkpoint

from recsys.checkpoint import load_checkpoint
from serving.compiled import ARTEFACT
from serving.model import ServedModel
from serving.net import free_port

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def onnx_server(trained_run, state, tmp_path_factory):
    """`recsys serve --scorer onnx` (one worker) on ``trained_run``'s checkpoint, no exported artefact: it
    compiles at load time."""
    srv = Server(trained_run.checkpoint, state, tmp_path_factory.mktemp("logs") / "serve.log", "--scorer", "onnx")
    yield srv
    srv.stop()


def assert_serves_the_eager_scores(url: str, checkpoint: Path, scorer: str = "onnx") -> None:
    """Requests with histories of 0 to max_history + 5 items and up to 150 candidates, over HTTP, score as
    the checkpoint's eager model in process (within 1e-5), and the service says it scores with ``scorer``."""
    eager = ServedModel.load(checkpoint)
    info = httpx.get(f"{url}/v1/admin/model", headers=KEY).json()
    assert info["scorer"] == scorer and info["model_version"] == eager.version, info
    assert httpx.get(f"{url}/readyz").json()["scorer"] == scorer
    ids = list(eager.catalogue.row_of)
    fields = eager.feature_map.by("context", "categorical")
    rng = np.random.default_rng(0)
    worst = 0.0
    for k, length in enumerate((0, 1, 4, eager.feature_map.max_history, eager.feature_map.max_history + 5)):
        history = [int(i) for i in rng.choice(ids, length, replace=False)]
        candidates = [int(i) for i in rng.choice(ids, 150, replace=False)]
        context = {f.name: f.vocab[k % len(f.vocab)] for f in fields}
        user_id = 10**12 + k  # no stored attributes: the request alone says who the user is
        resp = httpx.post(
            f"{url}/v1/score",
            json={"user_id": user_id, "candidates": candidates, "history": history, "context": context},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        served = np.array([s["score"] for s in resp.json()["scores"]])
        expected = eager.score(eager.user_features(user_id, {}), eager.context_features(context), history, candidates)
        worst = max(worst, float(np.abs(served - expected).max()))
    assert worst <= 1e-5, worst


def test_onnx_service_scores_as_the_eager_model(onnx_server, trained_run) -> None:
    assert_serves_the_eager_scores(onnx_server.url, trained_run.checkpoint)


def test_hot_swap_to_an_exported_checkpoint_keeps_the_eager_scores(onnx_server, trained_run, tmp_path) -> None:
    new = perturbed_checkpoint(trained_run.checkpoint, tmp_path / "new")
    out = run_cli("export", str(new))
    assert f"wrote {new / ARTEFACT}" in out.stdout
    resp = httpx.post(f"{onnx_server.url}/v1/admin/reload", json={"checkpoint": str(new)}, headers=KEY, timeout=120)
    assert resp.status_code == 200 and resp.json()["status"] == "swapped", resp.text
    assert_serves_the_eager_scores(onnx_server.url, new)


def test_corrupt_exported_scorer_is_refused_and_the_model_keeps_serving(onnx_server, trained_run, tmp_path) -> None:
    bad = perturbed_checkpoint(trained_run.checkpoint, tmp_path / "bad", scale=0.05)
    run_cli("export", str(bad))
    with (bad / ARTEFACT).open("r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00" * 64)
    current = httpx.get(f"{onnx_server.url}/readyz").json()["model_version"]
    resp = httpx.post(f"{onnx_server.url}/v1/admin/reload", json={"checkpoint": str(bad)}, headers=KEY, timeout=120)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail["field"] == "scorer" and ARTEFACT in detail["message"] and "still serving" in detail["message"]
    item = int(load_checkpoint(bad).item_table.item_ids[0])
    r = httpx.post(f"{onnx_server.url}/v1/score", json={"user_id": 1, "candidates": [item]}, timeout=30)
    assert r.status_code == 200 and r.json()["model_version"] == current

    proc = run_cli(
        "serve", "--checkpoint", str(bad), "--scorer", "onnx", "--port", str(free_port()),
        "--state-dir", str(tmp_path / "state"), check=False, timeout=120,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert ARTEFACT in errors[0] and "sha256 differs" in errors[0]

    shutil.rmtree(bad)


def test_without_onnx_runtime_the_service_scores_with_the_eager_model_and_says_so(trained_run, tmp_path) -> None:
    """`recsys serve --scorer onnx` on a host where ``import onnxruntime`` fails (a package of that name that
    raises ImportError, first on PYTHONPATH): it starts, serves the eager model's scores, reports scorer "eager"
    in /readyz and /v1/admin/model, and its log says why."""
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("onnxruntime is not installed on this host")\n')
    log = tmp_path / "serve.log"
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])}
    srv = Server(trained_run.checkpoint, tmp_path / "state", log, "--scorer", "onnx", env=env)
    try:
        assert_serves_the_eager_scores(srv.url, trained_run.checkpoint, scorer="eager")
    finally:
        srv.stop()
    warnings = [line for line in log.read_text().splitlines() if "scoring with the eager model" in line]
    assert len(warnings) == 1 and "ONNX Runtime cannot be imported" in warnings[0], log.read_text()[-2000:]
