"""1,000,000 mixed operations with memory flat: after a warm-up, RSS may not grow by more
than a bound far below what a leak of a few bytes per operation would add."""

from __future__ import annotations

import gc

import clusterkit
from support import RedisServer, rss_bytes

OPS = 1_000_000
# A leak of 4 bytes per op over the measured 750k ops would add ~3 MB; allow less than that.
BOUND = 2 * 1024 * 1024


def test_million_mixed_ops_memory_flat() -> None:
    ck = clusterkit.Clusterkit({"cache": {"namespace": "mem"}})
    c = ck.cache
    pool = clusterkit.Pool("mem", strategy="round_robin")
    pool.add_node("a", "127.0.0.1", 1)
    pool.add_node("b", "127.0.0.1", 2)
    keys = [b"k%d" % i for i in range(1000)]
    val = b"v" * 100

    def batch(n: int) -> None:
        for i in range(n // 10):
            k = keys[i % 1000]
            c.set(k, val)
            c.get(k)
            c.get(b"missing")
            c.has(k)
            c.incr(b"ctr")
            c.delete(k)
            c.add(k, val, ttl=60)
            c.get_many(keys[:4])
            with pool.pick():
                pass
            try:
                c.get(b"")
            except clusterkit.InvalidArgumentError:
                pass

    batch(OPS // 4)  # warm-up: allocator pools, caches, the runtime
    gc.collect()
    before = rss_bytes()
    batch(OPS - OPS // 4)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < BOUND, f"RSS grew by {grown} bytes over {OPS - OPS // 4} ops"
    assert c.get(b"ctr") == str(OPS // 10).encode()


def test_asyncio_ops_memory_flat() -> None:
    """The asyncio bridge (a task on the core's runtime, a future completed through
    call_soon_threadsafe) leaks nothing per call."""
    import asyncio

    ck = clusterkit.Clusterkit({"cache": {"namespace": "amem"}})
    a = ck.aio.cache
    n = 200_000

    async def run(count: int) -> None:
        for i in range(count // 4):
            k = b"k%d" % (i % 100)
            await a.set(k, b"v" * 50)
            await a.get(k)
            await a.get(b"missing")
            try:
                await a.get(b"")
            except clusterkit.InvalidArgumentError:
                pass

    async def main() -> int:
        await run(n // 4)
        gc.collect()
        before = rss_bytes()
        await run(n - n // 4)
        gc.collect()
        return rss_bytes() - before

    grown = asyncio.run(main())
    # 4 bytes leaked per call would add 600 KB over the measured 150k calls.
    assert grown < 512 * 1024, f"RSS grew by {grown} bytes over {n - n // 4} async calls"


def test_asyncio_redis_calls_memory_flat(redis_server: RedisServer) -> None:
    """Awaited calls that wait for Redis go through a task on the core's runtime and a
    future completed with call_soon_threadsafe: nothing of either may stay behind."""
    import asyncio

    from conftest import fresh_ns, redis_config

    ck = clusterkit.Clusterkit(redis_config(redis_server, fresh_ns("amr")))
    a = ck.aio.cache
    rounds, width = 1200, 50

    async def run(count: int) -> None:
        async def one(i: int) -> None:
            k = b"k%d" % (i % 50)
            await a.set(k, b"v" * 50)
            assert await a.get(k) == b"v" * 50

        for r in range(count):
            await asyncio.gather(*(one(r * width + i) for i in range(width)))

    async def main() -> int:
        await run(rounds // 4)
        gc.collect()
        before = rss_bytes()
        await run(rounds - rounds // 4)
        gc.collect()
        return rss_bytes() - before

    grown = asyncio.run(main())
    calls = (rounds - rounds // 4) * width * 2
    # A leaked future, task or reply (tens of bytes or more per call) would add megabytes.
    assert grown < 1024 * 1024, f"RSS grew by {grown} bytes over {calls} awaited Redis calls"
