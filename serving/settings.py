"""Settings of one `recsys serve` process tree, handed to every uvicorn worker through the environment."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

#: Environment variable that carries the settings (JSON) from `recsys serve` to its workers.
ENV_VAR = "RECSYS_SERVE_SETTINGS"


class ServeSettings(BaseModel):
    """What a worker needs to know; built by the CLI from the checkpoint's ``serve`` config and flags."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_candidates: int = Field(2000, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    api_key: str | None = None
    torch_threads: int = Field(1, ge=1)
    access_log: bool = True

    def to_env(self) -> None:
        os.environ[ENV_VAR] = self.model_dump_json()

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise RuntimeError(f"{ENV_VAR} is not set: start the service with `recsys serve`")
        return cls.model_validate_json(raw)
