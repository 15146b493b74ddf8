"""clusterkit for Python: cluster membership, load balancing, a distributed cache,
distributed locks and sessions, from one Rust core shared with the C, PHP and Node packages.

::

    import clusterkit
    ck = clusterkit.Clusterkit()                 # everything embedded
    ck = clusterkit.Clusterkit({"cache": {"redis": "127.0.0.1:6379"}})
    ck.cache.set("k", b"v", ttl=60)
    with ck.lock("job", ttl=10) as lock: ...
    await ck.aio.cache.get("k")
"""

from __future__ import annotations

from . import _native
from .cache import AsyncCache, AsyncTypedCache, Cache, TypedCache
from .cluster import Events, Pick, Pool
from .deployment import AsyncClusterkit, Clusterkit, Config
from .errors import (
    BackendError,
    ClosedError,
    ClusterkitError,
    ConflictError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TimeoutError,
    UnavailableError,
)
from .lock import AsyncLock, AsyncLockAcquire, AsyncLocks, Lock, Locks
from .serializers import BytesSerializer, JsonSerializer, PickleSerializer, Serializer, StrSerializer
from .queue import AsyncConsumer, AsyncQueue, AsyncWorker, Consumer, Job, Queue, Worker, WorkerResult
from .session import AsyncSession, AsyncSessions, Session, Sessions
from . import logs, monitoring  # noqa: E402  (submodules: clusterkit.logs, clusterkit.monitoring)
from .monitoring import StatusPage, status_asgi_app, status_wsgi_app

__version__: str = _native.VERSION

__all__ = [
    "logs",
    "monitoring",
    "StatusPage",
    "status_wsgi_app",
    "status_asgi_app",
    "Clusterkit",
    "AsyncClusterkit",
    "Config",
    "Cache",
    "AsyncCache",
    "TypedCache",
    "AsyncTypedCache",
    "Pool",
    "Pick",
    "Events",
    "Locks",
    "Lock",
    "AsyncLocks",
    "AsyncLock",
    "AsyncLockAcquire",
    "Queue",
    "AsyncQueue",
    "Consumer",
    "AsyncConsumer",
    "Job",
    "Worker",
    "AsyncWorker",
    "WorkerResult",
    "Sessions",
    "Session",
    "AsyncSessions",
    "AsyncSession",
    "Serializer",
    "BytesSerializer",
    "StrSerializer",
    "JsonSerializer",
    "PickleSerializer",
    "ClusterkitError",
    "InvalidArgumentError",
    "NotFoundError",
    "TimeoutError",
    "UnavailableError",
    "ConflictError",
    "ClosedError",
    "BackendError",
    "InternalError",
    "fork_stats",
]


def fork_stats() -> dict[str, int]:
    """Counters of the fork gate (forks that found no call in progress / that waited)."""
    return dict(_native.fork_stats())
