"""Monitoring from Python (issue #15): metrics text in every format parsed by real parsers
with numbers matching what the test did, the snapshot and scaling advice, publish/aggregate
across processes, the status page as WSGI and ASGI apps served over real HTTP, and the core's
log records in the standard `logging` module with nothing secret in them."""

from __future__ import annotations

import html.parser
import json
import logging
import multiprocessing
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client.parser import text_string_to_metric_families

import clusterkit
import clusterkit.logs
from clusterkit import errors

from conftest import fresh_ns
from support import RedisServer

THREE_POOLS: Dict[str, Any] = {
    "pools": {
        "web": {"nodes": [{"id": f"web-{i}", "host": "127.0.0.1", "port": 18080 + i} for i in range(3)]},
        "api": {"nodes": [{"id": f"api-{i}", "host": "127.0.0.1", "port": 18090 + i} for i in range(2)]},
        "db": {"nodes": [{"id": "db-0", "host": "127.0.0.1", "port": 18100}]},
    },
}


def deployment(**extra: Any) -> clusterkit.Clusterkit:
    doc = json.loads(json.dumps(THREE_POOLS))
    doc["cache"] = {"namespace": fresh_ns("mon")}
    doc.update(extra)
    return clusterkit.Clusterkit(doc)


def samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Every sample of Prometheus text, parsed by prometheus_client's parser."""
    out: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def node_value(parsed: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float], name: str, pool: str, node: str) -> float:
    hits = [v for (n, labels), v in parsed.items() if n == name and ("pool", pool) in labels and ("node", node) in labels]
    assert len(hits) == 1, f"{name}{{pool={pool},node={node}}}: {hits} in {sorted(k for k in parsed if k[0] == name)}"
    return hits[0]


def test_prometheus_counts_match_what_the_test_did() -> None:
    ck = deployment()
    web = ck.pool("web")
    n = 37
    picked: Dict[str, int] = {}
    for _ in range(n):
        with web.pick() as p:
            picked[p.node_id] = picked.get(p.node_id, 0) + 1
    assert sum(picked.values()) == n
    for _ in range(5):
        ck.cache.get("absent")
    ck.cache.set("k", b"v")
    for _ in range(3):
        assert ck.cache.get("k") == b"v"

    parsed = samples(ck.metrics_text("prometheus"))
    total = 0.0
    for i in range(3):
        v = node_value(parsed, "clusterkit_node_picks_total", "web", f"web-{i}")
        assert v == picked.get(f"web-{i}", 0)
        total += v
    assert total == n
    assert node_value(parsed, "clusterkit_node_picks_total", "api", "api-0") == 0
    hits = [v for (name, _), v in parsed.items() if name == "clusterkit_cache_hits_total"]
    misses = [v for (name, _), v in parsed.items() if name == "clusterkit_cache_misses_total"]
    assert hits == [3.0] and misses == [5.0]

    # The latency histogram of a node: cumulative buckets ending at +Inf == _count == picks.
    w0 = [(dict(labels)["le"], v) for (name, labels), v in parsed.items()
          if name == "clusterkit_node_latency_seconds_bucket" and ("node", "web-0") in labels]
    counts = [v for _, v in sorted(w0, key=lambda lv: float(lv[0]))]
    assert counts == sorted(counts) and dict(w0)["+Inf"] == picked.get("web-0", 0)
    assert node_value(parsed, "clusterkit_node_latency_seconds_count", "web", "web-0") == picked.get("web-0", 0)

    # OpenMetrics parses too (its own parser) with the same numbers; the snapshot agrees.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

    om_text = ck.metrics_text("openmetrics")
    assert om_text.rstrip().endswith("# EOF")
    om = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for fam in om_families(om_text) for s in fam.samples
    }
    assert sum(v for (name, labels), v in om.items() if name == "clusterkit_node_picks_total" and ("pool", "web") in labels) == n
    snap = ck.metrics_snapshot()
    web_snap = next(p for p in snap["pools"] if p["name"] == "web")
    assert sum(nd["picks"] for nd in web_snap["nodes"]) == n
    assert snap["cache"]["hits"] == 3 and snap["cache"]["misses"] == 5 and snap["processes"] == 1
    assert json.loads(ck.metrics_text("json"))["cache"]["hits"] == 3
    assert clusterkit.Clusterkit.metrics_content_type("prometheus").startswith("text/plain; version=0.0.4")
    assert clusterkit.Clusterkit.metrics_content_type("openmetrics").startswith("application/openmetrics-text")


