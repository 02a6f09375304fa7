"""The serving state in Redis (``serve.state_url: redis://HOST:PORT/DB``): one store for every host.

The same :class:`~serving.store.StateStore` as the SQLite file, for a deployment of several hosts: an
event posted to one host, an item registered on one, a model swapped in on one, are read by every
worker of every host at its next request (:meth:`RedisStore.versions`, one round trip, compares the
item sequence number and the model generation with the worker's own).

Keys (prefix ``recsys:``; Redis 7 or newer):

- ``seq``: the sequence number of the last item write (INCR);
- ``items``: sorted set of registered item ids by the seq of their last write;
- ``item:{id}``: hash of title, attributes (JSON), image, audio (raw bytes), seq;
- ``vec:{id}``: hash ``modality NUL fingerprint`` -> float32 vector bytes;
- ``users``: sorted set of user ids, all with score 0, as order-preserving 20-digit strings (``id + 2**63``),
  so ``ZRANGEBYLEX`` pages through them by id;
- ``user:{id}``: the user's attributes (JSON; the key exists iff the user does);
  ``hist:{id}``: list of the user's clicked item ids, oldest first;
- ``model``: hash of the active model's path, version and generation.

Every write is one Lua script or one MULTI/EXEC transaction (whole or not at all; the scripts carry a
``#!lua`` line, so Redis refuses one over its memory limit before it starts instead of midway), and
returns only once Redis has executed it. How durable an acknowledged write is beyond that is Redis's
persistence setting (``appendonly yes`` to survive a Redis restart). Commands are not retried: a write
that failed on a broken connection may or may not have happened, and the client is told (503) rather
than the write being applied twice. Every Redis failure is a :class:`StoreUnavailable` naming the URL.

The password: ``RECSYS_REDIS_PASSWORD`` (:data:`PASSWORD_ENV`) when the URL carries none, so it stays out of
configs, command lines and the process list; a password in the URL wins. Messages and logs show the URL
without it (:func:`public_url`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from serving.store import StoredItem, StoreUnavailable, UserState, Versions

PREFIX = "recsys:"
#: The environment variable with the Redis password, used when ``serve.state_url`` has none.
PASSWORD_ENV = "RECSYS_REDIS_PASSWORD"
#: Connecting and each command: a Redis that does not answer within these (seconds) is unavailable.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
#: Users written per seeding script (each user is written whole; a script blocks Redis while it runs).
SEED_CHUNK = 1000

_PUT_ITEM = """#!lua
local seq = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[3], 'attributes', ARGV[2], 'seq', seq, 'updated_at', ARGV[3])
if ARGV[4] == '1' then redis.call('HSET', KEYS[3], 'title', ARGV[5]) end
if ARGV[6] == '1' then redis.call('HSET', KEYS[3], 'image', ARGV[7]) end
if ARGV[8] == '1' then redis.call('HSET', KEYS[3], 'audio', ARGV[9]) end
for i = 10, #ARGV, 2 do redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], seq, ARGV[1])
return seq
"""

_SET_MODEL = """#!lua
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'path', ARGV[1], 'version', ARGV[2], 'updated_at', ARGV[3])
return generation
"""

# KEYS: the users index, then user:{id} and hist:{id} per user; ARGV per user: index member, attributes, n, n ids.
_SEED_USERS = """#!lua
local added = 0
local a = 1
for k = 2, #KEYS, 2 do
  local n = tonumber(ARGV[a + 2])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('SET', KEYS[k], ARGV[a + 1])
    redis.call('DEL', KEYS[k + 1])
    for j = a + 3, a + 2 + n do redis.call('RPUSH', KEYS[k + 1], ARGV[j]) end
    redis.call('ZADD', KEYS[1], 0, ARGV[a])
    added = added + 1
  end
  a = a + 3 + n
