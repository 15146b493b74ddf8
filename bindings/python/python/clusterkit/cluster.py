"""Pools of nodes (the seed's ClusterManager + LoadBalancer): membership node by node,
health, picks as context managers, events as (async) iterators, metrics."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Type

from . import _native
from .cache import Key, Seconds
from .errors import ClosedError

__all__ = ["Pool", "Pick", "Events"]

Event = Dict[str, Any]


class Pick:
    """A node chosen for one request. As a context manager it reports the outcome on exit:
    success with the elapsed latency, or failure if the block raised."""

    def __init__(self, native: _native.Pick) -> None:
        self._n = native

    @property
    def node_id(self) -> str:
        return self._n.node_id

    @property
    def host(self) -> str:
        return self._n.host

    @property
    def port(self) -> int:
        return self._n.port

    @property
    def address(self) -> str:
        return self._n.address

    def success(self, latency: Optional[Seconds] = None) -> None:
        """Reports success (``latency`` in seconds; default: the time since the pick)."""
        self._n.success(latency)

    def failure(self) -> None:
        self._n.failure()

    def __enter__(self) -> "Pick":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if not self._n.is_open:
            return  # reported inside the block
        if exc is None:
            self._n.success(None)
        else:
            self._n.failure()

    def __repr__(self) -> str:
        return repr(self._n)


class Events:
    """A subscription to a pool's events from the moment it was made. Each event is a dict
    with ``kind`` (``added``, ``removed``, ``updated``, ``health_changed``, ``panic_changed``,
    ``strategy_changed``, ``discovery_problem``, or ``lagged`` when events were missed) and
    its fields. Iterate (blocking, GIL released) or ``async for``."""

    def __init__(self, native: _native.Events, timeout: Optional[Seconds] = None) -> None:
        self._n = native
        self.timeout = timeout

    def next(self, timeout: Optional[Seconds] = None) -> Optional[Event]:
        """The next event, or None if none came within ``timeout`` seconds."""
        return self._n.next(timeout)

    async def anext(self, timeout: Optional[Seconds] = None) -> Optional[Event]:
        r: Optional[Event] = await self._n.next_async(timeout)
        return r

    def __iter__(self) -> Iterator[Event]:
        """Events until ``timeout`` (set at creation) passes without one, or the pool is gone."""
        while True:
            try:
                ev = self._n.next(self.timeout)
            except ClosedError:
                return
            if ev is None:
                return
            yield ev

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            try:
                ev: Optional[Event] = await self._n.next_async(self.timeout)
            except ClosedError:
                return
            if ev is None:
                return
            yield ev


class Pool:
    """One pool of nodes with its balancing strategy and health. Built from the config
    document (``ck.pool("app")``) or standalone (``Pool("app", strategy="ketama")``)."""

    def __init__(self, name_or_native: Any, strategy: Optional[str] = None) -> None:
        if isinstance(name_or_native, _native.Pool):
            self._n = name_or_native
        else:
            self._n = _native.Pool(name_or_native, strategy)

    @property
    def name(self) -> str:
        return self._n.name

    @property
    def strategy(self) -> str:
        return self._n.strategy

    def set_strategy(self, strategy: str) -> None:
        self._n.set_strategy(strategy)

    def add_node(
        self,
        id: str,
        host: str,
        port: int,
        weight: Optional[int] = None,
        zone: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Adds one node (ConflictError if the id is taken)."""
        self._n.add_node(id, host, port, weight, zone, metadata)

    def remove_node(self, id: str) -> None:
        self._n.remove_node(id)

    def set_health(self, id: str, health: str, reason: Optional[str] = None) -> None:
        """``healthy``, ``unhealthy`` or ``draining`` (an operator's word)."""
        self._n.set_health(id, health, reason)

    def set_weight(self, id: str, weight: int) -> None:
        self._n.set_weight(id, weight)

    def drain(self, id: str) -> None:
        self._n.drain(id)

    def report_success(self, id: str, latency: Optional[Seconds] = None) -> None:
        self._n.report_success(id, latency)

    def report_failure(self, id: str) -> None:
        self._n.report_failure(id)

    def nodes(self) -> List[Dict[str, Any]]:
        """Every node with its health, reason and live counters."""
        return self._n.nodes()

    def node(self, id: str) -> Optional[Dict[str, Any]]:
        return self._n.node(id)

    def __len__(self) -> int:
        return len(self._n)

    @property
    def healthy_count(self) -> int:
        return self._n.healthy_count

    @property
    def in_panic(self) -> bool:
        return self._n.in_panic

    def metrics(self) -> Dict[str, Any]:
        return self._n.metrics()

    def pick(self, key: Optional[Key] = None) -> Pick:
        """A node for one request (``key`` places it for hashing strategies). Use as a
        context manager, or call ``success()``/``failure()``."""
        return Pick(self._n.pick(key))

    def events(self, timeout: Optional[Seconds] = None) -> Events:
        """Subscribes to this pool's events from now on."""
        return Events(self._n.events(), timeout)


def _now() -> float:
    return time.monotonic()
