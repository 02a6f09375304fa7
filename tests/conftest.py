"""Shared test fixtures. Tests under tests/unit are marked `unit`, under tests/e2e `e2e`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def ray_without_tokens() -> Iterator[None]:
    """Every Ray the tests start or join, in process or in a subprocess, without token authentication, as the
    project's own (recsys.cluster.connect). A bare ``ray.init`` would turn tokens on and write RAY_AUTH_MODE=token
    into this process's environment, and the later tests' drivers could not talk to their `ray start` clusters."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        yield


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every run the tests track goes to a store of the session's own (never ./mlruns of the project)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)  # the CLI subprocesses inherit it
        yield uri


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the project; tests that use it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
