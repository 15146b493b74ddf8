"""Django integration: a cache backend and a session engine on clusterkit.

Settings::

    CLUSTERKIT = {"cache": {"redis": "127.0.0.1:6379", "namespace": "myapp"}}   # the document

    CACHES = {
        "default": {
            "BACKEND": "clusterkit.django.Cache",
            # OPTIONS["CONFIG"] (dict or JSON/TOML text) or LOCATION (a config file path);
            # neither: settings.CLUSTERKIT; none of these: everything embedded.
            "TIMEOUT": 300, "KEY_PREFIX": "", "VERSION": 1,
        }
    }
    SESSION_ENGINE = "clusterkit.django"          # sessions on the deployment's store
    CLUSTERKIT_SESSION_LOCK = False               # True: one request per session at a time

The cache follows Django's whole contract: timeouts (``None`` = forever, ``0`` or less =
expire now), versions, key functions and key validation warnings, ``incr``/``decr`` raising
``ValueError`` on a missing key, and native ``a*`` methods on clusterkit's asyncio face.
Values are stored like Django's own Redis backend: ints as decimal digits (so ``incr`` is
atomic on the server), anything else pickled — Django's cache contract stores arbitrary
objects, so this backend pickles; clusterkit's own API never does unless asked.
"""

from __future__ import annotations

import pickle
from typing import Any, Dict, Iterable, List, Optional, Union

from django.conf import settings  # type: ignore[import-untyped]
from django.contrib.sessions.backends.base import (  # type: ignore[import-untyped]
    CreateError,
    SessionBase,
    UpdateError,
)
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache  # type: ignore[import-untyped]

from .deployment import Clusterkit, Config
from .errors import ClusterkitError

__all__ = ["Cache", "SessionStore"]


def _deployment(config: Config) -> Clusterkit:
    if config is None:
        config = getattr(settings, "CLUSTERKIT", None)
    return Clusterkit.shared(config)


class _Serializer:
    """Django's Redis serializer: exact ints as digits, everything else pickled."""

    def __init__(self, protocol: Optional[int] = None) -> None:
        self.protocol = pickle.HIGHEST_PROTOCOL if protocol is None else protocol

    def dumps(self, obj: Any) -> bytes:
        if type(obj) is int:
            return str(obj).encode()
        return pickle.dumps(obj, self.protocol)

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            return pickle.loads(data)