def test_bad_format_and_disabled_metrics() -> None:
    ck = deployment()
    with pytest.raises(errors.InvalidArgumentError) as e:
        ck.metrics_text("xml")
    assert e.value.field == "format" and "xml" in str(e.value)
    with pytest.raises(errors.InvalidArgumentError) as e:
        clusterkit.Clusterkit.metrics_content_type("yaml")
    assert e.value.field == "format"
    off = clusterkit.Clusterkit({"metrics": {"enabled": False}})
    with pytest.raises(errors.UnavailableError):
        off.metrics_text("prometheus")
    ck.close()
    with pytest.raises(errors.ClosedError):
        ck.metrics_text("prometheus")


def test_scaling_advice_is_exposed() -> None:
    ck = deployment(metrics={"scaling": {"web": {"min_nodes": 4, "max_nodes": 8}}})
    assert ck.scaling_advice() == []
    ck.metrics_snapshot()  # a snapshot evaluates each advisor once
    advice = ck.scaling_advice()
    assert len(advice) == 1
    a = advice[0]
    assert a["pool"] == "web" and a["current"] == 3 and 4 <= a["recommended"] <= 8 and a["reason"]
    parsed = samples(ck.metrics_text("prometheus"))
    rec = [v for (name, labels), v in parsed.items() if name == "clusterkit_scaling_recommended_nodes" and ("pool", "web") in labels]
    assert rec == [float(a["recommended"])]


def _worker(dir: str, picks: int, q: "multiprocessing.Queue[str]") -> None:
    try:
        ck = deployment()
        for _ in range(picks):
            with ck.pool("db").pick():
                pass
        ck.publish_metrics(dir)
        q.put("ok")
    except BaseException as e:  # reported to the parent, which fails the test
        q.put(f"{type(e).__name__}: {e}")


