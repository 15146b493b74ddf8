"""A stand-in for a native handle after close(): every use raises ClosedError."""

from __future__ import annotations

from typing import Any, NoReturn

from .errors import ClosedError


class _Closed:
    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        what = self._what

        def closed(*_a: Any, **_k: Any) -> NoReturn:
            raise ClosedError(f"closed: this {what} was closed")

        return closed
