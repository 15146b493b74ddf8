"""Side-by-side task queue benchmark (BENCHMARKS.md, "Task queue (issue #16)"): clusterkit
from Node vs BullMQ, clusterkit from Python vs RQ, on ONE private redis-server, interleaved
(peer, ours, peer, ours, ...) over several rounds because the machine is shared and noisy.

Scenarios: enqueue single (one awaited call at a time), enqueue bulk (batches of 1000), and
process throughput with 1 and 4 worker processes (jobs pre-filled; time from "go" to the last
job done, worker start-up excluded). Run through ./run (which installs the peers).

Environment: QB_ONLY (run only the scenarios whose "lang name" contains it), QB_CK_BASE (A/B: the
path of another clusterkit Node package, measured as "ckbase" in the Node scenarios), QB_ROUNDS (3), QB_NODE_N (20000), QB_PY_N (5000), QB_NODE_CONC (16, per worker
process, both libraries), QB_PY_CONC (1: RQ's SimpleWorker runs one job at a time).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = os.environ.get("QB_NODE", "node")
PY = os.environ.get("QB_PYTHON", sys.executable)
ROUNDS = int(os.environ.get("QB_ROUNDS", "3"))
NODE_N = int(os.environ.get("QB_NODE_N", "20000"))
PY_N = int(os.environ.get("QB_PY_N", "5000"))
NODE_CONC = int(os.environ.get("QB_NODE_CONC", "16"))
PY_CONC = int(os.environ.get("QB_PY_CONC", "1"))
BUDGET_S = float(os.environ.get("QB_BUDGET_S", "1500"))
# Only the scenarios whose "lang name" contains this text (all when empty).
ONLY = os.environ.get("QB_ONLY", "")
# A/B: another clusterkit Node package (e.g. a build of main) measured as "ckbase" between
# the peer and this one, in every Node scenario.
CK_BASE = os.environ.get("QB_CK_BASE", "")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return int(p)


def resp(port: int, *args: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            b = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        s.sendall(out)
        return s.recv(65536)


def cmd(lang: str, lib: str, *args: Any) -> List[str]:
    a = [str(x) for x in args]
    if lang == "node":
        return [NODE, os.path.join(HERE, "node_bench.js"), lib, *a]
    return [PY, os.path.join(HERE, "py_bench.py"), lib, *a]


def run_json(argv: List[str], timeout: float = 600) -> Dict[str, Any]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed: {p.stderr[-2000:]}")
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def redis_cpu_us(port: int) -> float:
    info = resp(port, "INFO", "cpu").decode()
    t = 0.0
    for line in info.splitlines():
        if line.startswith(("used_cpu_sys:", "used_cpu_user:")):
            t += float(line.split(":")[1])
    return t * 1e6


# Per (lang, scenario, lib): CPU microseconds per job of the worker processes and of Redis.
CPU: Dict[Tuple[str, str, str], List[Tuple[float, float]]] = {}


def process(port: int, lang: str, lib: str, n: int, workers: int, conc: int, name: str = "") -> float:
    resp(port, "FLUSHALL")
    run_json(cmd(lang, lib, "fill", port, n))
    redis0 = redis_cpu_us(port)
    procs = [
        subprocess.Popen(cmd(lang, lib, "work", port, conc), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
        for _ in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if "ready" not in line:
                raise RuntimeError(f"{lib} worker did not start: {line!r}")
        t0 = time.time()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"{lib} worker exited {p.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    redis_us = redis_cpu_us(port) - redis0
    if all("cpu_us" in r for r in results):
        CPU.setdefault((lang, name, lib), []).append((sum(float(r["cpu_us"]) for r in results) / n, redis_us / n))
    total = sum(int(r["count"]) for r in results)
    if lib == "rq":
        # rq 3 does not count jobs run with result_ttl=0: the list must be drained, none failed.
        left = resp(port, "LLEN", "rq:queue:bench")
        if left.strip() != b":0" or any(int(r.get("failed", 0)) for r in results):
            raise RuntimeError(f"rq: queue not drained ({left!r}) or failures")
        total = n
    if total != n:
        raise RuntimeError(f"{lib}: {total} jobs processed, expected {n}")
    last = max(float(r["last_done_ms"]) for r in results) / 1000.0
    return n / (last - t0)


def main() -> None:
    port = free_port()
    d = tempfile.mkdtemp(prefix="ck-qbench-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d],
        stdout=subprocess.DEVNULL,
    )
    started = time.time()
    try:
        for _ in range(200):
            try:
                resp(port, "PING")
                break
            except OSError:
                time.sleep(0.05)
        # (lang, peer, scenario, n) pairs, run peer then ours, round after round.
        scenarios: List[Tuple[str, str, str, int, Any]] = [
            ("node", "bullmq", "enqueue single", NODE_N // 4, ("enqueue", "single")),
            ("node", "bullmq", "enqueue bulk", NODE_N, ("enqueue", "bulk")),
            ("node", "bullmq", f"process, 1 worker x{NODE_CONC}", NODE_N, ("process", 1, NODE_CONC)),
            ("node", "bullmq", f"process, 4 workers x{NODE_CONC}", NODE_N, ("process", 4, NODE_CONC)),
            ("python", "rq", "enqueue single", PY_N, ("enqueue", "single")),
            ("python", "rq", "enqueue bulk", PY_N, ("enqueue", "bulk")),
            ("python", "rq", f"process, 1 worker x{PY_CONC}", PY_N, ("process", 1, PY_CONC)),
            ("python", "rq", f"process, 4 workers x{PY_CONC}", PY_N, ("process", 4, PY_CONC)),
        ]
        scenarios = [s for s in scenarios if ONLY in f"{s[0]} {s[2]}"]
        # The floor of "one awaited call at a time": one round trip to this server, measured by
        # redis-benchmark with one client (a SET, so one small command per round trip).
        floor = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-c", "1", "-n", "20000", "-q", "-t", "set", "--csv"],
            capture_output=True, text=True, timeout=120,
        ).stdout
        for line in floor.splitlines():
            if line.startswith('"SET"'):
                rps = float(line.split(",")[1].strip('"'))
                print(f"floor: one round trip at a time (redis-benchmark -c 1 SET): {rps:.0f} requests/s", flush=True)
        results: Dict[Tuple[str, str, str], List[float]] = {}
        for r in range(ROUNDS):
            for lang, peer, name, n, spec in scenarios:
                libs = (peer, "ckbase", "ck") if CK_BASE and lang == "node" else (peer, "ck")
                for lib in libs:
                    if time.time() - started > BUDGET_S:
                        raise SystemExit("time budget exceeded")
                    if spec[0] == "enqueue":
                        resp(port, "FLUSHALL")
                        v = run_json(cmd(lang, lib, "enqueue", spec[1], port, n))["jobs_s"]
                    else:
                        v = process(port, lang, lib, n, spec[1], spec[2], name)
                    results.setdefault((lang, name, lib), []).append(v)
                    print(f"round {r + 1}: {lang:6} {name:28} {lib:7} {v:10.0f} jobs/s", flush=True)
        print()
        print(f"{'scenario':40} {'peer jobs/s (min..max)':>28} {'clusterkit jobs/s (min..max)':>30} {'ratio (median)':>14}")
        for lang, peer, name, _n, _s in scenarios:
            p = results[(lang, name, peer)]
            o = results[(lang, name, "ck")]
            ratio = statistics.median(o) / statistics.median(p)
            ratios = [a / b for a, b in zip(o, p)]
            print(
                f"{lang + ' ' + name:40} {peer:>7} {statistics.median(p):8.0f} ({min(p):.0f}..{max(p):.0f})"
                f" {statistics.median(o):10.0f} ({min(o):.0f}..{max(o):.0f})   {ratio:5.1f}x "
                f"(per round {min(ratios):.1f}..{max(ratios):.1f}x)"
            )
            b = results.get((lang, name, "ckbase"))
            if b:
                rb = [x / y for x, y in zip(b, p)]
                ro = [x / y for x, y in zip(o, b)]
                print(
                    f"{'  base build (QB_CK_BASE)':40} {'':>7} {'':8} {'':>10} {statistics.median(b):10.0f} ({min(b):.0f}..{max(b):.0f})"
                    f"   {statistics.median(b) / statistics.median(p):5.1f}x (per round {min(rb):.1f}..{max(rb):.1f}x);"
                    f" this build / base {statistics.median(o) / statistics.median(b):.2f}x (per round {min(ro):.2f}..{max(ro):.2f}x)"
                )
        if CPU:
            print()
            print("CPU per job (us; median of the rounds): worker processes (all threads, from go until idle) | redis-server")
            for (lang, name, lib), xs in sorted(CPU.items()):
                w = statistics.median(x[0] for x in xs)
                r = statistics.median(x[1] for x in xs)
                print(f"{lang + ' ' + name:40} {lib:7} worker {w:6.1f}  redis {r:6.1f}  (rounds: {', '.join(f'{a:.0f}|{b:.0f}' for a, b in xs)})")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
