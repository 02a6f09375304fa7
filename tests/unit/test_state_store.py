"""The serving state store: one contract, run against SQLite and a real Redis server (skipped without redis-server).

What the service relies on: writes whole and visible to every reader once they return, item sequence
numbers and model generations that only grow, user histories appended atomically under concurrency,
user pages in numeric id order (signed 64-bit ids); for Redis also: a write Redis refuses leaves
nothing behind, and an unreachable server is a StoreUnavailable naming the URL. And `serve.state_url`
chooses the store, strictly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.redis_server import RedisServer

from recsys.config import ServeConfig
from recsys.errors import ConfigError
from serving.net import free_port
from serving.settings import ServeSettings
from serving.state import open_store
from serving.store import SqliteStore, StateStore, StoreUnavailable, UserState

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        opened: StateStore = SqliteStore.create(tmp_path / "serving.db")
    else:
        from serving.redis_store import RedisStore

        server: RedisServer = request.getfixturevalue("redis_server")
        opened = RedisStore.connect(server.url)
        opened._redis.flushdb()  # type: ignore[attr-defined]
    yield opened
    opened.close()


def settings(tmp_path: Path, state_url: str | None) -> ServeSettings:
    return ServeSettings.resolve(
        tmp_path / "ckpt", ServeConfig(), {"state_dir": str(tmp_path / "state"), "state_url": state_url}
    )


# --------------------------------------------------------------------------- the contract


def test_items_are_written_whole_with_growing_sequence_numbers(store: StateStore) -> None:
    v1, v2 = np.arange(4, dtype=np.float32), np.full(3, 0.5, np.float32)
    assert store.put_item(7, "a title", {"dept": "x"}, b"\x89PNG", None, {("title", "fp1"): v1}) == 1
    assert store.put_item(-3, None, {}, None, b"", {("image", "p"): v2, ("title", "fp1"): v1}) == 2
    # replacing an item: new seq, new vectors only
    assert store.put_item(7, None, {"dept": "y"}, None, None, {("audio", "fp2"): v2}) == 3
    assert store.versions().items_seq == 3 and store.count_items() == 2
    since = store.items_since(0)
    assert [(i.item_id, i.seq) for i in since] == [(-3, 2), (7, 3)]
    assert since[0].audio == b"" and since[0].image is None and since[0].title is None
    assert [i.item_id for i in store.items_since(2)] == [7] and store.items_since(3) == []
    item = store.get_item(7)
    assert item is not None and (item.title, item.attributes, item.image, item.seq) == (None, {"dept": "y"}, None, 3)
    assert store.get_item(8) is None
    vectors = store.vectors_of([7, -3, 99])
    assert set(vectors[7]) == {("audio", "fp2")} and np.array_equal(vectors[7][("audio", "fp2")], v2)
    assert np.array_equal(vectors[-3][("title", "fp1")], v1) and vectors[99] == {}


def test_the_active_model_generation_only_grows(store: StateStore) -> None:
    assert store.versions().model_path is None and store.versions().model_generation == 0
    assert store.set_active_model("/ckpt/a", "marn-1") == 1
    assert store.set_active_model("/ckpt/b", "marn-2") == 2
    versions = store.versions()
    assert (versions.model_path, versions.model_version, versions.model_generation) == ("/ckpt/b", "marn-2", 2)


def test_users_seeded_once_replaced_appended_and_paged_by_id(store: StateStore) -> None:
    big, small = 2**63 - 1, -(2**63)
    seeded = [UserState(5, [1, 2], {"gender": "f"}), UserState(big, [], {}), UserState(-10, [3], {})]
    assert store.seed_users(seeded) == 3
    assert store.seed_users([UserState(5, [9], {}), UserState(small, [4], {})]) == 1  # 5 is kept as it was
    assert store.get_user(5) == UserState(5, [1, 2], {"gender": "f"})
    assert store.get_user(6) is None and store.count_users() == 4
    assert store.users_after(None, 10) == [(small, 1), (-10, 1), (5, 2), (big, 0)]
    assert store.users_after(-10, 2) == [(5, 2), (big, 0)] and store.users_after(big, 5) == []
    store.put_user(5, [8], {"gender": "m"})
    assert store.get_user(5) == UserState(5, [8], {"gender": "m"})
    assert store.append_history(5, [9, 10, 11], 3) == UserState(5, [9, 10, 11], {"gender": "m"})
    assert store.append_history(12, [1], 3) == UserState(12, [1], {})  # a new user
    assert store.append_history(12, [2], 0) == UserState(12, [], {})
    assert store.get_user(5) == UserState(5, [9, 10, 11], {"gender": "m"}) and store.count_users() == 5


def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    """8 threads append 25 clicks each to one user and register 5 items each: every click is kept, every
    item has its own sequence number."""

    def work(k: int) -> None:
        for n in range(25):
            store.append_history(1, [k * 100 + n], 1000)
        for n in range(5):
            store.put_item(k * 10 + n, None, {"n": n}, None, None, {})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    user = store.get_user(1)
    assert user is not None and sorted(user.history) == sorted(k * 100 + n for k in range(8) for n in range(25))
    for k in range(8):  # each thread's clicks in its order
        mine = [i for i in user.history if i // 100 == k]
        assert mine == sorted(mine)
    items = store.items_since(0)
    assert sorted(i.seq for i in items) == list(range(1, 41)) and store.versions().items_seq == 40


# --------------------------------------------------------------------------- Redis only


def test_a_write_redis_refuses_leaves_nothing_behind(redis_server: RedisServer) -> None:
    import redis

    from serving.redis_store import RedisStore

    store = RedisStore.connect(redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    admin.flushdb()
    store.put_item(1, "kept", {}, None, None, {})
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 200_000)
    try:
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            store.put_item(2, "too big", {}, b"x" * 3_000_000, None, {("title", "fp"): np.ones(4)})
    finally:
        admin.config_set("maxmemory", 0)
    assert store.versions().items_seq == 1 and [i.item_id for i in store.items_since(0)] == [1]
    assert store.get_item(2) is None and store.vectors_of([2]) == {2: {}}
    store.close()
    admin.close()


def test_an_unreachable_redis_is_store_unavailable_naming_the_url() -> None:
    from serving.redis_store import RedisStore, public_url

    url = f"redis://127.0.0.1:{free_port()}/3"
    with pytest.raises(StoreUnavailable, match=f"state store {url} is unavailable: unreachable"):
        RedisStore.connect(url)
    store = RedisStore(url)
    for call in (store.versions, lambda: store.get_user(1), lambda: store.append_history(1, [2], 5)):
        with pytest.raises(StoreUnavailable) as err:
            call()
        assert err.value.url == url
    assert public_url("redis://app:s3cret@db.internal:6380/1") == "redis://app:***@db.internal:6380/1"


def test_the_redis_password_comes_from_the_environment_and_never_shows(tmp_path: Path, monkeypatch) -> None:
    from serving.redis_store import PASSWORD_ENV, RedisStore

    server = RedisServer(tmp_path / "redis", password="s3cret-pw")
    try:
        monkeypatch.delenv(PASSWORD_ENV, raising=False)
        refused = f"state store {server.url} is unavailable: refused the credentials"
        with pytest.raises(StoreUnavailable, match=refused) as err:
            RedisStore.connect(server.url)  # no password: Redis refuses, the URL is named
        assert PASSWORD_ENV in str(err.value) and "s3cret" not in str(err.value)
        monkeypatch.setenv(PASSWORD_ENV, "s3cret-pw")
        store = RedisStore.connect(server.url)
        store.put_user(7, [1, 2], {})
        user = store.get_user(7)
        assert user is not None and user.history == [1, 2]
        in_url = server.url.replace("redis://", "redis://:s3cret-pw@")
        monkeypatch.setenv(PASSWORD_ENV, "wrong")  # a password in the URL wins over the environment
        assert RedisStore.connect(in_url).url == server.url.replace("redis://", "redis://:***@")
    finally:
        server.stop()


# --------------------------------------------------------------------------- serve.state_url


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://cache:6379/0", "unsupported scheme 'http'"),
        ("memcached://cache", "unsupported scheme 'memcached'"),
        ("REDIS://cache:6379/0", "unsupported scheme 'REDIS'"),
        ("redis://cache:6379/0?ssl_cert_reqs=none", "no options"),
        ("cache:6379", "unsupported scheme"),
        ("redis://cache:port/0", "not a valid Redis URL"),
        ("redis:///0", "no host"),
        ("redis://cache:6379/zero", "the database is a number"),
        ("sqlite://relative.db", "three slashes"),
    ],
)
def test_a_bad_state_url_is_refused_naming_the_setting(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^serve\.state_url: ") as err:
        settings(tmp_path, url)
    assert message in str(err.value)


def test_the_state_url_chooses_the_store(tmp_path: Path, redis_server: RedisServer, monkeypatch) -> None:
    from serving.redis_store import RedisStore

    default = open_store(settings(tmp_path, None), create=True)
    assert isinstance(default, SqliteStore) and default.path == tmp_path / "state" / "serving.db"
    monkeypatch.chdir(tmp_path)
    chosen = settings(tmp_path, "sqlite:///elsewhere/state.db")
    assert chosen.state_url == f"sqlite:///{tmp_path / 'elsewhere' / 'state.db'}"  # absolute for every worker
    (tmp_path / "elsewhere").mkdir()
    sqlite = open_store(chosen, create=True)
    assert isinstance(sqlite, SqliteStore) and sqlite.path == tmp_path / "elsewhere" / "state.db"
    shared = open_store(settings(tmp_path, redis_server.url), create=True)
    assert isinstance(shared, RedisStore) and shared.url == redis_server.url
    for opened in (default, sqlite, shared):
        opened.close()
