"""The exception hierarchy: one class per error kind, all rooted at :class:`ClusterkitError`.

The same kinds exist in every clusterkit language binding (``invalid_argument``,
``not_found``, ``timeout``, ``unavailable``, ``conflict``, ``closed``, ``backend``,
``internal``). Each class also derives from the closest built-in exception so that generic
handlers (``except ValueError``, ``except TimeoutError``, ``except LookupError``) keep working.
Messages never contain secrets (passwords, session ids, lock tokens, values).
"""

from __future__ import annotations

import builtins
from typing import Dict, Optional, Type

__all__ = [
    "ClusterkitError",
    "InvalidArgumentError",
    "NotFoundError",
    "TimeoutError",
    "UnavailableError",
    "ConflictError",
    "ClosedError",
    "BackendError",
    "InternalError",
]


class ClusterkitError(Exception):
    """Base class of every clusterkit error. ``kind`` is the stable kind name."""

    kind: str = "internal"

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        #: For :class:`InvalidArgumentError`: the argument or config path that is wrong.
        self.field = field


class InvalidArgumentError(ClusterkitError, ValueError, TypeError):
    """A bad argument or config value (wrong type, out of range, bad key or name);
    ``field`` names it."""

    kind = "invalid_argument"


class NotFoundError(ClusterkitError, LookupError):
    """The thing asked for does not exist (a pool, a node)."""

    kind = "not_found"


class TimeoutError(ClusterkitError, builtins.TimeoutError):
    """An operation did not finish within its deadline (a lock wait, a backend call)."""

    kind = "timeout"


class UnavailableError(ClusterkitError, ConnectionError):
    """No healthy node, no quorum, or the backend is down."""

    kind = "unavailable"


class ConflictError(ClusterkitError):
    """The lock is held by someone else or was lost; a duplicate id; a compare failed."""

    kind = "conflict"


class ClosedError(ClusterkitError):
    """A handle was used after it was closed or released."""

    kind = "closed"


class BackendError(ClusterkitError):
    """The backend server answered with an error."""

    kind = "backend"


class InternalError(ClusterkitError):
    """A bug in clusterkit (or a compute function's exception seen by a coalesced waiter)."""

    kind = "internal"


_BY_KIND: Dict[str, Type[ClusterkitError]] = {
    cls.kind: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        TimeoutError,
        UnavailableError,
        ConflictError,
        ClosedError,
        BackendError,
        InternalError,
    )
}
