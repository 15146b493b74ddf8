"""Every cache operation in both faces, on the embedded and the Redis backends."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from datetime import timedelta
from typing import Any, List

import pytest

import clusterkit
from conftest import fresh_ns
from clusterkit import InvalidArgumentError, JsonSerializer, PickleSerializer, StrSerializer


def test_get_set_delete_has(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    assert c.get(b"k") is None
    c.set(b"k", b"v1")
    assert c.get(b"k") == b"v1"
    assert c.get("k") == b"v1", "str keys are UTF-8 bytes"
    c.set("k", "välue")
    assert c.get(b"k") == "välue".encode()
    c.set(b"k", bytearray(b"ba"))
    assert c.get(b"k") == b"ba"
    assert c.has(b"k") and "k" in c
    assert c.delete(b"k") is True
    assert c.delete(b"k") is False
    assert not c.has(b"k")
    c.set(b"bin\x00\xff", b"\x00\x01\xff")
    assert c.get(b"bin\x00\xff") == b"\x00\x01\xff"
    c.set(b"empty", b"")
    assert c.get(b"empty") == b""


def test_ttl_and_expiry(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    c.set(b"p", b"1")
    assert c.ttl(b"p") == math.inf
    c.set(b"t", b"1", ttl=100)
    t = c.ttl(b"t")
    assert t is not None and 98 < t <= 100
    c.set(b"td", b"1", ttl=timedelta(minutes=2))
    t = c.ttl(b"td")
    assert t is not None and 118 < t <= 120
    assert c.ttl(b"missing") is None
    c.set(b"short", b"1", ttl=0.05)
    assert c.get(b"short") == b"1"
    time.sleep(0.15)
    assert c.get(b"short") is None
    c.set(b"z", b"1")
    c.set(b"z", b"2", ttl=0)
    assert c.get(b"z") is None, "ttl=0 deletes"


def test_add_is_atomic_and_respects_existing(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    assert c.add(b"a", b"1") is True
    assert c.add(b"a", b"2") is False
    assert c.get(b"a") == b"1"
    with pytest.raises(InvalidArgumentError) as e:
        c.add(b"b", b"1", ttl=0)
    assert e.value.field == "ttl"


def test_many(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    c.set_many({b"m1": b"1", "m2": "2"})
    c.set_many([(b"m3", b"3")], ttl=60)
    assert c.get_many([b"m1", b"m2", b"m3", b"nope"]) == [b"1", b"2", b"3", None]
    assert c.get_many([]) == []
    assert c.delete_many([b"m1", b"m2", b"nope"]) == 2
    assert c.get_many((k for k in [b"m1", b"m3"])) == [None, b"3"]


def test_incr_decr(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    assert c.incr(b"n") == 1
    assert c.incr(b"n", 10) == 11
    assert c.decr(b"n", 3) == 8
    assert c.get(b"n") == b"8"
    c.set(b"s", b"abc")
    with pytest.raises(clusterkit.BackendError):
        c.incr(b"s")
    with pytest.raises(InvalidArgumentError):
        c.incr(b"n", True)  # type: ignore[arg-type]


def test_clear_only_this_namespace(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    other = c.with_namespace(c.namespace + "other")
    c.set(b"x", b"1")
    c.set(b"y", b"1")
    other.set(b"x", b"keep")
    assert c.clear() == 2
    assert c.get(b"x") is None
    assert other.get(b"x") == b"keep"
    other.clear()


def test_stats_count(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    before = c.stats()
    c.get(b"nope")
    c.set(b"s", b"1")
    c.get(b"s")
    after = c.stats()
    assert after["misses"] == before["misses"] + 1
    assert after["hits"] == before["hits"] + 1
    assert after["writes"] >= before["writes"] + 1


def test_get_or_compute_coalesces_per_key(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    calls: List[int] = []
    gate = threading.Event()

    def compute() -> bytes:
        calls.append(1)
        gate.wait(5)
        return b"computed"

    results: List[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(c.get_or_compute(b"goc", 60, compute))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(10)
    assert results == [b"computed"] * 8
    assert len(calls) == 1, "one computation for 8 concurrent misses"
    assert c.get_or_compute(b"goc", 60, lambda: b"other") == b"computed"


def test_get_or_compute_raises_the_functions_exception(ck: clusterkit.Clusterkit) -> None:
    class Boom(Exception):
        pass

    def bad() -> bytes:
        raise Boom("no")

    with pytest.raises(Boom):
        ck.cache.get_or_compute(b"bad", 60, bad)
    with pytest.raises(InvalidArgumentError) as e:
        ck.cache.get_or_compute(b"bad", 60, lambda: 42)  # type: ignore[arg-type,return-value]
    assert e.value.field == "value"
    with pytest.raises(InvalidArgumentError) as e:
        ck.cache.get_or_compute(b"bad", 0, lambda: b"x")
    assert e.value.field == "ttl"
    assert ck.cache.get(b"bad") is None


def test_typed_layers_are_explicit(ck: clusterkit.Clusterkit) -> None:
    j = ck.cache.typed(JsonSerializer())
    j.set("u", {"name": "Ada", "n": [1, 2]})
    assert j.get("u") == {"name": "Ada", "n": [1, 2]}
    assert ck.cache.get("u") == b'{"name":"Ada","n":[1,2]}'
    s = ck.cache.typed(StrSerializer())
    s.set("s", "héllo")
    assert s.get("s") == "héllo"
    p = ck.cache.typed(PickleSerializer())
    p.set("p", {1, 2, 3})
    assert p.get("p") == {1, 2, 3}
    assert j.get_or_compute("jc", 60, lambda: [1]) == [1]
    with pytest.raises(InvalidArgumentError):
        j.set("bad", object())
    with pytest.raises(InvalidArgumentError):
        ck.cache.set("obj", {"a": 1})  # type: ignore[arg-type]


def test_async_face(ck: clusterkit.Clusterkit) -> None:
    a = ck.aio.cache

    async def main() -> None:
        assert await a.get(b"ak") is None
        await a.set(b"ak", b"v", ttl=60)
        assert await a.get(b"ak") == b"v"
        assert await a.add(b"ak", b"w") is False
        assert await a.add(b"ak2", b"w") is True
        assert await a.has(b"ak2")
        await a.set_many({b"am1": b"1", b"am2": b"2"})
        assert await a.get_many([b"am1", b"am2", b"x"]) == [b"1", b"2", None]
        assert await a.delete_many([b"am1", b"am2"]) == 2
        assert await a.incr(b"an", 5) == 5
        assert await a.decr(b"an") == 4
        t = await a.ttl(b"ak")
        assert t is not None and 58 < t <= 60
        assert await a.delete(b"ak") is True
        assert await a.clear() >= 2
        assert await a.get(b"ak2") is None
        with pytest.raises(InvalidArgumentError) as e:
            await a.set(b"", b"v")
        assert e.value.field == "key"
        calls: List[int] = []

        async def compute() -> bytes:
            calls.append(1)
            await asyncio.sleep(0.05)
            return b"from-coroutine"

        got = await asyncio.gather(*(a.get_or_compute(b"agoc", 60, compute) for _ in range(20)))
        assert got == [b"from-coroutine"] * 20
        assert len(calls) == 1
        assert await a.get_or_compute(b"agoc2", 60, lambda: b"plain") == b"plain"

        async def bad() -> bytes:
            raise KeyError("x")

        with pytest.raises(KeyError):
            await a.get_or_compute(b"agoc3", 60, bad)
        j = a.typed(JsonSerializer())
        await j.set("aj", [1, "a"])
        assert await j.get("aj") == [1, "a"]

    asyncio.run(main())


def test_async_cancelled_call_does_not_break_the_loop(ck_redis: clusterkit.Clusterkit) -> None:
    a = ck_redis.aio.cache

    async def main() -> None:
        t = asyncio.ensure_future(a.set(b"c", b"1"))
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.05)
        assert await a.get(b"c") in (None, b"1")
        assert await a.get(b"never") is None

    asyncio.run(main())


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda c: c.get(b""), "key"),
        (lambda c: c.get(123), "key"),
        (lambda c: c.get(b"x" * 300_000), "key"),
        (lambda c: c.set(b"k", 5), "value"),
        (lambda c: c.set(b"k", b"v", ttl=-1), "ttl"),
        (lambda c: c.set(b"k", b"v", ttl=float("nan")), "ttl"),
        (lambda c: c.set(b"k", b"v", ttl=10**12), "ttl"),
        (lambda c: c.set(b"k", b"v", ttl="10"), "ttl"),
        (lambda c: c.set(b"k", b"x" * (17 * 1024 * 1024)), "value"),
        (lambda c: c.get_many([b"ok", 3]), "keys[1]"),
        (lambda c: c.get_many(5), "keys"),
        (lambda c: c.set_many([(b"k",)]), "items[0]"),
        (lambda c: c.incr(b"k", 2**70), "delta"),
        (lambda c: c.get_or_compute(b"k", 10, "not callable"), "compute"),
    ],
)
def test_bad_input_names_the_argument(call: Any, field: str) -> None:
    c = clusterkit.Clusterkit().cache
    with pytest.raises(InvalidArgumentError) as e:
        call(c)
    assert e.value.field is not None and e.value.field.startswith(field), (e.value.field, str(e.value))
    assert isinstance(e.value, clusterkit.ClusterkitError)
    assert e.value.kind == "invalid_argument"


def test_get_or_compute_runs_on_the_callers_thread_and_may_use_clusterkit(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    c.set(b"base", b"21")
    seen: List[int] = []

    def compute() -> bytes:
        seen.append(threading.get_ident())
        # A nested blocking call (and a lock) from inside the compute function.
        with ck.lock(fresh_ns("nested"), ttl=5):
            base = c.get(b"base")
        assert base is not None
        return b"%d" % (int(base) * 2)

    assert c.get_or_compute(b"derived", 60, compute) == b"42"
    assert seen == [threading.get_ident()]
    assert c.get_or_compute(b"derived", 60, compute) == b"42"
    assert len(seen) == 1
