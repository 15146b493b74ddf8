"""Distributed locks as context managers, blocking and asyncio.

::

    with ck.locks.acquire("invoice:42", ttl=10, wait=5) as lock:
        db.write(..., fence=lock.fencing_token)   # the resource refuses older fences
        lock.extend(10)
        if not lock.is_held: ...                  # lost: stop before committing

Auto-renewal is switched on for a deployment with ``{"locks": {"auto_renew": true}}``: a held
lock is then extended at a third of its TTL until released, and ``is_held`` turns False /
``wait_lost()`` returns as soon as a renewal fails.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Generator, Optional, Type

from . import _native
from .cache import Seconds
from .errors import ClusterkitError

__all__ = ["Locks", "Lock", "AsyncLocks", "AsyncLock", "AsyncLockAcquire"]


class Lock:
    """A held lock. Leaving its ``with`` block releases it; a release that finds the lock
    expired or taken over raises :class:`~clusterkit.ConflictError` (unless the block itself
    raised, whose exception is kept)."""

    def __init__(self, native: _native.Lock) -> None:
        self._n = native

    @property
    def name(self) -> str:
        return self._n.name

    @property
    def token(self) -> str:
        """This holder's random token (a secret: do not log it)."""
        return self._n.token

    @property
    def fencing_token(self) -> int:
        """Strictly increasing across successive holders of this name. NotFoundError when the
        lock was acquired with ``fencing=False``."""
        return self._n.fencing_token

    @property
    def has_fencing_token(self) -> bool:
        """False when the lock was acquired with ``fencing=False``."""
        return self._n.has_fencing_token

    @property
    def valid_for(self) -> float:
        """Seconds of validity left (0 once expired, lost or released)."""
        return self._n.valid_for

    @property
    def is_held(self) -> bool:
        """True while valid, not released and no renewal failed."""
        return self._n.is_held

    def extend(self, ttl: Seconds) -> None:
        """Extends to ``ttl`` from now; ConflictError if it is no longer held."""
        self._n.extend(ttl)

    def release(self) -> None:
        """Releases; ConflictError if it had expired or been taken over, ClosedError if
        already released."""
        self._n.release()

    def wait_lost(self, timeout: Optional[Seconds] = None) -> bool:
        """Blocks until the lock is lost or released (True) or ``timeout`` passes (False)."""
        return self._n.wait_lost(timeout)

    def __enter__(self) -> "Lock":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            self._n.release()
        except ClusterkitError:
            if exc is None:
                raise

    def __repr__(self) -> str:
        return repr(self._n)


class AsyncLock:
    """A held lock in the asyncio face: ``async with`` releases it."""

    def __init__(self, native: _native.Lock) -> None:
        self._n = native

    @property
    def name(self) -> str:
        return self._n.name

    @property
    def token(self) -> str:
        return self._n.token

    @property
    def fencing_token(self) -> int:
        return self._n.fencing_token

    @property
    def has_fencing_token(self) -> bool:
        return self._n.has_fencing_token

    @property
    def valid_for(self) -> float:
        return self._n.valid_for

    @property
    def is_held(self) -> bool:
        return self._n.is_held

    async def extend(self, ttl: Seconds) -> None:
        await self._n.extend_async(ttl)

    async def release(self) -> None:
        await self._n.release_async()

    async def wait_lost(self, timeout: Optional[Seconds] = None) -> bool:
        return bool(await self._n.wait_lost_async(timeout))

    async def __aenter__(self) -> "AsyncLock":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            await self._n.release_async()
        except ClusterkitError:
            if exc is None:
                raise

    def __repr__(self) -> str:
        return repr(self._n)


class Locks:
    """The deployment's lock service (embedded, one Redis, or Redlock over a pool)."""

    def __init__(self, native: _native.Locks) -> None:
        self._n: Any = native

    def acquire(
        self, name: str, ttl: Seconds = 30.0, wait: Optional[Seconds] = None, fencing: bool = True
    ) -> Lock:
        """Acquires ``name`` for ``ttl`` seconds. ``wait``: None waits as long as it takes,
        0 makes one attempt (ConflictError if held), otherwise TimeoutError after ``wait``.
        ``fencing=False``: no fencing token (Redlock acquires in one round trip instead of
        two); only for callers that do not pass the token to the resource they protect."""
        return Lock(self._n.acquire(name, ttl, wait, fencing))

    def try_acquire(self, name: str, ttl: Seconds = 30.0, fencing: bool = True) -> Optional[Lock]:
        """One attempt: the lock, or None if someone else holds it."""
        n = self._n.try_acquire(name, ttl, fencing)
        return None if n is None else Lock(n)

    __call__ = acquire


class AsyncLockAcquire:
    """``await locks.acquire(...)`` or ``async with locks.acquire(...) as lock``."""

    def __init__(
        self, locks: Any, name: str, ttl: Seconds, wait: Optional[Seconds], fencing: bool = True
    ) -> None:
        self._args = (locks, name, ttl, wait, fencing)
        self._lock: Optional[AsyncLock] = None

    async def _get(self) -> AsyncLock:
        locks, name, ttl, wait, fencing = self._args
        return AsyncLock(await locks.acquire_async(name, ttl, wait, fencing))

    def __await__(self) -> Generator[Any, None, AsyncLock]:
        return self._get().__await__()

    async def __aenter__(self) -> AsyncLock:
        self._lock = await self._get()
        return self._lock

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._lock is not None:
            await self._lock.__aexit__(exc_type, exc, tb)


class AsyncLocks:
    """The lock service in the asyncio face."""

    def __init__(self, native: _native.Locks) -> None:
        self._n: Any = native

    def acquire(
        self, name: str, ttl: Seconds = 30.0, wait: Optional[Seconds] = None, fencing: bool = True
    ) -> AsyncLockAcquire:
        """Awaitable and async context manager: ``async with ck.aio.locks.acquire("x") as l``."""
        return AsyncLockAcquire(self._n, name, ttl, wait, fencing)

    async def try_acquire(
        self, name: str, ttl: Seconds = 30.0, fencing: bool = True
    ) -> Optional[AsyncLock]:
        n = await self._n.try_acquire_async(name, ttl, fencing)
        return None if n is None else AsyncLock(n)
