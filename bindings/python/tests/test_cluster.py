"""Pools node by node, picks as context managers, health, events (iterator and async
iterator), metrics."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

import clusterkit
from clusterkit import ConflictError, InvalidArgumentError, NotFoundError, UnavailableError


def make_pool(strategy: str = "round_robin") -> clusterkit.Pool:
    p = clusterkit.Pool("app", strategy=strategy)
    p.add_node("web-1", "127.0.0.1", 8081, weight=2, zone="a", metadata={"rack": "r1"})
    p.add_node("web-2", "127.0.0.1", 8082)
    return p


def test_pool_node_by_node() -> None:
    p = make_pool()
    assert len(p) == 2 and p.healthy_count == 2 and p.name == "app"
    assert p.strategy == "round_robin"
    n = p.node("web-1")
    assert n is not None and n["weight"] == 2 and n["zone"] == "a" and n["metadata"] == {"rack": "r1"}
    assert {x["id"] for x in p.nodes()} == {"web-1", "web-2"}
    with pytest.raises(ConflictError):
        p.add_node("web-1", "127.0.0.1", 9999)
    p.set_weight("web-2", 3)
    assert (p.node("web-2") or {})["weight"] == 3
    p.set_health("web-2", "unhealthy", "maintenance")
    assert p.healthy_count == 1
    assert {p.pick().node_id for _ in range(10)} == {"web-1"}
    p.set_health("web-2", "healthy")
    p.remove_node("web-1")
    assert len(p) == 1 and p.node("web-1") is None
    with pytest.raises(NotFoundError):
        p.remove_node("web-1")
    p.set_strategy("ketama")
    assert p.strategy == "ketama"


def test_pick_context_manager_reports_outcome() -> None:
    p = make_pool("least_connections")
    with p.pick() as pk:
        assert pk.address in ("127.0.0.1:8081", "127.0.0.1:8082")
        assert (p.node(pk.node_id) or {})["in_flight"] == 1
    after = p.node(pk.node_id) or {}
    assert after["in_flight"] == 0 and after["successes"] == 1
    with pytest.raises(RuntimeError):
        with p.pick() as pk2:
            raise RuntimeError("upstream failed")
    assert (p.node(pk2.node_id) or {})["failures"] == 1
    pk3 = p.pick()
    pk3.success(0.005)
    assert (p.node(pk3.node_id) or {})["last_latency_us"] == 5000
    with pytest.raises(clusterkit.ClosedError):
        pk3.failure()


def test_pick_for_key_is_stable() -> None:
    p = make_pool("ketama")
    owners = {p.pick(b"user:42").node_id for _ in range(20)}
    assert len(owners) == 1
    assert p.pick("user:42").node_id in owners


def test_empty_pool_is_unavailable() -> None:
    p = clusterkit.Pool("empty")
    with pytest.raises(UnavailableError):
        p.pick()


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda p: p.add_node("", "h", 1), "id"),
        (lambda p: p.add_node("x", "h", 0), "port"),
        (lambda p: p.add_node("x", "h", 70000), "port"),
        (lambda p: p.add_node("x", "h", 1, weight=0), "weight"),
        (lambda p: p.add_node("x", "h", 1, metadata={"a": 1}), "metadata"),
        (lambda p: p.set_health("web-1", "sick"), "health"),
        (lambda p: p.set_strategy("fastest"), "strategy"),
        (lambda p: p.pick(3.5), "key"),
    ],
)
def test_bad_pool_input(call: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        call(make_pool())
    assert e.value.field is not None and e.value.field.endswith(field), e.value.field


def test_events_iterator() -> None:
    p = make_pool()
    ev = p.events(timeout=0.2)
    assert ev.next(0) is None
    p.add_node("web-3", "127.0.0.1", 8083)
    p.set_health("web-3", "draining", "deploy")
    p.remove_node("web-3")
    got: List[Dict[str, Any]] = list(ev)
    kinds = [e["kind"] for e in got]
    assert kinds[:3] == ["added", "health_changed", "removed"], kinds
    assert [e["node"]["id"] for e in got[:3]] == ["web-3"] * 3
    assert (got[1]["old_health"], got[1]["new_health"], got[1]["message"]) == ("healthy", "draining", "deploy")
    assert got[0]["node"]["port"] == 8083


def test_events_async_iterator() -> None:
    p = make_pool()

    async def main() -> List[str]:
        ev = p.events(timeout=0.3)
        p.add_node("web-9", "127.0.0.1", 8089)
        p.remove_node("web-9")
        first = await ev.anext(1)
        assert first is not None and first["kind"] == "added"
        return [e["kind"] async for e in ev]

    assert asyncio.run(main())[:1] == ["removed"]


def test_pool_metrics() -> None:
    p = make_pool()
    with p.pick():
        pass
    m = p.metrics()
    assert "nodes" in m and len(m["nodes"]) == 2
