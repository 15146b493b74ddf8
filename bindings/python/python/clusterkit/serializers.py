"""Explicit value layers over the bytes cache: str, JSON, pickle (never the default).

The cache stores bytes. To store other values, pick a serializer explicitly::

    users = ck.cache.typed(JsonSerializer())
    users.set("u:1", {"name": "Ada"})

:class:`PickleSerializer` can execute code while loading: use it only for data this
application wrote itself, never for values another party can write.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Generic, TypeVar

from .errors import InvalidArgumentError

T = TypeVar("T")

__all__ = ["Serializer", "BytesSerializer", "StrSerializer", "JsonSerializer", "PickleSerializer"]


class Serializer(Generic[T]):
    """Turns values into bytes and back."""

    def dumps(self, value: T) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def loads(self, data: bytes) -> T:  # pragma: no cover - interface
        raise NotImplementedError


class BytesSerializer(Serializer[bytes]):
    """Bytes as they are."""

    def dumps(self, value: bytes) -> bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidArgumentError(
                f"invalid value: must be bytes, got {type(value).__name__}", "value"
            )
        return bytes(value)

    def loads(self, data: bytes) -> bytes:
        return data


class StrSerializer(Serializer[str]):
    """Text, encoded (UTF-8 by default)."""

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def dumps(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise InvalidArgumentError(
                f"invalid value: must be str, got {type(value).__name__}", "value"
            )
        return value.encode(self.encoding)

    def loads(self, data: bytes) -> str:
        return data.decode(self.encoding)


class JsonSerializer(Serializer[Any]):
    """JSON (compact, UTF-8): readable from every clusterkit language."""

    def dumps(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"invalid value: not JSON-serializable: {e}", "value") from e

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class PickleSerializer(Serializer[Any]):
    """pickle (any Python object). Only for data this application wrote itself."""

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)
