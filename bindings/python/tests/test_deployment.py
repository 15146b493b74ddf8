"""The entry point: config from dict, JSON, TOML, file, embedded, shared; pools from the
document; metrics; close; the exception hierarchy."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

import clusterkit
from clusterkit import errors

DOC = {
    "pools": {
        "app": {
            "strategy": "p2c",
            "nodes": [
                {"id": "web-1", "host": "127.0.0.1", "port": 8081, "weight": 2, "zone": "a"},
                {"id": "web-2", "host": "127.0.0.1", "port": 8082},
            ],
        }
    },
    "cache": {"namespace": "deptest"},
    "sessions": {"idle_timeout": "30m"},
}

TOML = """
[pools.app]
strategy = "p2c"
nodes = [
  { id = "web-1", host = "127.0.0.1", port = 8081, weight = 2, zone = "a" },
  { id = "web-2", host = "127.0.0.1", port = 8082 },
]
[cache]
namespace = "deptest"
"""


def check(ck: clusterkit.Clusterkit) -> None:
    assert ck.pools == ["app"]
    app = ck.pool("app")
    assert len(app) == 2 and app.strategy == "p2c"
    assert ck.cache.namespace == "deptest"
    with app.pick() as p:
        assert p.node_id in ("web-1", "web-2")


def test_from_every_source(tmp_path: Path) -> None:
    check(clusterkit.Clusterkit(DOC))
    check(clusterkit.Clusterkit.from_dict(DOC))
    check(clusterkit.Clusterkit.from_json(json.dumps(DOC)))
    check(clusterkit.Clusterkit.from_toml(TOML))
    f = tmp_path / "ck.toml"
    f.write_text(TOML)
    check(clusterkit.Clusterkit.from_file(f))
    j = tmp_path / "ck.json"
    j.write_text(json.dumps(DOC))
    check(clusterkit.Clusterkit.from_file(str(j)))


def test_embedded_by_default() -> None:
    ck = clusterkit.Clusterkit()
    assert ck.pools == []
    ck.cache.set("k", b"v")
    assert ck.cache.get("k") == b"v"
    assert clusterkit.Clusterkit.embedded().cache.namespace == "clusterkit"
    with pytest.raises(clusterkit.NotFoundError):
        ck.pool("app")


def test_shared_is_one_per_process() -> None:
    a = clusterkit.Clusterkit.shared(DOC)
    b = clusterkit.Clusterkit.shared(DOC)
    a.cache.set("shared", b"1")
    assert b.cache.get("shared") == b"1"
    a.pool("app").set_weight("web-2", 5)
    assert (b.pool("app").node("web-2") or {})["weight"] == 5


def test_config_and_metrics() -> None:
    ck = clusterkit.Clusterkit(DOC)
    assert ck.config()["pools"]["app"]["strategy"] == "p2c"
    ck.cache.get("miss")
    m = ck.metrics()
    assert m["cache"]["misses"] >= 1 and "app" in m["pools"]
    assert m["cache"]["namespace"] == "deptest"
    assert ck.aio.metrics()["cache"]["misses"] == m["cache"]["misses"]


def test_close() -> None:
    with clusterkit.Clusterkit() as ck:
        ck.cache.set("a", b"1")
    with pytest.raises(clusterkit.ClosedError):
        ck.cache.get("a")
    with pytest.raises(clusterkit.ClosedError):
        ck.lock("x")
    with pytest.raises(clusterkit.ClosedError):
        ck.metrics()


@pytest.mark.parametrize(
    "doc,field",
    [
        ({"pools": {"app": {"nodes": [{"id": "a", "host": "h", "port": 0}]}}}, "pools.app.nodes[0].port"),
        ({"cache": {"namesapce": "x"}}, "cache.namesapce"),
        ({"cache": {"namespace": "a:b"}}, "cache.namespace"),
        ({"sessions": {"lock_ttl": "48h"}}, "sessions.lock_ttl"),
        ("[cache\nnamespace=", "document"),
        ('{"cache": ', "cache"),
        ({"x": object()}, "config"),
        (42, "config"),
    ],
)
def test_bad_config_names_the_field(doc: object, field: str) -> None:
    with pytest.raises(clusterkit.InvalidArgumentError) as e:
        clusterkit.Clusterkit(doc)  # type: ignore[arg-type]
    assert e.value.field == field, str(e.value)


def test_exception_hierarchy() -> None:
    kinds = {
        "invalid_argument": errors.InvalidArgumentError,
        "not_found": errors.NotFoundError,
        "timeout": errors.TimeoutError,
        "unavailable": errors.UnavailableError,
        "conflict": errors.ConflictError,
        "closed": errors.ClosedError,
        "backend": errors.BackendError,
        "internal": errors.InternalError,
    }
    assert errors._BY_KIND == kinds
    for kind, cls in kinds.items():
        assert issubclass(cls, clusterkit.ClusterkitError)
        assert cls.kind == kind
        assert getattr(clusterkit, cls.__name__) is cls
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.TimeoutError, builtins.TimeoutError)
    assert issubclass(errors.NotFoundError, LookupError)
    assert issubclass(errors.UnavailableError, ConnectionError)


def test_unavailable_backend_and_no_secret_in_messages() -> None:
    from support import free_port

    dead = free_port()
    ck = clusterkit.Clusterkit(
        {"cache": {"redis": f"redis://:hunter2-secret@127.0.0.1:{dead}", "timeout": "200ms", "on_unavailable": "error"}}
    )
    with pytest.raises(clusterkit.ClusterkitError) as e:
        ck.cache.set("k", b"value-secret")
    assert e.value.kind in ("unavailable", "timeout")
    assert "hunter2" not in str(e.value) and "value-secret" not in str(e.value)
