"""The serving state every worker shares: the :class:`StateStore` interface and its SQLite implementation.

Two implementations, chosen by ``serve.state_url`` (:func:`serving.state.open_store`): :class:`SqliteStore`, one file
shared by the worker processes of one host (the default, in ``serve.state_dir``), and
:class:`serving.redis_store.RedisStore`, a Redis server shared by every host of a deployment.

They hold what must survive a restart and be seen by every worker:

- ``items``: items registered through the API (title, attributes, raw media bytes), each write
  stamped with a global sequence number;
- ``vectors``: their frozen-encoder vectors per modality, keyed by the encoder fingerprint (raw,
  not standardised: each model standardises with its own statistics);
- ``users``: per-user state (behaviour history, attributes), seeded from the training data;
- ``active_model``: the checkpoint every worker should serve, with a generation number that only
  grows: a worker follows a recorded model only when its generation is newer than the one it serves,
  so a worker can never be sent back to an older model.

Workers poll :meth:`StateStore.versions` (one cheap query) and catch up on what changed. Every write
is whole or absent, and acknowledged (returns) only once stored. SQLite in WAL mode lets readers run
while a writer commits; writers take ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from recsys.errors import RecsysError

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id INTEGER PRIMARY KEY,
    title TEXT,
    attributes TEXT NOT NULL,
    image BLOB,
    audio BLOB,
    seq INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_seq ON items(seq);
CREATE TABLE IF NOT EXISTS vectors (
    item_id INTEGER NOT NULL,
    modality TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (item_id, modality, fingerprint)
);
CREATE TABLE IF NOT EXISTS users (
    user_id INTEGER PRIMARY KEY,
    history TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS active_model (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    path TEXT NOT NULL,
    version TEXT NOT NULL,
    updated_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS seq (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT OR IGNORE INTO seq (id, value) VALUES (1, 0);
"""

#: Vectors with this fingerprint were given by the client, not computed by an encoder.
PRECOMPUTED = "precomputed"


@dataclass(frozen=True)
class StoredItem:
    """An item registered through the API, as stored."""

    item_id: int
    title: str | None
    attributes: dict
    image: bytes | None
    audio: bytes | None
    seq: int


@dataclass(frozen=True)
class UserState:
    """A user's behaviour history (item ids, oldest first) and attributes."""

    user_id: int
    history: list[int]
    attributes: dict


@dataclass(frozen=True)
class Versions:
    """What a worker compares with its own copy to know what to catch up on."""

    items_seq: int
    model_version: str | None
    model_path: str | None
    model_generation: int = 0