end
return added
"""

P = ParamSpec("P")
R = TypeVar("R")


def public_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _guarded(method: Callable[P, R]) -> Callable[P, R]:
    """Every Redis failure of ``method`` as a :class:`StoreUnavailable` naming the store."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.AuthenticationError as exc:  # a ConnectionError to redis-py, but not one to wait out
            why = f"refused the credentials ({exc}); the password is {PASSWORD_ENV}'s or the URL's"
            raise StoreUnavailable(args[0].url, why) from None  # type: ignore[attr-defined]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(args[0].url, f"unreachable ({exc})") from None  # type: ignore[attr-defined]
        except redis.RedisError as exc:
            raise StoreUnavailable(args[0].url, f"refused the command ({exc})") from None  # type: ignore[attr-defined]

    return wrapper


def _user_key(user_id: int) -> str:
    """A user id as an index member that sorts like the number (signed 64-bit ids)."""
    return f"{user_id + 2**63:020d}"


def _vector_field(modality: str, fingerprint: str) -> bytes:
    return f"{modality}\0{fingerprint}".encode()


def _item(item_id: int, fields: dict[bytes, bytes]) -> StoredItem:
    title = fields.get(b"title")
    return StoredItem(
        item_id,
        title.decode() if title is not None else None,
        json.loads(fields[b"attributes"]),
        fields.get(b"image"),
        fields.get(b"audio"),
        int(fields[b"seq"]),
    )


