"""The library's log records in the standard :mod:`logging` module.

The core keeps its records (pool, node id, a key's hash: never values, session ids or
data, lock tokens or passwords) in a bounded buffer only while a level is set, so logging
costs nothing until :func:`enable` is called. :func:`enable` sets the core's level from the
``"clusterkit"`` logger's effective level and feeds the records to that logger's children
(``clusterkit.cache``, ``clusterkit.cluster``, ...; the core target ``clusterkit::cache``
becomes the logger ``clusterkit.cache``), from a background thread or on demand with
:func:`pump`::

    import logging, clusterkit.logs
    logging.basicConfig(level=logging.INFO)
    clusterkit.logs.enable()            # level from logging.getLogger("clusterkit")

Each :class:`logging.LogRecord` carries the structured fields as ``record.ck_fields`` (a
dict of str) and the core target as ``record.ck_target``. ``TRACE`` (5) is the level below
``DEBUG`` that receives every cache operation.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, List, Optional, Union

from . import _native

__all__ = ["TRACE", "LOGGER_NAME", "enable", "disable", "pump", "dropped", "core_level"]

TRACE = 5
LOGGER_NAME = "clusterkit"
logging.addLevelName(TRACE, "TRACE")

_TO_PY: Dict[str, int] = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

Level = Union[int, str, None]


def _core_name(level: int) -> str:
    """The core level that keeps every record a logger at ``level`` would emit."""
    if level <= TRACE:
        return "trace"
    if level <= logging.DEBUG:
        return "debug"
    if level <= logging.INFO:
        return "info"
    if level <= logging.WARNING:
        return "warn"
    if level <= logging.ERROR:
        return "error"
    return "off"


def core_level() -> str:
    """The core's current level: ``"off"``, ``"error"``, ..., ``"trace"``."""
    return str(_native.log_level())


def dropped() -> int:
    """Records the core dropped since the process started because nobody drained in time."""
    return int(_native.log_dropped())


class _Pump:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: Optional[threading.Thread] = None
        self.stop = threading.Event()
        self.interval = 0.2
        self.fixed: Optional[int] = None  # a level given to enable(), else the logger's
        self.enabled = False

    def sync_level(self) -> None:
        want = self.fixed if self.fixed is not None else logging.getLogger(LOGGER_NAME).getEffectiveLevel()
        name = _core_name(want)
        if _native.log_level() != name:
            _native.log_set_level(name)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                pump()
            except Exception:  # a broken handler must not kill the pump; logging reports it
                logging.getLogger(LOGGER_NAME).exception("clusterkit log pump failed")


_pump = _Pump()


def _emit(records: List[Dict[str, Any]]) -> None:
    for r in records:
        target = str(r.get("target", LOGGER_NAME))
        logger = logging.getLogger(target.replace("::", "."))
        level = _TO_PY.get(str(r.get("level")), logging.INFO)
        if not logger.isEnabledFor(level):
            continue
        fields: Dict[str, str] = dict(r.get("fields") or {})
        msg = str(r.get("message", ""))
        if fields:
            msg = msg + " " + " ".join(f"{k}={v}" for k, v in fields.items())
        rec = logger.makeRecord(
            logger.name, level, target, 0, msg, (), None, extra={"ck_fields": fields, "ck_target": target}
        )
        t = r.get("time_ms")
        if isinstance(t, int):
            rec.created = t / 1000.0
            rec.msecs = float(t % 1000)
        logger.handle(rec)


def pump() -> int:
    """Hands every record buffered in the core to :mod:`logging` now (re-reading the
    ``"clusterkit"`` logger's level first); returns how many were drained."""
    with _pump.lock:
        if _pump.enabled:
            _pump.sync_level()
        n = 0
        while True:
            batch: List[Dict[str, Any]] = _native.log_drain(1000)
            if not batch:
                return n
            n += len(batch)
            _emit(batch)


def enable(level: Level = None, *, background: bool = True, interval: float = 0.2) -> None:
    """Starts delivering the core's records to the ``"clusterkit"`` logger.

    ``level``: a :mod:`logging` level (int or name, ``"TRACE"`` included) that overrides the
    logger's effective level for what the core keeps; None follows the logger (re-read at
    each pump). ``background``: a daemon thread pumps every ``interval`` seconds (restarted
    in a forked child); False: call :func:`pump` yourself. Raises UnavailableError when the
    process already has another ``tracing`` subscriber."""
    if isinstance(level, str):
        lv = logging.getLevelName(level.upper())
        if not isinstance(lv, int):
            from .errors import InvalidArgumentError

            raise InvalidArgumentError(f"invalid level: unknown logging level {level!r}", "level")
        level = lv
    if not (interval > 0):
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(f"invalid interval: must be > 0 seconds, got {interval!r}", "interval")
    with _pump.lock:
        _pump.fixed = level
        _pump.enabled = True
        _pump.interval = interval
        _pump.sync_level()
    if background:
        _start()


def _start() -> None:
    with _pump.lock:
        if _pump.thread is not None and _pump.thread.is_alive():
            return
        _pump.stop = threading.Event()
        _pump.thread = threading.Thread(target=_pump.run, name="clusterkit-logs", daemon=True)
        _pump.thread.start()


def disable() -> None:
    """Stops the background pump, delivers what is buffered, and turns the core's records
    off (logging then costs nothing again)."""
    t = _pump.thread
    _pump.stop.set()
    if t is not None and t is not threading.current_thread():
        t.join(timeout=5)
    _pump.thread = None
    with _pump.lock:
        _pump.enabled = False
        _pump.fixed = None
    pump()
    with _pump.lock:
        _native.log_set_level("off")


def _after_fork() -> None:
    _pump.lock = threading.Lock()
    if _pump.thread is not None:
        _pump.thread = None
        _start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
