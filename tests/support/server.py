"""`recsys serve` as a test sees it: a real server process on 127.0.0.1, ready when /readyz answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serving.net import free_port

ROOT = Path(__file__).resolve().parents[2]

#: The API key the test servers are started with (through RECSYS_API_KEY, never on the command line).
API_KEY = "test-key-0123"

#: The limits of the servers the bad-request catalogue runs against (tests/e2e/test_hardened_service.py).
CATALOGUE_LIMITS = ("--max-candidates", "200", "--max-body-mb", "1")


class Server:
    """`recsys serve` in its own process group; ``url`` once /readyz answers."""

    def __init__(
        self,
        checkpoint: Path,
        state_dir: Path,
        log: Path,
        *extra: str,
        api_key: str | None = API_KEY,
        env: dict[str, str] | None = None,
        ready_timeout: float = 180,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "recsys.cli",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(self.port),
            "--state-dir",
            str(state_dir),
            *extra,
        ]
        env = {**{k: v for k, v in os.environ.items() if k != "RECSYS_API_KEY"}, **(env or {})}
        if api_key is not None:
            env["RECSYS_API_KEY"] = api_key
        self.log = log
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        try:
            self._wait_ready(time.time() + ready_timeout)
        except BaseException:
            self.stop()  # a server that never became ready must not outlive its fixture (its Ray, its ports)
            raise

    def _wait_ready(self, deadline: float) -> None:
        while True:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
            assert time.time() < deadline, f"server not ready:\n{self.log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def perturbed_checkpoint(src: Path, dst: Path, scale: float = 0.01) -> Path:
    """A new checkpoint of the same model with different weights (what a retraining produces)."""
    import torch

    from recsys.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(src)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            p.add_(scale * torch.randn_like(p))
    return save_checkpoint(dst, ckpt.model, ckpt.config, ckpt.feature_map, ckpt.item_table)


def variant_checkpoint(src: Path, dst: Path, seed: int = 0, content_dim: int | None = None, **model: object) -> Path:
    """A checkpoint on ``src``'s data (feature map, item table) of another model configuration
    (``model`` overrides the ``model`` section), with weights drawn at random from ``seed``: what a
    training run of that model would write, for tests that compare scoring paths, not accuracy.
    A content gate (``model.content_gate``) is set to 0.5 so the content part moves the scores.
    ``content_dim`` projects the item table's content as ``features.content_dim`` does."""
    import torch

    from recsys.checkpoint import load_checkpoint, save_checkpoint
    from recsys.features.item_table import fit_projections
    from recsys.models import build_model

    ckpt = load_checkpoint(src)
    features = ckpt.config.features.model_copy(update={"content_dim": content_dim})
    config = ckpt.config.model_copy(update={"model": ckpt.config.model.model_copy(update=model), "features": features})
    config = type(config).model_validate(config.model_dump())  # the overrides pass the strict config's checks
    table = (
        ckpt.item_table
        if content_dim is None
        else ckpt.item_table.projected(fit_projections(ckpt.item_table, content_dim))
    )
    torch.manual_seed(seed)
    built = build_model(config.model, ckpt.feature_map, table.dims())
    with torch.no_grad():
        for name, p in built.named_parameters():
            if name.endswith("gate"):
                p.fill_(0.5)
    return save_checkpoint(dst, built.eval(), config, ckpt.feature_map, table)


def vector_item(checkpoint: Path, item_id: int, title: str, seed: int) -> dict:
    """A POST /v1/items body: an item with random precomputed vectors of every modality of ``checkpoint``."""
    import numpy as np

    from recsys.checkpoint import load_checkpoint

    rng = np.random.default_rng(seed)
    dims = load_checkpoint(checkpoint).item_table.encoder_dims()
    return {"item_id": item_id, "title": title, "vectors": {m: rng.normal(size=d).tolist() for m, d in dims.items()}}