class Cache(BaseCache):  # type: ignore[misc]
    """``CACHES[...]["BACKEND"] = "clusterkit.django.Cache"``."""

    def __init__(self, server: Union[str, List[str], None], params: Dict[str, Any]) -> None:
        super().__init__(params)
        options: Dict[str, Any] = dict(params.get("OPTIONS") or {})
        config: Config = options.get("CONFIG")
        if config is None and server:
            location = server[0] if isinstance(server, (list, tuple)) else server
            with open(location, encoding="utf-8") as f:
                config = f.read()
        self._ck = _deployment(config)
        self._cache = self._ck.cache
        self._acache = self._ck.aio.cache
        self._ser = _Serializer(options.get("PICKLE_PROTOCOL"))

    # Django's timeout semantics -> clusterkit TTL: None forever, <= 0 expire now.
    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> Optional[float]:
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return max(0.0, float(timeout))

    def _key(self, key: Any, version: Optional[int]) -> str:
        return str(self.make_and_validate_key(key, version=version))

    # --- blocking ----------------------------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        k = self._key(key, version)
        ttl = self.get_backend_timeout(timeout)
        data = self._ser.dumps(value)
        if ttl == 0:
            # Django: stored and expired at once; report whether it would have been added.
            return not self._cache.has(k)
        return self._cache.add(k, data, ttl)

    def get(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        raw = self._cache.get(self._key(key, version))
        return default if raw is None else self._ser.loads(raw)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> None:
        self._cache.set(self._key(key, version), self._ser.dumps(value), self.get_backend_timeout(timeout))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        k = self._key(key, version)
        raw = self._cache.get(k)
        if raw is None:
            return False
        self._cache.set(k, raw, self.get_backend_timeout(timeout))
        return True

    def delete(self, key: Any, version: Optional[int] = None) -> bool:
        return self._cache.delete(self._key(key, version))

    def get_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        keys = list(keys)
        if not keys:
            return {}
        made = [self._key(k, version) for k in keys]
        out: Dict[Any, Any] = {}
        for orig, raw in zip(keys, self._cache.get_many(made)):
            if raw is not None:
                out[orig] = self._ser.loads(raw)
        return out

    def has_key(self, key: Any, version: Optional[int] = None) -> bool:
        return self._cache.has(self._key(key, version))

    def incr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        k = self._key(key, version)
        if not self._cache.has(k):
            raise ValueError(f"Key '{key}' not found")
        try:
            return self._cache.incr(k, delta)
        except ClusterkitError as e:
            if e.kind == "backend":
                raise ValueError(f"Key '{key}' does not hold an integer") from e
            raise

    def decr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        return self.incr(key, -delta, version)

    def set_many(self, data: Dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> List[Any]:
        if not data:
            return []
        items = [(self._key(k, version), self._ser.dumps(v)) for k, v in data.items()]
        self._cache.set_many(items, self.get_backend_timeout(timeout))
        return []

    def delete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        made = [self._key(k, version) for k in keys]
        if made:
            self._cache.delete_many(made)

    def clear(self) -> None:
        self._cache.clear()

    def close(self, **kwargs: Any) -> None:
        # The deployment is shared by the process (connections reused across requests).
        pass

    # --- asyncio (native) ----------------------------------------------------------------

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        k = self._key(key, version)
        ttl = self.get_backend_timeout(timeout)
        data = self._ser.dumps(value)
        if ttl == 0:
            return not await self._acache.has(k)
        return await self._acache.add(k, data, ttl)

    async def aget(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        raw = await self._acache.get(self._key(key, version))
        return default if raw is None else self._ser.loads(raw)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> None:
        await self._acache.set(self._key(key, version), self._ser.dumps(value), self.get_backend_timeout(timeout))

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        k = self._key(key, version)
        raw = await self._acache.get(k)
        if raw is None:
            return False
        await self._acache.set(k, raw, self.get_backend_timeout(timeout))
        return True

    async def adelete(self, key: Any, version: Optional[int] = None) -> bool:
        return await self._acache.delete(self._key(key, version))

    async def aget_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        keys = list(keys)
        if not keys:
            return {}
        made = [self._key(k, version) for k in keys]
        raws = await self._acache.get_many(made)
        return {orig: self._ser.loads(raw) for orig, raw in zip(keys, raws) if raw is not None}

    async def ahas_key(self, key: Any, version: Optional[int] = None) -> bool:
        return await self._acache.has(self._key(key, version))

    async def aincr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        k = self._key(key, version)
        if not await self._acache.has(k):
            raise ValueError(f"Key '{key}' not found")
        try:
            return await self._acache.incr(k, delta)
        except ClusterkitError as e:
            if e.kind == "backend":
                raise ValueError(f"Key '{key}' does not hold an integer") from e
            raise

    async def adecr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        return await self.aincr(key, -delta, version)

    async def aset_many(self, data: Dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> List[Any]:
        if not data:
            return []
        items = [(self._key(k, version), self._ser.dumps(v)) for k, v in data.items()]
        await self._acache.set_many(items, self.get_backend_timeout(timeout))
        return []

    async def adelete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        made = [self._key(k, version) for k in keys]
        if made:
            await self._acache.delete_many(made)

    async def aclear(self) -> None:
        await self._acache.clear()

    async def aclose(self, **kwargs: Any) -> None:
        pass


class SessionStore(SessionBase):  # type: ignore[misc]
    """``SESSION_ENGINE = "clusterkit.django"``: Django sessions on clusterkit's session
    store (ids from the OS CSPRNG, idle/absolute timeouts from the document's
    ``[sessions]``). Each top-level session key is one field, written only when it changed
    (delta saves: concurrent requests changing different keys do not overwrite each other).
    With ``CLUSTERKIT_SESSION_LOCK = True`` a request holds the session's lock from its first
    access until the save (or until the store is discarded)."""

    _session_key: Optional[str]
    _session_cache: Dict[str, Any]

    def __init__(self, session_key: Optional[str] = None) -> None:
        super().__init__(session_key)
        self._ck = _deployment(None)
        self._native: Any = None
        self._loaded: Dict[str, bytes] = {}
        self._lock_sessions = bool(getattr(settings, "CLUSTERKIT_SESSION_LOCK", False))

    def _encode_field(self, value: Any) -> bytes:
        data: bytes = self.serializer().dumps(value)
        return data

    def _decode_field(self, data: bytes) -> Any:
        return self.serializer().loads(data)

    def load(self) -> Dict[str, Any]:
        s = None
        if self.session_key is not None:
            s = self._ck.sessions.load(self.session_key, lock=self._lock_sessions)
        if s is None:
            self._session_key = None
            self._native = None
            self._loaded = {}
            return {}
        self._native = s
        self._loaded = {k: v for k in s.keys() if (v := s.get(k)) is not None}
        out: Dict[str, Any] = {}
        for k, raw in self._loaded.items():
            try:
                out[k] = self._decode_field(raw)
            except Exception:  # noqa: BLE001 - a field written by another app/format
                continue
        return out

    def exists(self, session_key: Optional[str]) -> bool:
        return session_key is not None and self._ck.sessions.load(session_key) is not None

    def create(self) -> None:
        s = self._ck.sessions.create()
        self._native = s
        self._loaded = {}
        self._session_key = s.id
        self.modified = True
        self.save(must_create=True)

    def save(self, must_create: bool = False) -> None:
        if self._native is None and self.session_key is not None and not must_create:
            self._get_session()  # loads the stored session (and its fields)
        if self.session_key is None or self._native is None:
            return self.create()
        s = self._native
        if must_create and not s.is_new:
            raise CreateError
        data = self._get_session(no_load=must_create)
        current = {k: self._encode_field(v) for k, v in data.items()}
        for k, raw in current.items():
            if self._loaded.get(k) != raw:
                s.set(k, raw)
        for k in self._loaded:
            if k not in current:
                s.remove(k)
        try:
            s.save()
        except ClusterkitError as e:
            raise UpdateError from e
        self._session_key = s.id
        self._loaded = current

    def delete(self, session_key: Optional[str] = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self._ck.sessions.destroy(session_key)
        if session_key == self.session_key:
            self._native = None
            self._loaded = {}

    def cycle_key(self) -> None:
        """A new id for the same data (Django calls this on login)."""
        data = self._session_cache if hasattr(self, "_session_cache") else self.load()
        if self._native is None:
            self._session_cache = data
            self.create()
            return
        self.save()
        assert self._native is not None
        self._native.regenerate()
        self._session_key = self._native.id

    @classmethod
    def clear_expired(cls) -> None:
        # Sessions expire by themselves (TTL in Redis, swept when embedded).
        pass
