"""After os.fork(): multiprocessing with the fork start method, and a real
`gunicorn --preload` with 2 workers serving requests from one deployment built before the
fork."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import clusterkit
from conftest import fresh_ns, redis_config
from support import RedisServer, free_port, wait_port, wait_until


def child_work(cfg: Dict[str, Any], i: int) -> Dict[str, Any]:
    ck = clusterkit.Clusterkit.shared(cfg)
    ck.cache.set(f"child{i}", b"%d" % os.getpid())
    with ck.lock("forklock", ttl=5, wait=10) as lk:
        fence = lk.fencing_token

    async def aio() -> bytes | None:
        # The asyncio face in the child too (its runtime is the child's own).
        await ck.aio.cache.set(f"achild{i}", b"async")
        return await ck.aio.cache.get(f"achild{i}")

    import asyncio

    return {"pid": os.getpid(), "v": ck.cache.get(f"child{i}"), "n": ck.cache.incr("forkcount"), "fence": fence,
            "aio": asyncio.run(aio())}


def test_multiprocessing_fork(redis_server: RedisServer) -> None:
    cfg = redis_config(redis_server, fresh_ns())
    ck = clusterkit.Clusterkit.shared(cfg)
    # Used (runtime, connections, a lock) in the parent before the fork.
    ck.cache.set("parent", b"1")
    with ck.lock("forklock", ttl=5):
        pass

    async def warm() -> None:
        await ck.aio.cache.get("parent")

    import asyncio

    asyncio.run(warm())
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        results: List[Dict[str, Any]] = pool.starmap(child_work, [(cfg, i) for i in range(8)])
    assert {r["v"] for r in results} == {str(r["pid"]).encode() for r in results}
    assert sorted(r["n"] for r in results) == list(range(1, 9))
    assert len({r["fence"] for r in results}) == 8
    assert all(r["aio"] == b"async" for r in results)
    # The parent still works after its children.
    assert ck.cache.get("forkcount") == b"8"
    assert ck.cache.get("child0") is not None


def test_embedded_fork_child_keeps_working() -> None:
    ck = clusterkit.Clusterkit()
    ck.cache.set("k", b"before")
    ctx = multiprocessing.get_context("fork")
    q: "multiprocessing.Queue[Any]" = ctx.Queue()

    def child() -> None:
        try:
            got = ck.cache.get("k")
            ck.cache.set("k", b"child")
            q.put((got, ck.cache.get("k")))
        except BaseException as e:  # noqa: BLE001
            q.put(repr(e))

    p = ctx.Process(target=child)
    p.start()
    assert q.get(timeout=30) == (b"before", b"child")
    p.join(10)
    assert p.exitcode == 0
    assert ck.cache.get("k") == b"before", "the child's embedded cache is its own copy"


APP = """
import os
import clusterkit

CFG = {cfg!r}
ck = clusterkit.Clusterkit.shared(CFG)
ck.cache.set("preloaded", b"by-master")   # used in the master before gunicorn forks

def app(environ, start_response):
    n = ck.cache.incr("hits")
    with ck.lock("gunicorn-lock", ttl=5, wait=5) as lk:
        fence = lk.fencing_token
    body = f"{{os.getpid()}} {{n}} {{fence}} {{ck.cache.get('preloaded').decode()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def test_gunicorn_preload_two_workers(redis_server: RedisServer, tmp_path: Path) -> None:
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or shutil.which("gunicorn")
    assert gunicorn, "gunicorn is missing (run-tests installs it)"
    cfg = redis_config(redis_server, fresh_ns())
    (tmp_path / "ckapp.py").write_text(textwrap.dedent(APP.format(cfg=cfg)))
    port = free_port()
    proc = subprocess.Popen(
        [gunicorn, "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "ckapp:app"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(port, "gunicorn", deadline_s=30, proc=proc)
        # Both workers must be up (two children of the master).
        wait_until(lambda: len(_children(proc.pid)) == 2 or None, "two gunicorn workers")
        pids = set()
        hits = []
        deadline = time.monotonic() + 30
        i = 0
        while (len(pids) < 2 or i < 40) and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                pid, n, fence, pre = r.read().decode().split()
            pids.add(pid)
            hits.append(int(n))
            assert pre == "by-master"
            i += 1
        assert len(pids) == 2, f"requests were served by {pids}"
        assert sorted(hits) == list(range(1, len(hits) + 1)), "every request counted once"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in out, out


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
