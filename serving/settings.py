"""The settings of one `recsys serve` process tree: the checkpoint's ``serve`` section, the command line's
overrides and the resolved paths, as one object handed to every uvicorn worker through the environment.

The fields and their limits are :class:`recsys.config.ServeConfig`'s, defined once: an override is
validated exactly like the same key in the YAML file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from recsys.config import ServeConfig
from recsys.errors import ConfigError

#: Environment variable that carries the settings (JSON) from `recsys serve` to its workers.
ENV_VAR = "RECSYS_SERVE_SETTINGS"

#: Environment variable with the API key (it wins over ``serve.api_key_file`` and ``serve.api_key``).
API_KEY_ENV = "RECSYS_API_KEY"

#: Host header values a service bound to a loopback address accepts by default.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class ServeSettings(ServeConfig):
    """What a worker needs to know: the ``serve`` config section (with overrides) and the checkpoint it serves.

    Built by :meth:`resolve`; ``state_dir`` is then an absolute path.
    """

    checkpoint: Path
    access_log: bool = True
    #: The dataset the catalogue items' titles and media are read from (``--data`` or ``data.path``); None: none.
    data_dir: Path | None = None

    @classmethod
    def resolve(cls, checkpoint: Path, config: ServeConfig, overrides: Mapping[str, object]) -> ServeSettings:
        """``config`` with ``overrides`` (ServeConfig field names; None keeps the config's value, "" is refused).

        Raises ConfigError naming the field (``serve.port: ...``) for an override out of its limits.
        """
        empty = sorted(key for key, value in overrides.items() if value == "")
        if empty:
            raise ConfigError(f"serve.{empty[0]}: empty value (leave the option out to keep the config's value)")
        given = {key: value for key, value in overrides.items() if value is not None}
        try:
            settings = cls.model_validate({**config.model_dump(), **given, "checkpoint": checkpoint})
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe(error) for error in exc.errors())) from None
        settings.state_dir = str(Path(settings.state_dir).resolve())
        if settings.state_url is not None and settings.state_url.startswith("sqlite:///"):
            settings.state_url = f"sqlite:///{Path(settings.state_url.removeprefix('sqlite:///')).resolve()}"
        settings.api_key = _api_key(settings)
        return settings

    @property
    def trusted_hosts(self) -> list[str]:
        """Host header values accepted: ``allowed_hosts``, or the loopback names for a loopback ``host``."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        return list(LOOPBACK_HOSTS) if self.host in LOOPBACK_HOSTS else ["*"]

    @property
    def state_path(self) -> Path:
        """The directory of the shared state (SQLite store, multiprocess metrics)."""
        return Path(self.state_dir)

    @property
    def store_path(self) -> Path:
        """The SQLite file of registered items, user state and the active model (shared by the workers):
        ``state_url``'s (``sqlite:///PATH``), else ``serving.db`` in ``state_dir``. Unused with Redis."""
        if self.state_url is not None and self.state_url.startswith("sqlite:///"):
            return Path(self.state_url.removeprefix("sqlite:///"))
        return self.state_path / "serving.db"

    @property
    def max_body_bytes(self) -> int:
        """The largest request body, in bytes (``max_body_mb`` MiB)."""
        return int(self.max_body_mb * 1024 * 1024)

    def to_env(self) -> None:
        """Hand these settings to the worker processes started from here."""
        os.environ[ENV_VAR] = self.model_dump_json()

    @classmethod
    def from_env(cls) -> ServeSettings:
        """The settings `recsys serve` handed to this worker."""
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise RuntimeError(f"{ENV_VAR} is not set: start the service with `recsys serve`")
        return cls.model_validate_json(raw)


def _api_key(settings: ServeSettings) -> str | None:
    """The key from RECSYS_API_KEY, else from ``api_key_file``, else ``api_key``; ConfigError naming the source."""
    source, key = "serve.api_key", settings.api_key
    if os.environ.get(API_KEY_ENV):
        source, key = API_KEY_ENV, os.environ[API_KEY_ENV].strip()
    elif settings.api_key_file:
        source = f"serve.api_key_file ({settings.api_key_file})"
        try:
            key = Path(settings.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read the API key: {getattr(exc, 'strerror', None) or exc}") from None
    if key is not None and (len(key) < 8 or not (key.isascii() and key.isprintable())):
        raise ConfigError(f"{source}: the API key must be at least 8 printable ASCII characters")
    return key


def _describe(error: ErrorDetails) -> str:
    """One validation error as ``serve.<field>: <message> (got <value>)``; a check across fields (no location)
    as ``serve.<message>``, whose message starts with the field (never the whole section: it holds the API key)."""
    if not error["loc"]:
        return f"serve.{str(error['msg']).removeprefix('Value error, ')}"
    path = ".".join(["serve", *(str(part) for part in error["loc"])])
    return f"{path}: {error['msg']} (got {error.get('input')!r})"