def run_workers(dir: Path, picks: List[int]) -> None:
    """One spawned process per entry: it picks from pool "db" that many times and publishes
    its metrics into ``dir`` (a process's own published file is not added to itself)."""
    ctx = multiprocessing.get_context("spawn")
    q: "multiprocessing.Queue[str]" = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(dir), k, q)) for k in picks]
    for p in procs:
        p.start()
    try:
        results = [q.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert results == ["ok"] * len(picks)


def test_publish_and_aggregate_across_processes(tmp_path: Path) -> None:
    run_workers(tmp_path, [4, 6])
    ck = deployment()
    for _ in range(3):
        with ck.pool("db").pick():
            pass
    agg = ck.aggregate_metrics(tmp_path, max_age=60)
    assert agg["processes"] == 3
    db = next(p for p in agg["pools"] if p["name"] == "db")
    assert sum(nd["picks"] for nd in db["nodes"]) == 13
    parsed = samples(ck.aggregate_metrics_text(tmp_path, "prometheus", max_age=60))
    assert node_value(parsed, "clusterkit_node_picks_total", "db", "db-0") == 13
    assert [v for (name, _), v in parsed.items() if name == "clusterkit_processes"] == [3.0]
    with pytest.raises(errors.InvalidArgumentError) as e:
        ck.aggregate_metrics(tmp_path, max_age=0)
    assert e.value.field == "max_age"
    with pytest.raises(errors.InvalidArgumentError) as e:
        ck.aggregate_metrics(tmp_path, max_age="soon")  # type: ignore[arg-type]
    assert e.value.field == "max_age"


class Rows(html.parser.HTMLParser):
    """The node rows of the status page: (pool, node, health) from their data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: List[Tuple[str, str, str]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-node"):
            self.rows.append((a.get("data-pool") or "", a["data-node"] or "", a.get("data-health") or ""))
        self._in_title = tag == "title"

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[Any]:
    """Serves a WSGI app over real HTTP on 127.0.0.1 (a free port) in a thread."""
    servers: List[Any] = []

    def serve(app: Any) -> str:
        srv = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        servers.append((srv, t))
        return f"http://127.0.0.1:{srv.server_port}"

    yield serve
    for srv, t in servers:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def get(url: str, accept: str = "") -> Tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def expected_rows(ck: clusterkit.Clusterkit) -> List[Tuple[str, str, str]]:
    return sorted(
        (p["name"], nd["id"], "ejected" if nd["ejected"] else nd["health"])
        for p in ck.metrics_snapshot()["pools"]
        for nd in p["nodes"]
    )


def test_status_page_over_http_shows_every_node_of_three_pools(http_server: Any) -> None:
    ck = deployment()
    ck.pool("web").set_health("web-1", "unhealthy", reason="probe failed")
    ck.pool("api").drain("api-1")
    base = http_server(ck.status_wsgi_app(title="ops: shop"))

    code, ctype, body = get(base + "/")
    assert code == 200 and ctype.startswith("text/html")
    page = Rows()
    page.feed(body)
    assert "ops: shop" in page.title
    rows = sorted(page.rows)
    assert [(p, n) for p, n, _ in rows] == sorted(
        [("web", f"web-{i}") for i in range(3)] + [("api", "api-0"), ("api", "api-1"), ("db", "db-0")]
    )
    health = {(p, n): h for p, n, h in rows}
    assert health[("web", "web-1")] == "unhealthy"
    assert health[("api", "api-1")] == "draining"
    assert health[("web", "web-0")] == health[("db", "db-0")] != "unhealthy"
    assert rows == expected_rows(ck)

    code, ctype, body = get(base + "/json")
    assert code == 200 and ctype == "application/json"
    js = json.loads(body)
    assert sorted((p["name"], nd["id"], nd["health"]) for p in js["pools"] for nd in p["nodes"]) == rows
    assert "hit_rate" in js["cache"]

    code, ctype, body = get(base + "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert node_value(samples(body), "clusterkit_node_healthy", "web", "web-1") == 0
    code, ctype, body = get(base + "/metrics", accept="application/openmetrics-text")
    assert code == 200 and ctype.startswith("application/openmetrics-text") and body.rstrip().endswith("# EOF")
    code, _, _ = get(base + "/nope")
    assert code == 404


def test_mount_in_flask_at_a_chosen_path(http_server: Any) -> None:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    ck = deployment()
    app = Flask("shop")

    @app.route("/")
    def home() -> str:
        return "shop home"

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/ops/cluster": ck.status_wsgi_app()})  # type: ignore[method-assign]
    base = http_server(app)
    assert get(base + "/") == (200, "text/html; charset=utf-8", "shop home")
    code, ctype, body = get(base + "/ops/cluster/")
    assert code == 200 and ctype.startswith("text/html")
    page = Rows()
    page.feed(body)
    assert len(page.rows) == 6
    code, ctype, body = get(base + "/ops/cluster/json")
    assert code == 200 and len([nd for p in json.loads(body)["pools"] for nd in p["nodes"]]) == 6


def test_mount_in_starlette_asgi(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.testclient import TestClient

    ck = deployment()
    for _ in range(2):
        with ck.pool("api").pick():
            pass
    run_workers(tmp_path, [5])  # another process published 5 picks of pool "db"

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(
        routes=[
            Route("/", home),
            Mount("/status", app=ck.status_asgi_app(title="asgi")),
            Mount("/all", app=clusterkit.status_asgi_app(ck, aggregate_dir=tmp_path)),
        ]
    )
    with TestClient(app) as client:
        assert client.get("/").text == "home"
        r = client.get("/status/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = Rows()
        page.feed(r.text)
        assert len(page.rows) == 6 and "asgi" in page.title
        r = client.get("/status/json")
        assert r.status_code == 200 and r.json()["processes"] == 1
        r = client.get("/status/metrics")
        assert node_value(samples(r.text), "clusterkit_node_picks_total", "api", "api-0") + node_value(
            samples(r.text), "clusterkit_node_picks_total", "api", "api-1"
        ) == 2
        r = client.get("/all/metrics")
        parsed = samples(r.text)
        assert [v for (name, _), v in parsed.items() if name == "clusterkit_processes"] == [2.0]
        assert node_value(parsed, "clusterkit_node_picks_total", "api", "api-0") + node_value(
            parsed, "clusterkit_node_picks_total", "api", "api-1"
        ) == 2
        assert node_value(parsed, "clusterkit_node_picks_total", "db", "db-0") == 5
        assert client.get("/all/json").json()["processes"] == 2
        assert client.get("/status/x").status_code == 404
        assert client.post("/status/").status_code == 405


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=0)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


PASSWORD = "pw-Sup3rSecret-9f1c"


def test_trace_logs_carry_no_values_sessions_tokens_or_passwords() -> None:
    server = RedisServer(extra=["--requirepass", PASSWORD])
    logger = logging.getLogger("clusterkit")
    cap = Capture()
    old_level = logger.level
    logger.addHandler(cap)
    logger.setLevel(clusterkit.logs.TRACE)
    try:
        assert clusterkit.logs.core_level() == "off"
        clusterkit.logs.enable(background=False)
        assert clusterkit.logs.core_level() == "trace"
        secrets: List[str] = [PASSWORD]
        for backend in ("embedded", "redis"):
            doc: Dict[str, Any] = {"cache": {"namespace": fresh_ns("log")}}
            if backend == "redis":
                doc = {
                    "redis": {"password": PASSWORD},
                    "pools": {"locks": {"nodes": [{"id": "r1", "host": "127.0.0.1", "port": server.port}]}},
                    "cache": {"redis": server.address, "namespace": fresh_ns("log")},
                    "locks": {"pool": "locks"},
                }
            ck = clusterkit.Clusterkit(doc)
            value = f"cache-value-{backend}-7c1d"
            ck.cache.set("user:42", value.encode())
            assert ck.cache.get("user:42") == value.encode()
            ck.cache.get("missing-key")
            ck.cache.delete("user:42")
            with ck.lock("orders", ttl=5) as lock:
                secrets.append(lock.token)
            s = ck.sessions.create()
            s["card"] = f"session-data-{backend}-4242".encode()
            s.save()
            secrets += [s.id, f"session-data-{backend}-4242", value]
            loaded = ck.sessions.load(s.id, lock=True)
            assert loaded is not None
            loaded.unlock()
            ck.sessions.destroy(s.id)
            ck.close()
        drained = clusterkit.logs.pump()
    finally:
        clusterkit.logs.disable()
        logger.removeHandler(cap)
        logger.setLevel(old_level)
        server.stop()
    assert clusterkit.logs.core_level() == "off"
    assert drained > 0 and len(cap.records) == drained
    names = {r.name for r in cap.records}
    assert "clusterkit.cache" in names, names
    assert any(r.levelno == clusterkit.logs.TRACE for r in cap.records)
    assert any("key_hash" in getattr(r, "ck_fields", {}) for r in cap.records)
    fmt = logging.Formatter("%(levelname)s %(name)s %(message)s")
    everything = "\n".join(fmt.format(r) + " " + json.dumps(getattr(r, "ck_fields", {})) for r in cap.records)
    for secret in secrets + ["user:42", "missing-key"]:
        assert secret not in everything, f"a secret leaked into the logs: {secret[:4]}..."


def test_logs_follow_the_logger_level_and_cost_nothing_when_off() -> None:
    logger = logging.getLogger("clusterkit")
    cap = Capture()
    old_level = logger.level
    logger.addHandler(cap)
    try:
        ck = deployment()
        assert clusterkit.logs.core_level() == "off"
        ck.cache.get("a")
        assert clusterkit._native.log_drain() == []  # nothing buffered while nobody listens
        logger.setLevel(logging.WARNING)
        clusterkit.logs.enable(background=True, interval=0.05)
        assert clusterkit.logs.core_level() == "warn"
        with ck.lock("l", ttl=5):  # a debug record: not kept at warn
            pass
        assert clusterkit.logs.pump() == 0 and cap.records == []
        logger.setLevel(logging.DEBUG)
        clusterkit.logs.pump()  # re-reads the logger's level
        assert clusterkit.logs.core_level() == "debug"
        with ck.lock("l", ttl=5):  # kept at debug, delivered by the background thread
            pass
        from support import wait_until

        wait_until(lambda: any(r.name == "clusterkit.lock" for r in cap.records), "the background pump")
        assert all(r.levelno >= logging.DEBUG for r in cap.records)
        with pytest.raises(errors.InvalidArgumentError) as e:
            clusterkit.logs.enable("LOUD")
        assert e.value.field == "level"
        with pytest.raises(errors.InvalidArgumentError) as e:
            clusterkit.logs.enable(interval=0)
        assert e.value.field == "interval"
        with pytest.raises(errors.InvalidArgumentError) as e:
            clusterkit._native.log_set_level("loud")
        assert e.value.field == "level"
        assert isinstance(clusterkit.logs.dropped(), int)
    finally:
        clusterkit.logs.disable()
        logger.removeHandler(cap)
        logger.setLevel(old_level)
    assert clusterkit.logs.core_level() == "off"