class StoreUnavailable(RecsysError):
    """The state store cannot be reached (or refused a command): the request gets 503, naming ``url``."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"the state store {url} is unavailable: {reason}")
        self.url = url
        self.reason = reason


class StateStore(Protocol):
    """What the service reads and writes; every method is thread-safe and raises :class:`StoreUnavailable`
    when the store cannot be reached. A write returns only once it is stored, whole."""

    url: str  # where the state is, for messages (no password)

    def versions(self) -> Versions: ...
    def set_active_model(self, path: str, version: str) -> int: ...
    def put_item(
        self,
        item_id: int,
        title: str | None,
        attributes: dict,
        image: bytes | None,
        audio: bytes | None,
        vectors: dict[tuple[str, str], np.ndarray],
    ) -> int: ...
    def items_since(self, seq: int) -> list[StoredItem]: ...
    def get_item(self, item_id: int) -> StoredItem | None: ...
    def vectors_of(self, item_ids: Iterable[int]) -> dict[int, dict[tuple[str, str], np.ndarray]]: ...
    def count_items(self) -> int: ...
    def get_user(self, user_id: int) -> UserState | None: ...
    def put_user(self, user_id: int, history: list[int], attributes: dict) -> None: ...
    def append_history(self, user_id: int, item_ids: list[int], max_len: int) -> UserState: ...
    def seed_users(self, users: Iterable[UserState]) -> int: ...
    def users_after(self, after: int | None, limit: int) -> list[tuple[int, int]]: ...
    def count_users(self) -> int: ...
    def close(self) -> None: ...


class SqliteStore:
    """Thread-safe access to the serving database (one connection per thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()

    # ---------------------------------------------------------------- plumbing
    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _next_seq(conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE seq SET value = value + 1 WHERE id = 1")
        return int(conn.execute("SELECT value FROM seq WHERE id = 1").fetchone()[0])

    @classmethod
    def create(cls, path: str | Path) -> SqliteStore:
        """Open the database, creating the file and tables when missing."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        store._conn.executescript(SCHEMA)
        columns = {row[1] for row in store._conn.execute("PRAGMA table_info(active_model)")}
        if "generation" not in columns:  # a state directory written before generations were recorded
            store._conn.execute("ALTER TABLE active_model ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
        return store

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---------------------------------------------------------------- versions
    def versions(self) -> Versions:
        row = self._conn.execute(
            "SELECT (SELECT value FROM seq WHERE id = 1), version, path, generation FROM (SELECT 1) "
            "LEFT JOIN active_model ON active_model.id = 1"
        ).fetchone()
        return Versions(int(row[0] or 0), row[1], row[2], int(row[3] or 0))

    # ---------------------------------------------------------------- model
    def set_active_model(self, path: str, version: str) -> int:
        """Record the model every worker should serve; returns its generation (one more than the last)."""
        with self._write() as conn:
            row = conn.execute("SELECT generation FROM active_model WHERE id = 1").fetchone()
            generation = (int(row[0]) if row else 0) + 1
            conn.execute(
                "INSERT INTO active_model (id, path, version, updated_at, generation) VALUES (1, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET path = excluded.path, version = excluded.version, "
                "updated_at = excluded.updated_at, generation = excluded.generation",
                (path, version, time.time(), generation),
            )
        return generation

    # ---------------------------------------------------------------- items
    def put_item(
        self,
        item_id: int,
        title: str | None,
        attributes: dict,
        image: bytes | None,
        audio: bytes | None,
        vectors: dict[tuple[str, str], np.ndarray],
    ) -> int:
        """Insert or replace an item and its vectors ((modality, fingerprint) -> vector); returns its seq."""
        with self._write() as conn:
            seq = self._next_seq(conn)
            conn.execute(
                "INSERT OR REPLACE INTO items (item_id, title, attributes, image, audio, seq, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item_id, title, json.dumps(attributes), image, audio, seq, time.time()),
            )
            conn.execute("DELETE FROM vectors WHERE item_id = ?", (item_id,))
            conn.executemany(
                "INSERT INTO vectors (item_id, modality, fingerprint, vector) VALUES (?, ?, ?, ?)",
                [(item_id, m, fp, np.asarray(v, np.float32).tobytes()) for (m, fp), v in vectors.items()],
            )
        return seq

    def add_vectors(self, item_id: int, vectors: dict[tuple[str, str], np.ndarray]) -> None:
        """Add vectors of another encoder for an item (e.g. after a model with other encoders is loaded)."""
        with self._write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO vectors (item_id, modality, fingerprint, vector) VALUES (?, ?, ?, ?)",
                [(item_id, m, fp, np.asarray(v, np.float32).tobytes()) for (m, fp), v in vectors.items()],
            )

    def items_since(self, seq: int) -> list[StoredItem]:
        """Items written after ``seq``, oldest first."""
        rows = self._conn.execute(
            "SELECT item_id, title, attributes, image, audio, seq FROM items WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
        return [StoredItem(int(r[0]), r[1], json.loads(r[2]), r[3], r[4], int(r[5])) for r in rows]

    def get_item(self, item_id: int) -> StoredItem | None:
        r = self._conn.execute(
            "SELECT item_id, title, attributes, image, audio, seq FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()
        return None if r is None else StoredItem(int(r[0]), r[1], json.loads(r[2]), r[3], r[4], int(r[5]))

    def vectors_of(self, item_ids: Iterable[int]) -> dict[int, dict[tuple[str, str], np.ndarray]]:
        """item id -> {(modality, fingerprint): vector} for the given items."""
        ids = list(item_ids)
        out: dict[int, dict[tuple[str, str], np.ndarray]] = {i: {} for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._conn.execute(
                "SELECT item_id, modality, fingerprint, vector FROM vectors "
                f"WHERE item_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for item_id, modality, fingerprint, blob in rows:
                out[int(item_id)][(modality, fingerprint)] = np.frombuffer(blob, dtype=np.float32)
        return out

    def count_items(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    # ---------------------------------------------------------------- users
    def get_user(self, user_id: int) -> UserState | None:
        r = self._conn.execute("SELECT history, attributes FROM users WHERE user_id = ?", (user_id,)).fetchone()
        return None if r is None else UserState(user_id, json.loads(r[0]), json.loads(r[1]))

    def put_user(self, user_id: int, history: list[int], attributes: dict) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO users (user_id, history, attributes, updated_at) VALUES (?, ?, ?, ?)",
                (user_id, json.dumps(history), json.dumps(attributes), time.time()),
            )

    def append_history(self, user_id: int, item_ids: list[int], max_len: int) -> UserState:
        """Append clicked items (oldest first) to a user's history, keeping the newest ``max_len``."""
        with self._write() as conn:
            r = conn.execute("SELECT history, attributes FROM users WHERE user_id = ?", (user_id,)).fetchone()
            history, attributes = (json.loads(r[0]), json.loads(r[1])) if r else ([], {})
            history = (history + list(item_ids))[-max_len:] if max_len else []
            conn.execute(
                "INSERT OR REPLACE INTO users (user_id, history, attributes, updated_at) VALUES (?, ?, ?, ?)",
                (user_id, json.dumps(history), json.dumps(attributes), time.time()),
            )
        return UserState(user_id, history, attributes)

    def seed_users(self, users: Iterable[UserState]) -> int:
        """Insert users that are not stored yet (state from training data); returns how many were added."""
        now = time.time()
        rows = [(u.user_id, json.dumps(u.history), json.dumps(u.attributes), now) for u in users]
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO users (user_id, history, attributes, updated_at) VALUES (?, ?, ?, ?)", rows
            )
            return conn.total_changes - before

    def users_after(self, after: int | None, limit: int) -> list[tuple[int, int]]:
        """(user id, history length) of the first ``limit`` users with an id above ``after``, by id."""
        rows = self._conn.execute(
            "SELECT user_id, history FROM users WHERE ?1 IS NULL OR user_id > ?1 ORDER BY user_id LIMIT ?2",
            (after, limit),
        ).fetchall()
        return [(int(r[0]), len(json.loads(r[1]))) for r in rows]

    def count_users(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])
