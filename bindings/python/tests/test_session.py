"""Sessions in both faces: create, save (delta), load, lock, regenerate, destroy, touch."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import clusterkit
from clusterkit import InvalidArgumentError, TimeoutError
from conftest import fresh_ns, redis_config
from support import RedisServer


def test_lifecycle(ck: clusterkit.Clusterkit) -> None:
    st = ck.sessions
    s = st.create()
    assert s.is_new and len(s.id) >= 22
    s["user"] = b"ada"
    s.set_json("cart", [1, 2])
    s.save()
    assert s.id not in repr(s)
    got = st.load(s.id)
    assert got is not None and not got.is_new
    assert got["user"] == b"ada" and got.get_json("cart") == [1, 2]
    assert sorted(got) == ["cart", "user"] and len(got) == 2 and "user" in got
    old = got.id
    got.regenerate()
    assert got.id != old
    assert st.load(old) is None
    assert st.load(got.id) is not None
    assert st.touch(got.id) is True
    assert st.destroy(got.id) is True
    assert st.load(got.id) is None
    assert st.touch(got.id) is False
    assert st.load("not-a-valid-id") is None
    with pytest.raises(KeyError):
        _ = got["nope"]


def test_delta_saves_do_not_overwrite_each_other(ck: clusterkit.Clusterkit) -> None:
    st = ck.sessions
    s = st.create()
    s["a"] = b"0"
    s["b"] = b"0"
    s.save()
    r1, r2 = st.load(s.id), st.load(s.id)
    assert r1 is not None and r2 is not None
    r1["a"] = b"1"
    r2["b"] = b"2"
    r1.save()
    r2.save()
    final = st.load(s.id)
    assert final is not None and final["a"] == b"1" and final["b"] == b"2"
    del final["a"]
    final.save()
    again = st.load(s.id)
    assert again is not None and "a" not in again


def test_locked_loads_serialize_requests(redis_server: RedisServer) -> None:
    ck = clusterkit.Clusterkit(redis_config(redis_server, fresh_ns(), sessions={"lock_wait": "200ms", "lock_ttl": "5s"}))
    s = ck.sessions.create()
    s["n"] = b"0"
    s.save()
    first = ck.sessions.load(s.id, lock=True)
    assert first is not None and first.is_locked
    with pytest.raises(TimeoutError):
        ck.sessions.load(s.id, lock=True)
    done: list[bytes] = []

    def second() -> None:
        ck2 = clusterkit.Clusterkit(redis_config(redis_server, ck.cache.namespace, sessions={"lock_wait": "5s"}))
        got = ck2.sessions.load(s.id, lock=True)
        assert got is not None
        done.append(got["n"])
        got.save()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.1)
    first["n"] = b"1"
    first.save()
    t.join(5)
    assert done == [b"1"], "the second request saw the first one's write"


def test_bad_session_input(ck: clusterkit.Clusterkit) -> None:
    s = ck.sessions.create()
    with pytest.raises(InvalidArgumentError) as e:
        s.set("", b"x")
    assert e.value.field == "name"
    with pytest.raises(InvalidArgumentError) as e:
        s.set("n", 3)  # type: ignore[arg-type]
    assert e.value.field == "value"
    with pytest.raises(InvalidArgumentError):
        ck.sessions.load(42)  # type: ignore[arg-type]


def test_async_sessions(ck: clusterkit.Clusterkit) -> None:
    async def main() -> None:
        st = ck.aio.sessions
        s = st.create()
        s["k"] = b"v"
        await s.save()
        got = await st.load(s.id)
        assert got is not None and got["k"] == b"v"
        locked = await st.load(s.id, lock=True)
        assert locked is not None and locked.is_locked
        locked["k"] = b"w"
        await locked.save()
        assert not locked.is_locked
        old = locked.id
        await locked.regenerate()
        assert locked.id != old and await st.load(old) is None
        assert await st.touch(locked.id)
        assert await st.destroy(locked.id)
        assert await st.load(locked.id) is None

    asyncio.run(main())
