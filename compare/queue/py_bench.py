"""One measurement per process (bench.py interleaves them): clusterkit's queue from Python vs RQ.

    python py_bench.py <ck|rq> enqueue <single|bulk> <port> <N>  -> {"jobs_s": ...}
    python py_bench.py <ck|rq> fill <port> <N>
    python py_bench.py <ck|rq> work <port> <concurrency>          -> "ready", waits for "go",
        processes until the queue is empty -> {"count": ..., "last_done_ms": ...}
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

QUEUE = "bench"
BATCH = 1000


def ck_queue(port: int) -> Any:
    import clusterkit

    return clusterkit.Clusterkit({"queue": {"redis": f"127.0.0.1:{port}", "namespace": "bench"}}).queue


def rq_queue(port: int) -> Any:
    from redis import Redis
    from rq import Queue

    return Queue(QUEUE, connection=Redis(host="127.0.0.1", port=port))


def enqueue(lib: str, kind: str, port: int, n: int) -> float:
    if lib == "ck":
        q = ck_queue(port)
        q.stats(QUEUE)
        t0 = time.perf_counter()
        if kind == "single":
            for i in range(n):
                q.enqueue(QUEUE, json.dumps({"i": i}))
        else:
            for i in range(0, n, BATCH):
                q.enqueue_many(QUEUE, [json.dumps({"i": j}) for j in range(i, min(n, i + BATCH))])
        return time.perf_counter() - t0
    from rq import Queue
    from rqjobs import noop

    q = rq_queue(port)
    q.connection.ping()
    t0 = time.perf_counter()
    if kind == "single":
        for i in range(n):
            q.enqueue(noop, i, result_ttl=0)
    else:
        for i in range(0, n, BATCH):
            q.enqueue_many([Queue.prepare_data(noop, (j,), result_ttl=0) for j in range(i, min(n, i + BATCH))])
    return time.perf_counter() - t0


def work(lib: str, port: int, concurrency: int) -> None:
    if lib == "ck":
        q = ck_queue(port)
        q.stats(QUEUE)
        count = [0]
        last = [0.0]
        lock = threading.Lock()

        def handler(job: Any) -> None:
            with lock:
                count[0] += 1
                last[0] = time.time()

        w = q.worker(QUEUE, handler, concurrency=concurrency, handle_signals=False)
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.time()

        def watch() -> None:
            while True:
                time.sleep(0.05)
                with lock:
                    idle = time.time() - last[0] > 0.5 if count[0] else time.time() - started > 15
                if idle:
                    w.stop()
                    return

        threading.Thread(target=watch, daemon=True).start()
        w.run()
        print(json.dumps({"count": count[0], "last_done_ms": last[0] * 1000}), flush=True)
        return
    from rq import SimpleWorker
    from rq.registry import FailedJobRegistry

    rq = rq_queue(port)
    worker = SimpleWorker([rq], connection=rq.connection)
    print("ready", flush=True)
    sys.stdin.readline()
    before = rq.count
    worker.work(burst=True, logging_level="WARNING")
    done = time.time()
    # rq 3's successful_job_count stays 0 with result_ttl=0: count what this worker drained
    # (other workers drain the same list: the driver checks the total, failures excluded).
    failed = FailedJobRegistry(queue=rq).count
    drained = worker.successful_job_count or max(0, before - rq.count - failed)
    print(json.dumps({"count": drained, "last_done_ms": done * 1000, "failed": failed}), flush=True)


def main(argv: List[str]) -> None:
    lib, mode = argv[0], argv[1]
    if mode == "enqueue":
        kind, port, n = argv[2], int(argv[3]), int(argv[4])
        s = enqueue(lib, kind, port, n)
        print(json.dumps({"jobs_s": n / s}), flush=True)
    elif mode == "fill":
        enqueue(lib, "bulk", int(argv[2]), int(argv[3]))
        print(json.dumps({"ok": True}), flush=True)
    elif mode == "work":
        work(lib, int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
