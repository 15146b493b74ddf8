"""Distributed sessions: ids from the OS CSPRNG, idle and absolute timeouts, delta saves
(only changed fields are written), regenerate, destroy, optional locking."""

from __future__ import annotations

from typing import Any, Iterator, List, Optional

from . import _native
from .cache import Key, Value
from .serializers import JsonSerializer

__all__ = ["Sessions", "Session", "AsyncSessions", "AsyncSession"]

_JSON = JsonSerializer()


class _Fields:
    _n: _native.Session

    @property
    def id(self) -> str:
        """The session id (a secret: send it only in the cookie)."""
        return self._n.id

    @property
    def is_new(self) -> bool:
        return self._n.is_new

    @property
    def is_modified(self) -> bool:
        return self._n.is_modified

    @property
    def is_locked(self) -> bool:
        return self._n.is_locked

    def get(self, name: str) -> Optional[bytes]:
        return self._n.get(name)

    def set(self, name: str, value: Value) -> None:
        self._n.set(name, value)

    def remove(self, name: str) -> None:
        self._n.remove(name)

    def keys(self) -> List[str]:
        return self._n.keys()

    def get_json(self, name: str, default: Any = None) -> Any:
        raw = self._n.get(name)
        return default if raw is None else _JSON.loads(raw)

    def set_json(self, name: str, value: Any) -> None:
        self._n.set(name, _JSON.dumps(value))

    def __getitem__(self, name: str) -> bytes:
        v = self._n.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __setitem__(self, name: str, value: Value) -> None:
        self._n.set(name, value)

    def __delitem__(self, name: str) -> None:
        self._n.remove(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._n.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._n.keys())

    def __len__(self) -> int:
        return len(self._n.keys())

    def __repr__(self) -> str:
        return repr(self._n)


class Session(_Fields):
    """One session as a request sees it (blocking face)."""

    def __init__(self, native: _native.Session) -> None:
        self._n = native

    def save(self) -> None:
        """Writes the changed fields only and gives back the lock if held."""
        self._n.save()

    def unlock(self) -> None:
        self._n.unlock()

    def regenerate(self) -> None:
        """A new id for the same fields (after login)."""
        self._n.regenerate()


class AsyncSession(_Fields):
    """One session as a request sees it (asyncio face)."""

    def __init__(self, native: _native.Session) -> None:
        self._n = native

    async def save(self) -> None:
        await self._n.save_async()

    async def unlock(self) -> None:
        await self._n.unlock_async()

    async def regenerate(self) -> None:
        await self._n.regenerate_async()


class Sessions:
    """The deployment's session store (blocking face)."""

    def __init__(self, native: _native.Sessions) -> None:
        self._n: Any = native

    def create(self) -> Session:
        return Session(self._n.create())

    def load(self, id: Key, lock: bool = False) -> Optional[Session]:
        """The session, or None if unknown, expired or malformed. ``lock``: hold its lock
        until save()/unlock() (TimeoutError when another request keeps it too long)."""
        n = self._n.load(id, lock)
        return None if n is None else Session(n)

    def destroy(self, id: Key) -> bool:
        return bool(self._n.destroy(id))

    def touch(self, id: Key) -> bool:
        """Extends the idle timeout without loading; False if the session is gone."""
        return bool(self._n.touch(id))


class AsyncSessions:
    """The session store (asyncio face)."""

    def __init__(self, native: _native.Sessions) -> None:
        self._n: Any = native

    def create(self) -> AsyncSession:
        return AsyncSession(self._n.create())

    async def load(self, id: Key, lock: bool = False) -> Optional[AsyncSession]:
        n = await self._n.load_async(id, lock)
        return None if n is None else AsyncSession(n)

    async def destroy(self, id: Key) -> bool:
        return bool(await self._n.destroy_async(id))

    async def touch(self, id: Key) -> bool:
        return bool(await self._n.touch_async(id))