class RedisStore:
    """The serving state in one Redis database; thread-safe (a connection pool per process)."""

    def __init__(self, url: str) -> None:
        self.url = public_url(url)
        password = None if urlsplit(url).password is not None else os.environ.get(PASSWORD_ENV) or None
        self._redis = redis.Redis.from_url(
            url,
            password=password,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self._put_item = self._redis.register_script(_PUT_ITEM)
        self._set_model = self._redis.register_script(_SET_MODEL)
        self._seed_users = self._redis.register_script(_SEED_USERS)

    @classmethod
    def connect(cls, url: str) -> RedisStore:
        """A store whose Redis answers (PING); StoreUnavailable otherwise."""
        store = cls(url)
        store.ping()
        return store

    @_guarded
    def ping(self) -> None:
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()

    # ---------------------------------------------------------------- versions
    @_guarded
    def versions(self) -> Versions:
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(PREFIX + "seq")
        pipe.hmget(PREFIX + "model", ["path", "version", "generation"])
        seq, (path, version, generation) = pipe.execute()
        return Versions(
            int(seq or 0),
            version.decode() if version is not None else None,
            path.decode() if path is not None else None,
            int(generation or 0),
        )

    # ---------------------------------------------------------------- model
    @_guarded
    def set_active_model(self, path: str, version: str) -> int:
        """Record the model every worker should serve; returns its generation (one more than the last)."""
        return int(self._set_model(keys=[PREFIX + "model"], args=[path, version, repr(time.time())]))

    # ---------------------------------------------------------------- items
    @_guarded
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
        args: list[Any] = [str(item_id), json.dumps(attributes), repr(time.time())]
        for value in (title, image, audio):
            args += ["1", value] if value is not None else ["0", ""]
        for (modality, fingerprint), vector in vectors.items():
            args += [_vector_field(modality, fingerprint), np.asarray(vector, np.float32).tobytes()]
        keys = [PREFIX + "seq", PREFIX + "items", f"{PREFIX}item:{item_id}", f"{PREFIX}vec:{item_id}"]
        return int(self._put_item(keys=keys, args=args))

    @_guarded
    def items_since(self, seq: int) -> list[StoredItem]:
        """Items written after ``seq``, oldest first."""
        members: list[bytes] = self._redis.zrangebyscore(PREFIX + "items", f"({seq}", "+inf")  # type: ignore[assignment]
        ids = [int(i) for i in members]
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=True)
        for item_id in ids:
            pipe.hgetall(f"{PREFIX}item:{item_id}")
        items = [_item(i, fields) for i, fields in zip(ids, pipe.execute()) if fields]
        return sorted((it for it in items if it.seq > seq), key=lambda it: it.seq)

    @_guarded
    def get_item(self, item_id: int) -> StoredItem | None:
        fields: dict[bytes, bytes] = self._redis.hgetall(f"{PREFIX}item:{item_id}")  # type: ignore[assignment]
        return _item(item_id, fields) if fields else None

    @_guarded
    def vectors_of(self, item_ids: Iterable[int]) -> dict[int, dict[tuple[str, str], np.ndarray]]:
        """item id -> {(modality, fingerprint): vector} for the given items."""
        ids = list(item_ids)
        out: dict[int, dict[tuple[str, str], np.ndarray]] = {i: {} for i in ids}
        if not ids:
            return out
        pipe = self._redis.pipeline(transaction=True)
        for item_id in ids:
            pipe.hgetall(f"{PREFIX}vec:{item_id}")
        for item_id, fields in zip(ids, pipe.execute()):
            for field, blob in fields.items():
                modality, fingerprint = field.decode().split("\0", 1)
                out[item_id][(modality, fingerprint)] = np.frombuffer(blob, dtype=np.float32)
        return out

    @_guarded
    def count_items(self) -> int:
        return int(self._redis.zcard(PREFIX + "items"))

    # ---------------------------------------------------------------- users
    @_guarded
    def get_user(self, user_id: int) -> UserState | None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(f"{PREFIX}user:{user_id}")
        pipe.lrange(f"{PREFIX}hist:{user_id}", 0, -1)
        attributes, history = pipe.execute()
        if attributes is None:
            return None
        return UserState(user_id, [int(i) for i in history], json.loads(attributes))

    @_guarded
    def put_user(self, user_id: int, history: list[int], attributes: dict) -> None:
        hist = f"{PREFIX}hist:{user_id}"
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(hist)
        if history:
            pipe.rpush(hist, *history)
        pipe.set(f"{PREFIX}user:{user_id}", json.dumps(attributes))
        pipe.zadd(PREFIX + "users", {_user_key(user_id): 0})
        pipe.execute()

    @_guarded
    def append_history(self, user_id: int, item_ids: list[int], max_len: int) -> UserState:
        """Append clicked items (oldest first) to a user's history, keeping the newest ``max_len``."""
        hist, user = f"{PREFIX}hist:{user_id}", f"{PREFIX}user:{user_id}"
        pipe = self._redis.pipeline(transaction=True)
        if not max_len:
            pipe.delete(hist)
        elif item_ids:
            pipe.rpush(hist, *item_ids)
            pipe.ltrim(hist, -max_len, -1)
        pipe.set(user, "{}", nx=True)
        pipe.zadd(PREFIX + "users", {_user_key(user_id): 0})
        pipe.lrange(hist, 0, -1)
        pipe.get(user)
        *_, history, attributes = pipe.execute()
        return UserState(user_id, [int(i) for i in history], json.loads(attributes))

    @_guarded
    def seed_users(self, users: Iterable[UserState]) -> int:
        """Insert users that are not stored yet (state from training data); returns how many were added.
        Each user is written whole; a seeding cut short is completed by the next (it adds only what is missing)."""
        added, keys, args = 0, [PREFIX + "users"], list[Any]()
        for n, user in enumerate(users, 1):
            keys += [f"{PREFIX}user:{user.user_id}", f"{PREFIX}hist:{user.user_id}"]
            args += [_user_key(user.user_id), json.dumps(user.attributes), len(user.history), *user.history]
            if n % SEED_CHUNK == 0:
                added += int(self._seed_users(keys=keys, args=args))
                keys, args = [PREFIX + "users"], []
        if len(keys) > 1:
            added += int(self._seed_users(keys=keys, args=args))
        return added

    @_guarded
    def users_after(self, after: int | None, limit: int) -> list[tuple[int, int]]:
        """(user id, history length) of the first ``limit`` users with an id above ``after``, by id."""
        start = "-" if after is None else "(" + _user_key(after)
        members = self._redis.zrangebylex(PREFIX + "users", start, "+", start=0, num=limit)
        ids = [int(m) - 2**63 for m in members]
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for user_id in ids:
            pipe.llen(f"{PREFIX}hist:{user_id}")
        return [(user_id, int(n)) for user_id, n in zip(ids, pipe.execute())]

    @_guarded
    def count_users(self) -> int:
        return int(self._redis.zcard(PREFIX + "users"))
