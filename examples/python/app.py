"""clusterkit in a Python (Flask) application: two app nodes behind a load balancer, a
distributed cache, a distributed lock and sessions, all from one config document.

    python examples/python/app.py                        cache, locks, sessions embedded
    REDIS=127.0.0.1:6379 python examples/python/app.py   cache, locks, sessions in Redis

Needs `pip install ./bindings/python flask`. Under gunicorn, build the deployment with
`Clusterkit.shared(...)` at import time: every worker (also with --preload) reuses it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, List, Tuple

from flask import Flask, session

import clusterkit
from clusterkit.flask import ClusterkitSessionInterface

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- two app nodes on loopback, stopped when the example ends --------------------------------
nodes: Dict[str, Tuple[int, "subprocess.Popen[bytes]"]] = {}
for node_id in ("web-1", "web-2"):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "node.py"), str(port)], env={**os.environ, "NODE_ID": node_id})
    nodes[node_id] = (port, proc)
for port, _proc in nodes.values():
    for _attempt in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)

# --- the deployment: one document ------------------------------------------------------------
config: Dict[str, Any] = {
    "pools": {
        "app": {
            "strategy": "p2c",
            "nodes": [{"id": i, "host": "127.0.0.1", "port": p, "zone": "local"} for i, (p, _) in nodes.items()],
            # Active checks, and passive ones: 2 failed calls in a row eject a node for 10 s.
            "health": {"check": "http", "path": "/healthz", "interval": "300ms", "timeout": "200ms", "rise": 1, "fall": 1},
            "outlier": {"consecutive_failures": 2, "base_ejection_time": "10s"},
        }
    },
    "sessions": {"idle_timeout": "30m", "lock_wait": "2s"},
}
redis = os.environ.get("REDIS")
if redis:
    host, _sep, rport = redis.partition(":")
    config["pools"]["redis"] = {"strategy": "ketama", "nodes": [{"id": "r1", "host": host, "port": int(rport or 6379)}]}
    config["cache"] = {"pool": "redis", "namespace": "example"}
    config["locks"] = {"pool": "redis"}

ck = clusterkit.Clusterkit.shared(config)
ck.cache.clear()  # start from an empty cache (this deployment's namespace only)
prices = ck.cache.typed(clusterkit.JsonSerializer())
print(f"clusterkit {clusterkit.__version__}; app nodes: "
      f"{', '.join(n['id'] + '@' + n['host'] + ':' + str(n['port']) for n in ck.pool('app').nodes())}; "
      f"cache/locks/sessions: {'Redis at ' + redis if redis else 'embedded'}")

# --- a one-time job, run by whichever process gets the lock ------------------------------------
with ck.lock("example.warmup", ttl=10, wait=2) as lock:
    # The fencing token lets a store reject writes from a holder whose lock expired.
    prices.set("catalog.version", lock.fencing_token)
    print(f"warm-up ran under lock {lock.name} (fencing token {lock.fencing_token}, {lock.valid_for:.1f} s left)")


def fetch_price(item: int) -> Dict[str, Any]:
    last = "no answer"
    for _attempt in range(5):
        with ck.pool("app").pick() as pick:  # reports success + latency, or failure, on exit
            try:
                with urllib.request.urlopen(f"http://{pick.address}/price?item={item}", timeout=1.0) as r:
                    answer: Dict[str, Any] = json.loads(r.read())
                    return answer
            except OSError:
                pick.failure()  # feeds outlier detection; try another node
                last = f"{pick.node_id} did not answer"
    raise RuntimeError(last)


# --- the Flask app: session, cache, balanced call to an app node -------------------------------
app = Flask("clusterkit-example")
app.session_interface = ClusterkitSessionInterface(ck, lock=True)


@app.route("/price/<int:item>")
def price(item: int) -> Dict[str, Any]:
    cached = prices.get(f"price.{item}")
    served_by = "cache"
    if cached is None:
        answer = fetch_price(item)
        cached, served_by = answer["price"], answer["node"]
        prices.set(f"price.{item}", cached, ttl=60)
    viewed: List[int] = session.get("viewed", [])
    session["viewed"] = viewed + [item]
    return {"price": cached, "served_by": served_by, "viewed": len(viewed) + 1}


def main() -> None:
    client = app.test_client()
    served: Dict[str, int] = {}
    views = 0
    for item in (1, 2, 3, 4, 5, 1, 2, 6, 7, 8):
        body = client.get(f"/price/{item}").get_json()
        served[body["served_by"]] = served.get(body["served_by"], 0) + 1
        views = body["viewed"]
    print(f"10 requests, one session ({views} items viewed): served by "
          + ", ".join(f"{k}x{v}" for k, v in sorted(served.items())))

    # --- a node goes away: health checks and outlier detection take it out --------------------
    port, proc = nodes["web-2"]
    proc.terminate()
    proc.wait()
    served = {}
    for item in range(100, 110):
        by = fetch_price(item)["node"]
        served[by] = served.get(by, 0) + 1
    print("web-2 stopped; next 10 calls served by: " + ", ".join(f"{k}x{v}" for k, v in sorted(served.items())))
    deadline = time.monotonic() + 5
    while (ck.pool("app").node("web-2") or {}).get("health") == "healthy" and time.monotonic() < deadline:
        time.sleep(0.1)
    for n in ck.pool("app").nodes():
        print(f"  {n['id']:6} {n['health']:9} {n['reason']} ({n['successes']} ok, {n['failures']} failed)")

    # --- errors are exceptions with the library's message -------------------------------------
    try:
        ck.cache.get(b"")
    except clusterkit.ClusterkitError as e:
        print(f"{type(e).__name__}: {e}")
    m = ck.metrics()
    print(f"cache: {m['cache']['hits']} hits, {m['cache']['misses']} misses, {m['cache']['writes']} writes")
    print("done")


if __name__ == "__main__":
    try:
        main()
    finally:
        for _port, p in nodes.values():
            if p.poll() is None:
                p.terminate()
                p.wait()
