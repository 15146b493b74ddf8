"""The task queue from Python: enqueue options, introspection, dead letters and re-drive, the
threaded and asyncio workers (concurrency, heartbeat, graceful shutdown on SIGTERM), and a
worker process SIGKILLed mid-job whose job another worker reclaims. Each test runs on the
embedded backend and on a private redis-server (conftest), except the process tests, which
need Redis to share the queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import clusterkit
from conftest import fresh_ns, redis_config
from support import RedisServer, wait_until


def queue_config(kind: str, server: Any, **queue: Any) -> Dict[str, Any]:
    ns = fresh_ns("q")
    q: Dict[str, Any] = {"namespace": ns, "block": "200ms"}
    q.update(queue)
    if kind == "embedded":
        return {"queue": q}
    q["redis"] = server.address
    return redis_config(server, ns, queue=q)


@pytest.fixture(params=["embedded", "redis"])
def kind(request: Any) -> str:
    return str(request.param)


def make(kind: str, request: Any, **queue: Any) -> clusterkit.Clusterkit:
    server = request.getfixturevalue("redis_server") if kind == "redis" else None
    return clusterkit.Clusterkit(queue_config(kind, server, **queue))


@pytest.fixture
def ck(kind: str, request: Any) -> Iterator[clusterkit.Clusterkit]:
    c = make(kind, request)
    assert c.queue.backend == ("memory" if kind == "embedded" else "redis")
    yield c
    c.close()


def test_enqueue_reserve_ack_and_stats(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    jid = q.enqueue("emails", b"hello", max_attempts=4)
    assert len(jid) == 32
    s = q.stats("emails")
    assert s["waiting"] == 1 and s["in_flight"] == 0 and s["dead"] == 0
    c = q.consumer("emails")
    job = c.reserve(2)
    assert job is not None
    assert (job.id, job.queue, job.payload, job.attempt, job.max_attempts) == (jid, "emails", b"hello", 1, 4)
    assert job.priority == "normal" and job.last_error is None
    assert abs(job.enqueued_at_ms / 1000 - time.time()) < 60
    assert q.stats("emails")["in_flight"] == 1
    c.ack(job)
    assert q.stats("emails") == {"waiting": 0, "in_flight": 0, "delayed": 0, "dead": 0, "oldest_age_ms": None}
    with pytest.raises(clusterkit.ConflictError):
        c.ack(job)  # settled: the lease is gone
    assert c.reserve(0) is None
    m = q.metrics()
    assert m["enqueued"] >= 1 and m["completed"] >= 1


def test_enqueue_many_priorities_and_str_payloads(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    ids = q.enqueue_many("work", [b"low", ("high", {"priority": "high"}), (b"n", {})])
    assert len(ids) == 3 and len(set(ids)) == 3
    q.enqueue("work", "lowest", priority="low")
    c = q.consumer("work")
    got = c.reserve_many(10, 2)
    assert [j.payload for j in got][0] == b"high"
    assert sorted(j.payload for j in got) == sorted([b"high", b"low", b"n", b"lowest"])
    # ack_many: Jobs or receipts, one bool each; a repeated one is acked once
    assert c.ack_many([got[0], got[1].receipt, got[2], got[3], got[0]]) == [True, True, True, True, False]
    with pytest.raises(clusterkit.ConflictError):
        c.ack(got[1])
    assert q.stats("work")["in_flight"] == 0
    with pytest.raises(clusterkit.InvalidArgumentError, match=r"jobs\[1\]"):
        c.ack_many([got[0], 42])  # type: ignore[list-item]
    with pytest.raises(clusterkit.InvalidArgumentError, match=r"receipts\[1\]"):
        c.ack_many([got[0].receipt, "garbage"])
    with pytest.raises(clusterkit.InvalidArgumentError, match="jobs"):
        c.ack_many("nope")

    async def batch() -> List[bool]:
        aq = ck.aio.queue
        await aq.enqueue_many("work2", ["a", "b"])
        ac = aq.consumer("work2")
        jobs = await ac.reserve_many(2, 2)
        return await ac.ack_many(jobs + [jobs[0]])

    assert asyncio.run(batch()) == [True, True, False]


def test_ack_and_reserve(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    q.enqueue_many("ar", [b"a", b"b", b"c"])
    c = q.consumer("ar")
    acked, got = c.ack_and_reserve([], 2, 2)
    assert acked == [] and [j.payload for j in got] == [b"a", b"b"]
    with pytest.raises(clusterkit.InvalidArgumentError, match=r"receipts\[1\]"):
        c.ack_and_reserve([got[0].receipt, "garbage"], 2, 0)
    with pytest.raises(clusterkit.InvalidArgumentError, match="max"):
        c.ack_and_reserve([got[0]], 0, 0)
    assert q.stats("ar")["in_flight"] == 2
    # The acks (one repeated: acked once) and the next reserve in one call.
    acked, more = c.ack_and_reserve([got[0], got[1].receipt, got[0]], 5, 2)
    assert acked == [True, True, False] and [j.payload for j in more] == [b"c"]
    with pytest.raises(clusterkit.ConflictError):
        c.ack(got[1])

    async def run() -> Tuple[List[bool], int]:
        ac = ck.aio.queue.consumer("ar")
        acked, none = await ac.ack_and_reserve(more, 5, 0)
        return acked, len(none)

    assert asyncio.run(run()) == ([True], 0)
    assert q.stats("ar") == {"waiting": 0, "in_flight": 0, "delayed": 0, "dead": 0, "oldest_age_ms": None}


def test_delay_and_run_at(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    t0 = time.monotonic()
    q.enqueue("d", b"x", delay=0.4)
    q.enqueue("d", b"y", run_at=datetime.now(timezone.utc) + timedelta(seconds=0.4))
    assert q.stats("d")["delayed"] == 2
    c = q.consumer("d")
    assert c.reserve(0) is None
    got: List[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        j = c.reserve(1)
        if j is not None:
            got.append(j.payload)
            c.ack(j)
    assert sorted(got) == [b"x", b"y"]
    assert time.monotonic() - t0 >= 0.39


def test_idempotency_key(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    a = q.enqueue("i", b"1", idempotency_key="order-42")
    b = q.enqueue("i", b"2", idempotency_key="order-42", idempotency_ttl=60)
    assert a == b
    assert q.stats("i")["waiting"] == 1


def test_fail_retry_dead_letter_and_redrive(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    jid = q.enqueue("f", b"p", max_attempts=2, backoff={"kind": "fixed", "delay": 0.05})
    c = q.consumer("f")
    j = c.reserve(2)
    assert j is not None
    out = c.fail(j, "boom 1")
    assert out["outcome"] == "retry" and out["attempt"] == 2
    j2 = wait_until(lambda: c.reserve(0.5), "retry due", 5)
    assert j2.id == jid and j2.attempt == 2 and j2.last_error == "boom 1"
    assert c.fail(j2, "boom 2") == {"outcome": "dead"}
    s = q.stats("f")
    assert s["dead"] == 1 and s["waiting"] == 0
    dead = q.dead_jobs("f")
    assert len(dead) == 1
    assert dead[0]["id"] == jid and dead[0]["payload"] == b"p" and dead[0]["last_error"] == "boom 2"
    assert dead[0]["attempts"] == 2
    assert q.redrive("f") == 1
    j3 = c.reserve(2)
    assert j3 is not None and j3.id == jid and j3.attempt == 1
    c.ack(j3)
    assert q.stats("f")["dead"] == 0


def test_release_and_extend(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    q.enqueue("r", b"a")
    c = q.consumer("r")
    j = c.reserve(2)
    assert j is not None
    c.extend(j)
    c.release(j)
    j2 = c.reserve(2)
    assert j2 is not None and j2.attempt == 1  # release uses no attempt
    c.ack(j2.receipt)


def test_bad_input_names_the_field(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    cases: List[Any] = [
        (lambda: q.enqueue("", b"x"), "queue"),
        (lambda: q.enqueue("bad name!", b"x"), "queue"),
        (lambda: q.enqueue("ok", 12), "payload"),  # type: ignore[arg-type]
        (lambda: q.enqueue("ok", b"x", delay=0), "options.delay_ms"),
        (lambda: q.enqueue("ok", b"x", delay=-1), "options.delay_ms"),
        (lambda: q.enqueue("ok", b"x", delay="soon"), "delay"),  # type: ignore[arg-type]
        (lambda: q.enqueue("ok", b"x", max_attempts=0), "options.max_attempts"),
        (lambda: q.enqueue("ok", b"x", max_attempts=-3), "options.max_attempts"),
        (lambda: q.enqueue("ok", b"x", priority="urgent"), "options.priority"),
        (lambda: q.enqueue("ok", b"x", backoff={"kind": "linear", "delay": 1}), "options.backoff.kind"),
        (lambda: q.enqueue("ok", b"x", idempotency_ttl=5), "options.idempotency_ttl_ms"),
        (lambda: q.enqueue("ok", b"x" * (1024 * 1024 + 1)), "payload"),
        (lambda: q.enqueue_many("ok", [b"a", (b"b", {"delay": -2})]), "jobs[1].options.delay_ms"),
        (lambda: q.enqueue_many("ok", [(b"b", {"colour": 1})]), "jobs[0]"),
        (lambda: q.consumer("ok").reserve(-1), "timeout"),
        (lambda: q.consumer("ok").reserve_many(0, 1), "max"),
        (lambda: q.redrive("ok", 0), "limit"),
        (lambda: q.worker("ok", lambda j: None, concurrency=0), "concurrency"),
    ]
    for call, field in cases:
        with pytest.raises(clusterkit.InvalidArgumentError) as e:
            call()
        assert e.value.field == field, (field, e.value.field, e.value.message)
    assert q.stats("ok")["waiting"] == 0  # nothing of a rejected batch was stored


def test_unknown_queue_with_allow_list(kind: str, request: Any) -> None:
    c = make(kind, request, queues=["emails"])
    with pytest.raises(clusterkit.InvalidArgumentError) as e:
        c.queue.enqueue("reports", b"x")
    assert e.value.field == "queue"
    c.queue.enqueue("emails", b"x")
    c.close()


def test_worker_threads_process_everything(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    n = 200
    q.enqueue_many("w", [str(i) for i in range(n)])
    seen: List[int] = []
    lock = threading.Lock()
    threads = set()

    def handler(job: clusterkit.Job) -> None:
        i = int(job.payload)
        threads.add(threading.current_thread().name)
        if i % 50 == 7 and job.attempt == 1:
            raise RuntimeError(f"flaky {i}")
        with lock:
            seen.append(i)

    w = q.worker("w", handler, concurrency=4)
    # The 4 failed first attempts come back after the queue's default backoff (about 1 s).
    res = w.run(max_jobs=n + 4, timeout=30)
    assert res.failed == 4 and res.completed == n and res.lost == 0
    assert sorted(set(seen)) == list(range(n))
    assert q.stats("w")["in_flight"] == 0
    assert len(threads) > 1


def test_heartbeat_keeps_a_long_job(kind: str, request: Any) -> None:
    c = make(kind, request, visibility_timeout="300ms")
    q = c.queue
    q.enqueue("long", b"x")
    other = q.consumer("long")
    stolen: List[Any] = []

    def handler(job: clusterkit.Job) -> None:
        # Three visibility timeouts long; another consumer tries to reclaim meanwhile.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            j = other.reserve(0.1)
            if j is not None:
                stolen.append(j)

    w = q.worker("long", handler, heartbeat=0.08)
    res = w.run(max_jobs=1, timeout=10)
    assert res.completed == 1 and res.lost == 0
    assert stolen == []
    c.close()


def test_without_heartbeat_a_long_job_is_reclaimed(kind: str, request: Any) -> None:
    # The counter-test: a lease that is not extended expires and another consumer gets it.
    c = make(kind, request, visibility_timeout="200ms")
    q = c.queue
    jid = q.enqueue("long2", b"x", max_attempts=5)
    a, b = q.consumer("long2"), q.consumer("long2")
    j = a.reserve(2)
    assert j is not None
    j2 = wait_until(lambda: b.reserve(0.2), "reclaimed job", 5)
    assert j2.id == jid and j2.attempt == 2
    with pytest.raises(clusterkit.ConflictError):
        a.ack(j)
    b.ack(j2)
    c.close()


def test_worker_stop_from_another_thread_returns_leases(ck: clusterkit.Clusterkit) -> None:
    q = ck.queue
    q.enqueue_many("s", [b"1", b"2", b"3"])
    started = threading.Event()
    w: Any = None

    def handler(job: clusterkit.Job) -> None:
        started.set()
        time.sleep(0.3)

    w = q.worker("s", handler, concurrency=1, handle_signals=False)
    t = threading.Thread(target=lambda: (started.wait(5), w.stop()))
    t.start()
    res = w.run(timeout=20)
    t.join()
    assert res.completed == 1  # the job in progress finished
    s = q.stats("s")
    assert s["in_flight"] == 0 and s["waiting"] == 2


def test_async_worker(ck: clusterkit.Clusterkit) -> None:
    aq = ck.aio.queue

    async def main() -> List[bytes]:
        await aq.enqueue_many("a", [f"{i}" for i in range(50)])
        await aq.enqueue("a", b"bad", max_attempts=1)
        got: List[bytes] = []
        active = 0
        peak = 0

        async def handler(job: clusterkit.Job) -> None:
            nonlocal active, peak
            if job.payload == b"bad":
                raise ValueError("no good")
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1
            got.append(job.payload)

        w = aq.worker("a", handler, concurrency=8)
        res = await w.run(max_jobs=51, timeout=30)
        assert res.completed == 50 and res.failed == 1
        assert peak > 1
        s = await aq.stats("a")
        assert s["dead"] == 1 and s["in_flight"] == 0
        c = aq.consumer("a")
        assert await c.reserve(0) is None
        assert await aq.redrive("a") == 1
        j = await c.reserve(2)
        assert j is not None and j.payload == b"bad"
        out = await c.fail(j, "still bad")
        assert out == {"outcome": "dead"}
        return got

    got = asyncio.run(main())
    assert sorted(got) == sorted(f"{i}".encode() for i in range(50))


WORKER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time, json
    import clusterkit
    cfg, queue, mode, marker = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    ck = clusterkit.Clusterkit(cfg)

    def handler(job):
        with open(marker, "a") as f:
            f.write(job.id + "\\n")
        if mode == "hang":
            time.sleep(60)
        else:
            time.sleep(0.5)

    res = ck.queue.worker(queue, handler, concurrency=1).run(timeout=30)
    print(json.dumps({"completed": res.completed, "returned": res.returned}), flush=True)
    """
)


