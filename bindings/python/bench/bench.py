"""Side-by-side benchmarks of the Python binding against its peers, one run, one machine,
the same private redis-server(s) (BENCHMARKS.md, section "Python (issue #13)").

    bindings/python/bench/run            (makes a venv with the peers, then runs this)

Peers: redis-benchmark -c 1 (the round-trip floor), redis-py with hiredis (sync, a
connection pool for threads, redis.asyncio), django-redis, redis-py's Lock, pottery's Redlock.
Every figure is operations per second (higher is better); the ratio is clusterkit / peer.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

import clusterkit  # noqa: E402
from support import RedisServer  # noqa: E402

N = int(os.environ.get("CK_BENCH_N", "20000"))
ROWS: List[Tuple[str, float, str, float, str]] = []


def rate(fn: Callable[[], Any], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def pair(ck: Callable[[], float], peer: Callable[[], float], rounds: int = 5) -> Tuple[float, float]:
    """clusterkit and its peer measured alternately, ``rounds`` times each; the best of each
    (the machine is shared: alternating keeps both under the same background load)."""
    a: List[float] = []
    b: List[float] = []
    for _ in range(rounds):
        a.append(ck())
        b.append(peer())
    return max(a), max(b)


def compare(what: str, ck: Callable[[], float], peer_name: str, peer: Callable[[], float], target: str) -> None:
    a, b = pair(ck, peer)
    row(what, a, peer_name, b, target)


def row(what: str, ck: float, peer_name: str, peer: float, target: str) -> None:
    ROWS.append((what, ck, peer_name, peer, target))
    print(f"{what:44} clusterkit {ck:10.0f}/s  {peer_name:28} {peer:10.0f}/s  ratio {ck / peer:5.2f}  (target {target})", flush=True)


def redis_benchmark(port: int, test: str) -> float:
    rb = shutil.which("redis-benchmark")
    assert rb, "redis-benchmark is missing (Debian package redis-tools)"
    out = subprocess.run([rb, "-p", str(port), "-c", "1", "-n", str(N * 2), "-t", test, "-q", "-P", "1"],
                         capture_output=True, text=True, check=True).stdout
    m = re.findall(r"([0-9.]+) requests per second", out)
    assert m, out
    return float(m[-1])


def commands(server: RedisServer) -> int:
    info = server.command("INFO", "stats")
    assert isinstance(info, bytes)
    m = re.search(rb"total_commands_processed:(\d+)", info)
    assert m
    return int(m.group(1))


def main() -> None:
    server = RedisServer()
    masters = [RedisServer() for _ in range(3)]
    try:
        run(server, masters)
    finally:
        server.stop()
        for m in masters:
            m.stop()
    print("\n| benchmark | clusterkit ops/s | peer | peer ops/s | ratio | target |")
    print("|---|---:|---|---:|---:|---|")
    for what, ck, peer_name, peer, target in ROWS:
        print(f"| {what} | {ck:,.0f} | {peer_name} | {peer:,.0f} | {ck / peer:.2f} | {target} |")


def run(server: RedisServer, masters: List[RedisServer]) -> None:
    port = server.port
    cfg = {
        "pools": {
            "one": {"nodes": [{"id": "r1", "host": "127.0.0.1", "port": port}]},
            "three": {"nodes": [{"id": f"m{i}", "host": "127.0.0.1", "port": m.port} for i, m in enumerate(masters)]},
        },
        "cache": {"redis": server.address, "namespace": "bench"},
        "locks": {"pool": "one"},
    }
    ck = clusterkit.Clusterkit(cfg)
    ck3 = clusterkit.Clusterkit({**cfg, "locks": {"pool": "three"}})
    c = ck.cache
    r = redis.Redis(host="127.0.0.1", port=port)
    assert redis.utils.HIREDIS_AVAILABLE, "hiredis is not installed"
    val = b"x" * 100
    c.set(b"k", val)
    r.set(b"bench:c:k", val)

    # --- single get / set on one connection ---------------------------------------------------
    # Every clusterkit call is a real round trip: the server counts them.
    before = commands(server)
    rate(lambda: c.get(b"k"), 1000)
    assert commands(server) - before >= 1000, "clusterkit GETs did not all reach the server"
    ck_get, floor_get = pair(lambda: rate(lambda: c.get(b"k"), N), lambda: redis_benchmark(port, "get"))
    ck_get2, py_get = pair(lambda: rate(lambda: c.get(b"k"), N), lambda: rate(lambda: r.get(b"bench:c:k"), N))
    ck_set, floor_set = pair(lambda: rate(lambda: c.set(b"k", val), N), lambda: redis_benchmark(port, "set"))
    ck_set2, py_set = pair(lambda: rate(lambda: c.set(b"k", val), N), lambda: rate(lambda: r.set(b"bench:c:k", val), N))
    row("GET, one connection", ck_get2, "redis-py+hiredis", py_get, ">= 1.15x")
    row("GET, one connection", ck_get, "redis-benchmark -c 1", floor_get, ">= 0.90x")
    row("SET, one connection", ck_set2, "redis-py+hiredis", py_set, ">= 1.15x")
    row("SET, one connection", ck_set, "redis-benchmark -c 1", floor_set, ">= 0.90x")

    # --- 8 threads ------------------------------------------------------------------------------
    pool_r = redis.Redis(connection_pool=redis.BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=8))

    def threaded(fn: Callable[[], Any], threads: int = 8, per: int = N // 4) -> float:
        def work() -> None:
            for _ in range(per):
                fn()
        ts = [threading.Thread(target=work) for _ in range(threads)]
        t = time.perf_counter()
        for x in ts:
            x.start()
        for x in ts:
            x.join()
        return threads * per / (time.perf_counter() - t)

    compare("GET, 8 threads", lambda: threaded(lambda: c.get(b"k")), "redis-py pool (8)",
            lambda: threaded(lambda: pool_r.get(b"bench:c:k")), ">= 2x")

    # --- asyncio, 50 concurrent tasks ----------------------------------------------------------
    async def aio_rate(get: Callable[[], Any], tasks: int = 50, per: int = N // 50) -> float:
        async def worker() -> None:
            for _ in range(per):
                await get()
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        return tasks * per / (time.perf_counter() - t)

    async def aio_both() -> Tuple[float, float]:
        ar = aioredis.Redis(host="127.0.0.1", port=port, max_connections=50)
        a = ck.aio.cache
        await a.get(b"k")
        await ar.get(b"bench:c:k")
        ckr = pyr = 0.0
        for _ in range(5):
            ckr = max(ckr, await aio_rate(lambda: a.get(b"k")))
            pyr = max(pyr, await aio_rate(lambda: ar.get(b"bench:c:k")))
        await ar.aclose()
        return ckr, pyr

    ckr, pyr = asyncio.run(aio_both())
    row("GET, asyncio 50 tasks", ckr, "redis.asyncio", pyr, ">= 1.5x")

    # --- get_many of 16 keys --------------------------------------------------------------------
    keys = [b"m%d" % i for i in range(16)]
    c.set_many([(k, val) for k in keys])
    rkeys = [b"bench:c:" + k for k in keys]
    r.mset({k: val for k in rkeys})
    compare("get_many 16 keys (calls)", lambda: rate(lambda: c.get_many(keys), N // 2), "redis-py mget",
            lambda: rate(lambda: r.mget(rkeys), N // 2), ">= 1.5x")

    # --- Django cache get/set ------------------------------------------------------------------
    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "ck": {"BACKEND": "clusterkit.django.Cache", "OPTIONS": {"CONFIG": cfg}},
            "dr": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0",
                   "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"}},
        }
    )
    django.setup()
    from django.core.cache import caches

    dck, ddr = caches["ck"], caches["dr"]
    dck.set("dk", {"a": 1})
    ddr.set("dk", {"a": 1})
    compare("Django cache get", lambda: rate(lambda: dck.get("dk"), N), "django-redis",
            lambda: rate(lambda: ddr.get("dk"), N), ">= 1.3x")
    compare("Django cache set", lambda: rate(lambda: dck.set("dk", {"a": 1}), N), "django-redis",
            lambda: rate(lambda: ddr.set("dk", {"a": 1}), N), ">= 1.3x")

    # --- locks ----------------------------------------------------------------------------------
    def ck_lock(k: clusterkit.Clusterkit) -> None:
        k.locks.acquire("bl", 10, wait=0).release()

    def py_lock() -> None:
        lk = r.lock("pybl", timeout=10)
        assert lk.acquire(blocking=False)
        lk.release()

    compare("lock acquire+release, 1 Redis", lambda: rate(lambda: ck_lock(ck), N // 4), "redis-py Lock",
            lambda: rate(py_lock, N // 4), ">= 1.3x")

    from pottery import Redlock

    pmasters = [redis.Redis(host="127.0.0.1", port=m.port) for m in masters]

    def pottery_lock() -> None:
        lk = Redlock(key="potbl", masters=pmasters, auto_release_time=10)
        assert lk.acquire(blocking=False)
        lk.release()

    compare("Redlock acquire+release, 3 Redis", lambda: rate(lambda: ck_lock(ck3), N // 8), "pottery Redlock",
            lambda: rate(pottery_lock, N // 8), ">= 5x")


if __name__ == "__main__":
    main()
