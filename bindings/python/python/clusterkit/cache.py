"""The distributed cache: a blocking face (:class:`Cache`) and an asyncio face
(:class:`AsyncCache`) over one native cache. Keys are bytes or str (UTF-8); values are
bytes (str is encoded as UTF-8). Durations are seconds (int, float) or ``timedelta``;
``ttl=None`` means no expiry and ``ttl=0`` deletes the key (``set``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
)

from . import _native
from .serializers import Serializer

Seconds = Union[int, float, timedelta]
Key = Union[bytes, bytearray, str]
Value = Union[bytes, bytearray, str]
Items = Union[Mapping[Key, Value], Iterable[Tuple[Key, Value]]]
T = TypeVar("T")

__all__ = ["Cache", "AsyncCache", "TypedCache", "AsyncTypedCache", "Seconds", "Key", "Value"]


class Cache:
    """Blocking cache operations; the GIL is released while a call waits for the backend.
    Safe to use from many threads at once, and after ``os.fork()``."""

    def __init__(self, native: _native.Cache) -> None:
        self._n: Any = native

    @property
    def namespace(self) -> str:
        """The namespace of this cache's keys (``<namespace>:c:<key>`` in Redis)."""
        return str(self._n.namespace)

    def with_namespace(self, namespace: str) -> "Cache":
        """The same backend under another namespace."""
        return Cache(self._n.with_namespace(namespace))

    def stats(self) -> Dict[str, int]:
        """Counters of this cache: ``hits``, ``misses``, ``errors``, ``writes``."""
        return dict(self._n.stats())

    def get(self, key: Key) -> Optional[bytes]:
        """The value of ``key``, or None if absent or expired."""
        r: Optional[bytes] = self._n.get(key)
        return r

    def set(self, key: Key, value: Value, ttl: Optional[Seconds] = None) -> None:
        """Stores ``value`` for ``ttl`` (None: no expiry; 0: delete the key)."""
        self._n.set(key, value, ttl)

    def add(self, key: Key, value: Value, ttl: Optional[Seconds] = None) -> bool:
        """Stores ``value`` only if ``key`` is absent; True if it was stored (atomic)."""
        return bool(self._n.add(key, value, ttl))

    def delete(self, key: Key) -> bool:
        """Deletes ``key``; True if it existed."""
        return bool(self._n.delete(key))

    def has(self, key: Key) -> bool:
        return bool(self._n.has(key))

    def __contains__(self, key: Key) -> bool:
        return self.has(key)

    def get_many(self, keys: Iterable[Key]) -> List[Optional[bytes]]:
        """Values of ``keys`` in order (None for absent ones), grouped per node in parallel."""
        r: List[Optional[bytes]] = self._n.get_many(keys)
        return r

    def set_many(self, items: Items, ttl: Optional[Seconds] = None) -> None:
        """Stores every (key, value) of a mapping or an iterable of pairs."""
        self._n.set_many(items, ttl)

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Deletes ``keys``; returns how many existed."""
        return int(self._n.delete_many(keys))

    def incr(self, key: Key, delta: int = 1) -> int:
        """Atomically adds ``delta`` (an absent key counts as 0); returns the new value."""
        return int(self._n.incr(key, delta))

    def decr(self, key: Key, delta: int = 1) -> int:
        """Atomically subtracts ``delta``; returns the new value."""
        return int(self._n.incr(key, -delta))

    def ttl(self, key: Key) -> Optional[float]:
        """Remaining lifetime in seconds: None if absent, ``math.inf`` if it never expires."""
        r: Optional[float] = self._n.ttl(key)
        return r

    def clear(self) -> int:
        """Deletes every entry of this namespace (and only those); returns how many."""
        return int(self._n.clear())

    def get_or_compute(
        self,
        key: Key,
        ttl: Seconds,
        compute: Callable[[], Value],
        beta: Optional[float] = None,
    ) -> bytes:
        """The value of ``key``; on a miss ``compute()`` runs once (concurrent callers of
        this process for the same key wait for it) and its value is stored for ``ttl``.
        Popular keys are refreshed early (XFetch, ``beta``). Keys written this way carry a
        small header: read them with this method."""
        return bytes(self._n.get_or_compute(key, ttl, compute, beta))

    def typed(self, serializer: Serializer[T]) -> "TypedCache[T]":
        """This cache with values passed through ``serializer`` (str, JSON, pickle, ...)."""
        return TypedCache(self, serializer)


class AsyncCache:
    """The asyncio face: every method returns an awaitable completed from the core's runtime
    (no thread per call)."""

    def __init__(self, native: _native.Cache) -> None:
        self._n: Any = native

    @property
    def namespace(self) -> str:
        return str(self._n.namespace)

    def stats(self) -> Dict[str, int]:
        return dict(self._n.stats())

    async def get(self, key: Key) -> Optional[bytes]:
        r: Optional[bytes] = await self._n.get_async(key)
        return r

    async def set(self, key: Key, value: Value, ttl: Optional[Seconds] = None) -> None:
        await self._n.set_async(key, value, ttl)

    async def add(self, key: Key, value: Value, ttl: Optional[Seconds] = None) -> bool:
        return bool(await self._n.add_async(key, value, ttl))

    async def delete(self, key: Key) -> bool:
        return bool(await self._n.delete_async(key))

    async def has(self, key: Key) -> bool:
        return bool(await self._n.has_async(key))

    async def get_many(self, keys: Iterable[Key]) -> List[Optional[bytes]]:
        r: List[Optional[bytes]] = await self._n.get_many_async(keys)
        return r

    async def set_many(self, items: Items, ttl: Optional[Seconds] = None) -> None:
        await self._n.set_many_async(items, ttl)

    async def delete_many(self, keys: Iterable[Key]) -> int:
        return int(await self._n.delete_many_async(keys))

    async def incr(self, key: Key, delta: int = 1) -> int:
        return int(await self._n.incr_async(key, delta))

    async def decr(self, key: Key, delta: int = 1) -> int:
        return int(await self._n.incr_async(key, -delta))

    async def ttl(self, key: Key) -> Optional[float]:
        r: Optional[float] = await self._n.ttl_async(key)
        return r

    async def clear(self) -> int:
        return int(await self._n.clear_async())

    async def get_or_compute(
        self,
        key: Key,
        ttl: Seconds,
        compute: Callable[[], Union[Value, Awaitable[Value]]],
        beta: Optional[float] = None,
    ) -> bytes:
        """As :meth:`Cache.get_or_compute`; ``compute`` may be a coroutine function (it runs
        in this loop, once per key at a time)."""
        return bytes(await self._n.get_or_compute_async(key, ttl, compute, beta))

    def typed(self, serializer: Serializer[T]) -> "AsyncTypedCache[T]":
        return AsyncTypedCache(self, serializer)


class TypedCache(Generic[T]):
    """A :class:`Cache` whose values go through a serializer."""

    def __init__(self, cache: Cache, serializer: Serializer[T]) -> None:
        self.cache = cache
        self.serializer = serializer

    def get(self, key: Key, default: Optional[T] = None) -> Optional[T]:
        raw = self.cache.get(key)
        return default if raw is None else self.serializer.loads(raw)

    def set(self, key: Key, value: T, ttl: Optional[Seconds] = None) -> None:
        self.cache.set(key, self.serializer.dumps(value), ttl)

    def add(self, key: Key, value: T, ttl: Optional[Seconds] = None) -> bool:
        return self.cache.add(key, self.serializer.dumps(value), ttl)

    def delete(self, key: Key) -> bool:
        return self.cache.delete(key)

    def get_many(self, keys: Iterable[Key]) -> List[Optional[T]]:
        return [None if r is None else self.serializer.loads(r) for r in self.cache.get_many(keys)]

    def set_many(self, items: Mapping[Key, T], ttl: Optional[Seconds] = None) -> None:
        self.cache.set_many([(k, self.serializer.dumps(v)) for k, v in items.items()], ttl)

    def get_or_compute(self, key: Key, ttl: Seconds, compute: Callable[[], T]) -> T:
        raw = self.cache.get_or_compute(key, ttl, lambda: self.serializer.dumps(compute()))
        return self.serializer.loads(raw)


class AsyncTypedCache(Generic[T]):
    """An :class:`AsyncCache` whose values go through a serializer."""

    def __init__(self, cache: AsyncCache, serializer: Serializer[T]) -> None:
        self.cache = cache
        self.serializer = serializer

    async def get(self, key: Key, default: Optional[T] = None) -> Optional[T]:
        raw = await self.cache.get(key)
        return default if raw is None else self.serializer.loads(raw)

    async def set(self, key: Key, value: T, ttl: Optional[Seconds] = None) -> None:
        await self.cache.set(key, self.serializer.dumps(value), ttl)

    async def delete(self, key: Key) -> bool:
        return await self.cache.delete(key)