def spawn_worker(cfg: Dict[str, Any], queue: str, mode: str, marker: str) -> "subprocess.Popen[bytes]":
    import json

    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(cfg), queue, mode, marker],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_killed_worker_process_job_is_reclaimed(redis_server: RedisServer, tmp_path: Any) -> None:
    cfg = queue_config("redis", redis_server, visibility_timeout="500ms")
    ck = clusterkit.Clusterkit(cfg)
    jid = ck.queue.enqueue("k", b"work", max_attempts=3)
    marker = str(tmp_path / "started")
    p = spawn_worker(cfg, "k", "hang", marker)
    try:
        wait_until(lambda: os.path.exists(marker) or None, "worker started the job", 20)
        assert ck.queue.stats("k")["in_flight"] == 1
        p.kill()  # SIGKILL mid-job: no ack, no release
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    c = ck.queue.consumer("k")
    j = wait_until(lambda: c.reserve(0.3), "reclaimed job", 10)
    assert j.id == jid and j.attempt == 2 and j.payload == b"work"
    c.ack(j)
    assert ck.queue.stats("k") == {"waiting": 0, "in_flight": 0, "delayed": 0, "dead": 0, "oldest_age_ms": None}
    ck.close()


def test_sigterm_finishes_the_job_in_progress(redis_server: RedisServer, tmp_path: Any) -> None:
    import json

    cfg = queue_config("redis", redis_server)
    ck = clusterkit.Clusterkit(cfg)
    ck.queue.enqueue_many("t", [b"1", b"2"])
    marker = str(tmp_path / "started")
    p = spawn_worker(cfg, "t", "slow", marker)
    try:
        wait_until(lambda: os.path.exists(marker) or None, "worker started a job", 20)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 0, err.decode()
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert res["completed"] == 1  # finished the job it had, took no other
    s = ck.queue.stats("t")
    assert s["in_flight"] == 0 and s["waiting"] == 1
    ck.close()


def test_closed_deployment(kind: str, request: Any) -> None:
    c = make(kind, request)
    q = c.queue
    c.close()
    with pytest.raises(clusterkit.ClosedError):
        q.enqueue("x", b"y")
