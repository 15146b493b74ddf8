"""Locks in both faces: context managers, fencing, validity, extend, release, loss,
auto-renewal, bad input; embedded and Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

import clusterkit
from clusterkit import ClosedError, ConflictError, InvalidArgumentError, TimeoutError
from conftest import fresh_ns, redis_config
from support import RedisServer


def test_context_manager_fencing_and_release(ck: clusterkit.Clusterkit) -> None:
    name = fresh_ns("lock")
    with ck.lock(name, ttl=5) as l1:
        assert l1.is_held and l1.name == name
        assert 0 < l1.valid_for <= 5
        assert len(l1.token) == 32
        assert ck.locks.try_acquire(name, 5) is None
        with pytest.raises(ConflictError):
            ck.locks.acquire(name, 5, wait=0)
        with pytest.raises(TimeoutError):
            ck.locks.acquire(name, 5, wait=0.1)
        f1 = l1.fencing_token
    assert not l1.is_held and l1.valid_for == 0
    with ck.locks.acquire(name, 5) as l2:
        assert l2.fencing_token > f1
    with pytest.raises(ClosedError):
        l2.release()
    assert l1.token not in repr(l1)


def test_extend_and_expiry_is_learned(ck: clusterkit.Clusterkit) -> None:
    name = fresh_ns("lock")
    lk = ck.locks.acquire(name, 0.3)
    lk.extend(5)
    assert lk.valid_for > 4
    lk.extend(0.1)
    assert lk.wait_lost(2) is True, "the holder learns that validity ran out"
    assert not lk.is_held
    other = ck.locks.acquire(name, 5, wait=2)
    with pytest.raises(ConflictError):
        lk.extend(5)
    with pytest.raises(ConflictError):
        lk.release()
    other.release()


def test_waiter_gets_the_lock_on_release(ck: clusterkit.Clusterkit) -> None:
    name = fresh_ns("lock")
    holder = ck.locks.acquire(name, 10)
    import threading

    got: list[int] = []

    def waiter() -> None:
        with ck.locks.acquire(name, 10, wait=5) as l2:
            got.append(l2.fencing_token)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    assert not got
    holder.release()
    t.join(5)
    assert got and got[0] > holder.fencing_token


def test_exception_in_block_is_kept_and_lock_released(ck: clusterkit.Clusterkit) -> None:
    name = fresh_ns("lock")
    with pytest.raises(RuntimeError):
        with ck.lock(name, 5):
            raise RuntimeError("work failed")
    assert ck.locks.try_acquire(name, 1) is not None


def test_wait_lost_times_out_while_held(ck: clusterkit.Clusterkit) -> None:
    with ck.lock(fresh_ns("lock"), 5) as lk:
        assert lk.wait_lost(0.05) is False


def test_auto_renew_keeps_the_lock_and_tells_when_it_fails(redis_server: RedisServer) -> None:
    ns = fresh_ns()
    ck = clusterkit.Clusterkit(redis_config(redis_server, ns, locks={"auto_renew": True}))
    name = fresh_ns("renew")
    lk = ck.lock(name, ttl=0.3)
    time.sleep(0.7)
    assert lk.is_held, "renewed past its TTL"
    # Someone deletes the key behind the holder's back: the next renewal fails.
    keys = redis_server.command("KEYS", f"{ns}:l:*")
    assert isinstance(keys, list) and keys
    for k in keys:
        assert isinstance(k, bytes)
        redis_server.command("DEL", k)
    assert lk.wait_lost(2) is True
    assert not lk.is_held
    with pytest.raises(ConflictError):
        lk.release()


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda ls: ls.acquire("", 5), "name"),
        (lambda ls: ls.acquire("x" * 2000, 5), "name"),
        (lambda ls: ls.acquire("a\nb", 5), "name"),
        (lambda ls: ls.acquire(b"bytes", 5), "name"),
        (lambda ls: ls.acquire("ok", 0), "ttl"),
        (lambda ls: ls.acquire("ok", 86400 * 2), "ttl"),
        (lambda ls: ls.acquire("ok", -1), "ttl"),
        (lambda ls: ls.acquire("ok", 5, wait=-1), "wait"),
        (lambda ls: ls.try_acquire("ok", "5"), "ttl"),
    ],
)
def test_bad_lock_input(call: object, field: str) -> None:
    ls = clusterkit.Clusterkit().locks
    with pytest.raises(InvalidArgumentError) as e:
        call(ls)  # type: ignore[operator]
    assert e.value.field == field


def test_async_locks(ck: clusterkit.Clusterkit) -> None:
    name = fresh_ns("alock")

    async def main() -> None:
        async with ck.aio.locks.acquire(name, 5) as l1:
            assert l1.is_held
            assert await ck.aio.locks.try_acquire(name, 5) is None
            await l1.extend(5)
            assert await l1.wait_lost(0.05) is False
            f1 = l1.fencing_token
        l2 = await ck.aio.locks.acquire(name, 5, wait=1)
        assert l2.fencing_token > f1
        waiter = asyncio.ensure_future(ck.aio.locks.acquire(name, 5, wait=5))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await l2.release()
        l3 = await waiter
        assert l3.fencing_token > l2.fencing_token
        with pytest.raises(ClosedError):
            await l2.release()
        await l3.release()
        with pytest.raises(TimeoutError):
            async with ck.aio.lock(name, 5):
                await ck.aio.locks.acquire(name, 5, wait=0.05)

    asyncio.run(main())


def test_without_fencing(ck: clusterkit.Clusterkit) -> None:
    """``fencing=False`` (issue #18): no token (NotFoundError naming the option), still
    exclusive, fenced tokens keep increasing around it; both faces."""
    name = fresh_ns("nofence")
    with ck.locks.acquire(name, 5) as fenced:
        assert fenced.has_fencing_token
        first = fenced.fencing_token
    plain = ck.locks.acquire(name, 5, wait=0, fencing=False)
    assert plain.is_held and not plain.has_fencing_token
    with pytest.raises(clusterkit.NotFoundError) as e:
        plain.fencing_token
    assert "fencing = false" in str(e.value) and name in str(e.value)
    assert plain.token not in str(e.value)
    assert "fencing_token=None" in repr(plain)
    assert ck.locks.try_acquire(name, 5) is None
    assert ck.locks.try_acquire(name, 5, fencing=False) is None
    plain.release()
    again = ck.locks.try_acquire(name, 5)
    assert again is not None and again.fencing_token > first
    again.release()

    async def main() -> None:
        async with ck.aio.locks.acquire(name, 5, fencing=False) as l1:
            assert not l1.has_fencing_token
            with pytest.raises(clusterkit.NotFoundError):
                l1.fencing_token
            assert await ck.aio.locks.try_acquire(name, 5, fencing=False) is None
        l2 = await ck.aio.locks.try_acquire(name, 5, fencing=False)
        assert l2 is not None and not l2.has_fencing_token
        await l2.release()

    asyncio.run(main())
