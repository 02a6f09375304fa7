"""The state store ``serve.state_url`` names: SQLite (the default, in ``serve.state_dir``) or Redis."""

from __future__ import annotations

from serving.redis_store import RedisStore
from serving.settings import ServeSettings
from serving.store import SqliteStore, StateStore


def open_store(settings: ServeSettings, create: bool = False) -> StateStore:
    """The store ``settings.state_url`` names (None: SQLite in ``state_dir``). ``create``: make the SQLite file
    and tables, or check that Redis answers; raises StoreUnavailable (Redis) or OSError (SQLite)."""
    url = settings.state_url
    if url is not None and not url.startswith("sqlite:"):
        return RedisStore.connect(url) if create else RedisStore(url)
    path = settings.store_path
    return SqliteStore.create(path) if create else SqliteStore(path)
