"""Many threads on one cache and one lock (the GIL is released around every wait), and
1,000 concurrent asyncio tasks."""

from __future__ import annotations

import asyncio
import threading
from typing import List

import clusterkit
from conftest import fresh_ns

THREADS = 16


def run_threads(target: "object", n: int = THREADS) -> None:
    errors: List[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)  # type: ignore[operator]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
        assert not t.is_alive(), "a thread hung"
    assert not errors, errors


def test_16_threads_one_cache(ck: clusterkit.Clusterkit) -> None:
    c = ck.cache
    ops = 300

    def work(i: int) -> None:
        for j in range(ops):
            k = f"t{i}:{j % 20}".encode()
            c.set(k, b"%d" % j)
            assert c.get(k) == b"%d" % j
            c.incr(b"shared-counter")
        assert c.get_many([f"t{i}:{x}".encode() for x in range(20)]).count(None) == 0

    run_threads(work)
    assert c.get(b"shared-counter") == str(THREADS * ops).encode(), "no lost increment"


def test_16_threads_one_lock(ck: clusterkit.Clusterkit) -> None:
    name = fresh_ns("tl")
    inside = [0]
    max_inside = [0]
    fences: List[int] = []
    guard = threading.Lock()
    rounds = 10

    def work(i: int) -> None:
        for _ in range(rounds):
            with ck.lock(name, ttl=10, wait=60) as lk:
                with guard:
                    inside[0] += 1
                    max_inside[0] = max(max_inside[0], inside[0])
                    fences.append(lk.fencing_token)
                with guard:
                    inside[0] -= 1

    run_threads(work)
    assert max_inside[0] == 1, "two holders at once"
    assert len(fences) == THREADS * rounds
    assert len(set(fences)) == len(fences), "fencing tokens are unique"


def test_1000_concurrent_asyncio_tasks(ck: clusterkit.Clusterkit) -> None:
    a = ck.aio.cache
    n = 1000

    async def task(i: int) -> bytes:
        k = f"a{i}".encode()
        await a.set(k, b"%d" % i, ttl=60)
        await a.incr(b"acount")
        v = await a.get(k)
        assert v is not None
        return v

    async def main() -> None:
        got = await asyncio.gather(*(task(i) for i in range(n)))
        assert got == [b"%d" % i for i in range(n)]
        assert await a.get(b"acount") == str(n).encode()
        name = fresh_ns("al")
        holders = [0]
        peak = [0]

        async def locker() -> None:
            async with ck.aio.locks.acquire(name, 10, wait=60):
                holders[0] += 1
                peak[0] = max(peak[0], holders[0])
                await asyncio.sleep(0)
                holders[0] -= 1

        await asyncio.gather(*(locker() for _ in range(100)))
        assert peak[0] == 1

    asyncio.run(main())
