"""The entry point: one config document builds a whole deployment."""

from __future__ import annotations

import json
import os
from types import TracebackType
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Type, Union

from . import _native
from ._closed import _Closed
from .cache import AsyncCache, Cache, Seconds
from .cluster import Pool
from .errors import InvalidArgumentError
from .lock import AsyncLockAcquire, AsyncLocks, Lock, Locks
from .queue import AsyncQueue, Queue
from .session import AsyncSessions, Sessions

__all__ = ["Clusterkit", "AsyncClusterkit", "Config"]

Config = Union[None, str, Mapping[str, Any]]


def _text(config: Config) -> str:
    if config is None:
        return ""
    if isinstance(config, str):
        return config
    if isinstance(config, Mapping):
        try:
            return json.dumps(config)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"invalid config: not JSON-serializable: {e}", "config") from e
    raise InvalidArgumentError(
        f"invalid config: must be a dict, JSON or TOML text, or None, got {type(config).__name__}",
        "config",
    )


class Clusterkit:
    """A deployment: its pools, cache, locks and sessions, from one config document (a dict,
    JSON or TOML text; None or empty: everything embedded in this process).

    The same document and keys as every other clusterkit language, so a Python app and a PHP
    app can share one cluster. Use :meth:`shared` in web workers to build it once per process.
    """

    def __init__(self, config: Config = None, *, _native_dep: Optional[_native.Deployment] = None) -> None:
        self._dep: Any = _native_dep if _native_dep is not None else _native.Deployment(_text(config))
        self.cache = Cache(self._dep.cache())
        self.locks = Locks(self._dep.locks())
        self.sessions = Sessions(self._dep.sessions())
        self.queue = Queue(self._dep.queue())
        self.aio = AsyncClusterkit(self)
        self._pools: Dict[str, Pool] = {}

    @classmethod
    def embedded(cls) -> "Clusterkit":
        return cls(None)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "Clusterkit":
        return cls(config)

    @classmethod
    def from_json(cls, text: str) -> "Clusterkit":
        if not text.lstrip().startswith("{"):
            raise InvalidArgumentError("invalid document: JSON text must be an object", "document")
        return cls(text)

    @classmethod
    def from_toml(cls, text: str) -> "Clusterkit":
        if text.lstrip().startswith("{"):
            raise InvalidArgumentError("invalid document: TOML text expected, got JSON", "document")
        return cls(text)

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"]) -> "Clusterkit":
        """A ``.json`` or ``.toml`` file (the content decides)."""
        with open(path, encoding="utf-8") as f:
            return cls(f.read())

    @classmethod
    def shared(cls, config: Config = None) -> "Clusterkit":
        """The deployment of ``config`` shared by this whole process (connections, runtime,
        health state built once; rebuilt once in a forked child)."""
        return cls(_native_dep=_native.Deployment.shared(_text(config)))

    @property
    def pools(self) -> List[str]:
        return list(self._dep.pool_names())

    def pool(self, name: str) -> Pool:
        """The pool ``name`` of the document (NotFoundError if there is none)."""
        p = self._pools.get(name)
        if p is None:
            p = Pool(self._dep.pool(name))
            self._pools[name] = p
        return p

    def lock(self, name: str, ttl: Seconds = 30.0, wait: Optional[Seconds] = None) -> Lock:
        """``with ck.lock("name", ttl=10, wait=5) as lock: ...`` (see :meth:`Locks.acquire`)."""
        return self.locks.acquire(name, ttl, wait)

    def metrics(self) -> Dict[str, Any]:
        """Cache counters and each pool's health metrics."""
        return dict(self._dep.metrics())

    def metrics_snapshot(self) -> Dict[str, Any]:
        """Everything this process measures for this deployment, now: ``pools`` (nodes with
        picks, in flight, outcomes, latency buckets, health, ejections), ``cache``, ``locks``,
        ``sessions``, ``redis``, ``scaling``. Runs each scaling advisor once."""
        return dict(self._dep.metrics_snapshot())

    def metrics_text(self, format: str = "prometheus", *, title: Optional[str] = None) -> str:
        """This process's metrics as ``format``: ``"prometheus"`` (text 0.0.4),
        ``"openmetrics"``, ``"json"`` (the snapshot), ``"html"`` (the status page, titled
        ``title``) or ``"status_json"`` (its JSON twin). UnavailableError when the document
        says ``[metrics] enabled = false``; InvalidArgumentError (``format``) otherwise."""
        return str(self._dep.metrics_text(format, title))

    @staticmethod
    def metrics_content_type(format: str) -> str:
        """The HTTP content type of ``format`` (see :meth:`metrics_text`)."""
        return str(_native.content_type(format))

    def scaling_advice(self) -> List[Dict[str, Any]]:
        """The latest recommendation of each configured advisor (``[metrics.scaling.<pool>]``):
        ``pool``, ``current``, ``recommended``, ``desired``, ``changed``, ``reason``. Empty
        before the first snapshot (:meth:`metrics_snapshot` or a scrape evaluates)."""
        return list(self._dep.scaling_advice())

    def publish_metrics(self, dir: Union[str, "os.PathLike[str]"]) -> None:
        """Writes this process's snapshot into ``dir`` (created if missing) for
        :meth:`aggregate_metrics` in another process (pre-fork servers: each worker publishes,
        one endpoint adds them up)."""
        self._dep.publish_metrics(os.fspath(dir))

    def aggregate_metrics(self, dir: Union[str, "os.PathLike[str]"], max_age: Seconds = 60.0) -> Dict[str, Any]:
        """This process's snapshot plus every snapshot published in ``dir`` within ``max_age``
        seconds (files of exited workers, older, are removed), as a dict like
        :meth:`metrics_snapshot` (``processes`` counts them)."""
        return dict(self._dep.aggregate_metrics(os.fspath(dir), max_age))

    def aggregate_metrics_text(
        self, dir: Union[str, "os.PathLike[str]"], format: str = "prometheus", *, max_age: Seconds = 60.0
    ) -> str:
        """:meth:`aggregate_metrics` rendered as ``format`` (see :meth:`metrics_text`)."""
        return str(self._dep.aggregate_metrics_text(os.fspath(dir), max_age, format))

    def status_wsgi_app(
        self, *, title: Optional[str] = None, aggregate_dir: Union[None, str, "os.PathLike[str]"] = None
    ) -> Callable[[Dict[str, Any], Any], Iterable[bytes]]:
        """The status page as a WSGI app to mount anywhere (see :mod:`clusterkit.monitoring`)."""
        from .monitoring import status_wsgi_app

        return status_wsgi_app(self, title=title, aggregate_dir=aggregate_dir)

    def status_asgi_app(
        self, *, title: Optional[str] = None, aggregate_dir: Union[None, str, "os.PathLike[str]"] = None
    ) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """The status page as an ASGI app to mount anywhere (see :mod:`clusterkit.monitoring`)."""
        from .monitoring import status_asgi_app

        return status_asgi_app(self, title=title, aggregate_dir=aggregate_dir)

    def config(self) -> Dict[str, Any]:
        """The document this deployment was built from (as a dict)."""
        r: Dict[str, Any] = json.loads(self._dep.config_json())
        return r

    def close(self) -> None:
        """Closes this handle: later calls raise ClosedError. Background work of a shared
        deployment goes on for its other users."""
        closed = _Closed("deployment")
        self._dep = closed
        for part in (
            self.cache,
            self.locks,
            self.sessions,
            self.queue,
            self.aio.cache,
            self.aio.locks,
            self.aio.sessions,
            self.aio.queue,
        ):
            part._n = closed
        for p in self._pools.values():
            p._n = closed  # type: ignore[assignment]

    def __enter__(self) -> "Clusterkit":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<clusterkit.Clusterkit pools={self.pools!r}>"


class AsyncClusterkit:
    """The asyncio face of a :class:`Clusterkit` (``ck.aio``): the same deployment, awaitable
    operations."""

    def __init__(self, ck: Clusterkit) -> None:
        self._ck = ck
        self.cache = AsyncCache(ck._dep.cache())
        self.locks = AsyncLocks(ck._dep.locks())
        self.sessions = AsyncSessions(ck._dep.sessions())
        self.queue = AsyncQueue(ck._dep.queue())

    def pool(self, name: str) -> Pool:
        return self._ck.pool(name)

    def lock(self, name: str, ttl: Seconds = 30.0, wait: Optional[Seconds] = None) -> AsyncLockAcquire:
        """``async with ck.aio.lock("name", ttl=10) as lock:`` or ``lock = await ck.aio.lock(...)``."""
        return self.locks.acquire(name, ttl, wait)

    def metrics(self) -> Dict[str, Any]:
        return self._ck.metrics()
