"""The task queue (Redis Streams, or embedded in this process): enqueue jobs, run workers.

::

    ck = clusterkit.Clusterkit({"queue": {"redis": "127.0.0.1:6379"}})
    ck.queue.enqueue("emails", b'{"to": "a@example.com"}', delay=5, max_attempts=5)

    def send(job: clusterkit.Job) -> None: ...          # raise to fail (retried with backoff)
    ck.queue.worker("emails", send, concurrency=4).run()  # until SIGTERM / SIGINT

    async def send_async(job: clusterkit.Job) -> None: ...
    await ck.aio.queue.worker("emails", send_async, concurrency=16).run()

Delivery is at least once: a worker that dies mid-job loses its lease after the visibility
timeout and the job runs again elsewhere, so handlers must be idempotent. Every rule (leases,
retries, dead letters, idempotency keys, priorities, reclaiming) is in the Rust core; this
module converts arguments and runs the worker loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import threading
import time
from datetime import datetime, timedelta
from types import FrameType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from . import _native
from .cache import Seconds
from .errors import ConflictError, InvalidArgumentError

__all__ = [
    "Job",
    "Queue",
    "AsyncQueue",
    "Consumer",
    "AsyncConsumer",
    "Worker",
    "AsyncWorker",
    "WorkerResult",
]

Payload = Union[bytes, bytearray, str]
#: ``{"kind": "fixed", "delay": 0.5}`` or ``{"kind": "exponential", "delay": 1, "max": 300,
#: "jitter": True}`` (seconds).
BackoffSpec = Mapping[str, Any]
JobSpec = Union[Payload, Tuple[Payload, Mapping[str, Any]]]
Job = _native.Job

_OPTION_NAMES = ("delay", "run_at", "max_attempts", "backoff", "idempotency_key", "idempotency_ttl", "priority")


def _ms(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        raise InvalidArgumentError(f"invalid {field}: must be seconds (int, float or timedelta)", field)
    secs = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(secs):
        raise InvalidArgumentError(f"invalid {field}: must be finite, got {secs}", field)
    ms = secs * 1000.0
    # A positive fraction of a millisecond is one millisecond; zero and negatives go to the
    # core as they are and are reported there.
    return int(math.ceil(ms)) if ms > 0 else int(ms)


def _options(
    delay: Optional[Seconds] = None,
    run_at: Union[None, datetime, float, int] = None,
    max_attempts: Optional[int] = None,
    backoff: Optional[BackoffSpec] = None,
    idempotency_key: Optional[str] = None,
    idempotency_ttl: Optional[Seconds] = None,
    priority: Optional[str] = None,
) -> Optional[str]:
    o: Dict[str, Any] = {}
    if delay is not None:
        o["delay_ms"] = _ms(delay, "delay")
    if run_at is not None:
        if isinstance(run_at, datetime):
            o["run_at_ms"] = int(run_at.timestamp() * 1000)
        elif isinstance(run_at, (int, float)) and not isinstance(run_at, bool):
            o["run_at_ms"] = int(run_at * 1000)
        else:
            raise InvalidArgumentError("invalid run_at: must be a datetime or Unix seconds", "run_at")
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise InvalidArgumentError("invalid max_attempts: must be an int", "max_attempts")
        o["max_attempts"] = max_attempts
    if backoff is not None:
        if not isinstance(backoff, Mapping):
            raise InvalidArgumentError("invalid backoff: must be a dict with kind, delay[, max, jitter]", "backoff")
        b: Dict[str, Any] = {}
        for k, v in backoff.items():
            if k == "kind":
                b["kind"] = v
            elif k == "delay":
                b["delay_ms"] = _ms(v, "backoff.delay")
            elif k == "max":
                b["max_ms"] = _ms(v, "backoff.max")
            elif k == "jitter":
                b["jitter"] = v
            else:
                raise InvalidArgumentError(f"invalid backoff: unknown key {k!r}", "backoff")
        o["backoff"] = b
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str):
            raise InvalidArgumentError("invalid idempotency_key: must be a str", "idempotency_key")
        o["idempotency_key"] = idempotency_key
    if idempotency_ttl is not None:
        o["idempotency_ttl_ms"] = _ms(idempotency_ttl, "idempotency_ttl")
    if priority is not None:
        o["priority"] = priority
    return json.dumps(o) if o else None


def _spec(item: Any, i: int) -> Tuple[Any, Optional[str]]:
    if isinstance(item, tuple):
        if len(item) != 2 or not isinstance(item[1], Mapping):
            raise InvalidArgumentError(f"invalid jobs[{i}]: must be a payload or (payload, options dict)", f"jobs[{i}]")
        unknown = set(item[1]) - set(_OPTION_NAMES)
        if unknown:
            raise InvalidArgumentError(f"invalid jobs[{i}]: unknown option {sorted(unknown)[0]!r}", f"jobs[{i}]")
        return (item[0], _options(**item[1]))
    return (item, None)


def _receipt(job: Union[Job, str]) -> str:
    if isinstance(job, str):
        return job
    if isinstance(job, _native.Job):
        return job.receipt
    raise InvalidArgumentError("invalid job: must be a Job or its receipt", "job")


def _receipts(jobs: Any) -> List[str]:
    if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Sequence):
        raise InvalidArgumentError("invalid jobs: must be a list of Jobs or receipts", "jobs")
    out = []
    for i, j in enumerate(jobs):
        if isinstance(j, str):
            out.append(j)
        elif isinstance(j, _native.Job):
            out.append(j.receipt)
        else:
            raise InvalidArgumentError(f"invalid jobs[{i}]: must be a Job or its receipt", f"jobs[{i}]")
    return out


class Consumer:
    """Reserves jobs of one queue and settles them (blocking calls, GIL released while
    waiting). Thread-safe: any number of threads may reserve on one consumer."""

    def __init__(self, native: _native.Consumer) -> None:
        self._n = native

    @property
    def name(self) -> str:
        return self._n.name

    @property
    def queue(self) -> str:
        return self._n.queue

    @property
    def is_stopped(self) -> bool:
        return self._n.is_stopped

    def reserve(self, timeout: Seconds = 1.0) -> Optional[Job]:
        """The next job within ``timeout`` seconds (0: do not wait), or None (also once stopped).
        Waiting is a blocking read on the server, not polling."""
        return self._n.reserve(timeout)

    def reserve_many(self, max: int, timeout: Seconds = 1.0) -> List[Job]:
        return list(self._n.reserve_many(max, timeout))

    def ack(self, job: Union[Job, str]) -> None:
        """Done: removes the job. ConflictError if the lease was lost (the job was reclaimed)."""
        self._n.ack(_receipt(job))

    def ack_many(self, jobs: Sequence[Union[Job, str]]) -> List[bool]:
        """Acks many jobs in one round trip: one bool each, False when its lease was lost (what
        ``ack`` raises ConflictError for; a job repeated in the call is acked once)."""
        return list(self._n.ack_many(_receipts(jobs)))

    def ack_and_reserve(
        self, jobs: Sequence[Union[Job, str]], max: int, timeout: Seconds = 1.0
    ) -> Tuple[List[bool], List[Job]]:
        """Acks ``jobs`` and reserves up to ``max`` more: one round trip (one script run on
        Redis) when jobs wait; else the reserve then waits up to ``timeout`` seconds, the acks
        already done. Returns ``(acked, jobs)``, ``acked`` as ``ack_many`` returns it."""
        acked, got = self._n.ack_and_reserve(_receipts(jobs), max, timeout)
        return list(acked), list(got)

    def fail(self, job: Union[Job, str], error: str) -> Dict[str, Any]:
        """Retry after the backoff (``{"outcome": "retry", "at_ms", "attempt"}``) or dead
        letter (``{"outcome": "dead"}``). ``error`` is kept with the job, never logged."""
        return dict(self._n.fail(_receipt(job), str(error)))

    def extend(self, job: Union[Job, str]) -> None:
        """Heartbeat: the lease runs one full visibility timeout from now."""
        self._n.extend(_receipt(job))

    def release(self, job: Union[Job, str]) -> None:
        """Back to the end of its lane without using an attempt."""
        self._n.release(_receipt(job))

    def stop(self) -> None:
        """Waiting reserves return None at once. Never blocks (safe in signal handlers)."""
        self._n.stop()

    def shutdown(self) -> int:
        """stop() and return every job still leased to this consumer; how many went back."""
        return int(self._n.shutdown())


class AsyncConsumer:
    """The asyncio face of :class:`Consumer`."""

    def __init__(self, native: _native.Consumer) -> None:
        self._n = native

    @property
    def name(self) -> str:
        return self._n.name

    @property
    def queue(self) -> str:
        return self._n.queue

    @property
    def is_stopped(self) -> bool:
        return self._n.is_stopped

    async def reserve(self, timeout: Seconds = 1.0) -> Optional[Job]:
        return await self._n.reserve_async(timeout)

    async def reserve_many(self, max: int, timeout: Seconds = 1.0) -> List[Job]:
        return list(await self._n.reserve_many_async(max, timeout))

    async def ack(self, job: Union[Job, str]) -> None:
        await self._n.ack_async(_receipt(job))

    async def ack_many(self, jobs: Sequence[Union[Job, str]]) -> List[bool]:
        """``Consumer.ack_many``, awaitable."""
        return list(await self._n.ack_many_async(_receipts(jobs)))

    async def ack_and_reserve(
        self, jobs: Sequence[Union[Job, str]], max: int, timeout: Seconds = 1.0
    ) -> Tuple[List[bool], List[Job]]:
        """``Consumer.ack_and_reserve``, awaitable."""
        acked, got = await self._n.ack_and_reserve_async(_receipts(jobs), max, timeout)
        return list(acked), list(got)

    async def fail(self, job: Union[Job, str], error: str) -> Dict[str, Any]:
        return dict(await self._n.fail_async(_receipt(job), str(error)))

    async def extend(self, job: Union[Job, str]) -> None:
        await self._n.extend_async(_receipt(job))

    async def release(self, job: Union[Job, str]) -> None:
        await self._n.release_async(_receipt(job))

    def stop(self) -> None:
        self._n.stop()

    async def shutdown(self) -> int:
        return int(await self._n.shutdown_async())


class WorkerResult:
    """What a worker run did: ``completed``, ``failed`` (retried or dead-lettered), ``lost``
    (lease lost: the job was reclaimed elsewhere), ``returned`` (leases handed back at
    shutdown)."""

    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.lost = 0
        self.returned = 0
        self._lock = threading.Lock()

    @property
    def processed(self) -> int:
        return self.completed + self.failed

    def _add(self, what: str) -> int:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)
            return self.completed + self.failed

    def __repr__(self) -> str:
        return (
            f"<clusterkit.WorkerResult completed={self.completed} failed={self.failed} "
            f"lost={self.lost} returned={self.returned}>"
        )


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class Worker:
    """Runs ``handler(job)`` for the jobs of one queue on ``concurrency`` threads: a normal
    return acks the job, an exception fails it (retry with backoff, or dead letter after
    max attempts, with the error text kept). A heartbeat extends the lease of every job in
    progress every ``heartbeat`` seconds (default: a third of the visibility timeout), so
    long jobs are not reclaimed. :meth:`run` blocks until :meth:`stop`, SIGTERM/SIGINT (when
    run in the main thread), ``max_jobs`` or ``timeout``; jobs in progress are finished and
    anything still leased is handed back (no attempt used)."""

    def __init__(
        self,
        queue: "Queue",
        name: str,
        handler: Callable[[Job], Any],
        *,
        concurrency: int = 1,
        heartbeat: Optional[Seconds] = None,
        handle_signals: bool = True,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1024:
            raise InvalidArgumentError("invalid concurrency: must be an int between 1 and 1024", "concurrency")
        if not callable(handler):
            raise InvalidArgumentError("invalid handler: must be callable", "handler")
        self.consumer = queue.consumer(name)
        self._handler = handler
        self._concurrency = concurrency
        vis = queue.visibility_timeout
        self._heartbeat = _ms(heartbeat, "heartbeat") / 1000.0 if heartbeat is not None else vis / 3.0
        if self._heartbeat <= 0:
            raise InvalidArgumentError("invalid heartbeat: must be > 0", "heartbeat")
        self._handle_signals = handle_signals
        self._in_flight: Set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._done = threading.Event()
        self.result = WorkerResult()

    def stop(self) -> None:
        """Stops taking jobs; the ones in progress finish. Safe from any thread or handler."""
        self._done.set()
        self.consumer.stop()

    def _slot(self, max_jobs: Optional[int], deadline: Optional[float]) -> None:
        c = self.consumer
        while not c.is_stopped and not self._done.is_set():
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    self.stop()
                    return
            job = c.reserve(wait)
            if job is None:
                continue
            with self._in_flight_lock:
                self._in_flight.add(job.receipt)
            try:
                try:
                    self._handler(job)
                except Exception as e:  # the handler's failure is the job's
                    try:
                        c.fail(job, _error_text(e))
                        n = self.result._add("failed")
                    except ConflictError:
                        self.result._add("lost")
                        n = -1
                else:
                    try:
                        c.ack(job)
                        n = self.result._add("completed")
                    except ConflictError:
                        self.result._add("lost")
                        n = -1
            finally:
                with self._in_flight_lock:
                    self._in_flight.discard(job.receipt)
            if max_jobs is not None and n >= max_jobs:
                self.stop()

    def _beat(self) -> None:
        while not self._done.wait(self._heartbeat):
            with self._in_flight_lock:
                receipts = list(self._in_flight)
            for r in receipts:
                try:
                    self.consumer.extend(r)
                except ConflictError:
                    pass  # settled meanwhile, or reclaimed: the handler's ack reports it
                except Exception:
                    pass  # Redis briefly down: the next beat tries again

    def run(self, *, max_jobs: Optional[int] = None, timeout: Optional[Seconds] = None) -> WorkerResult:
        """Processes jobs until stopped (see the class); returns the counts."""
        deadline = time.monotonic() + _ms(timeout, "timeout") / 1000.0 if timeout is not None else None
        previous: Dict[signal.Signals, Any] = {}
        if self._handle_signals and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: Optional[FrameType]) -> None:
                self.stop()

            for s in (signal.SIGTERM, signal.SIGINT):
                previous[s] = signal.signal(s, on_signal)
        threads = [
            threading.Thread(target=self._slot, args=(max_jobs, deadline), name=f"clusterkit-worker-{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        beat = threading.Thread(target=self._beat, name="clusterkit-heartbeat", daemon=True)
        try:
            beat.start()
            for t in threads:
                t.start()
            for t in threads:
                # Short joins keep the main thread responsive to signals.
                while t.is_alive():
                    t.join(0.2)
        finally:
            self.stop()
            beat.join()
            self.result.returned = self.consumer.shutdown()
            for s, h in previous.items():
                signal.signal(s, h)
        return self.result


class AsyncWorker:
    """:class:`Worker` for coroutine handlers: ``concurrency`` tasks in the running loop,
    each awaiting a reserve (no thread per job), plus a heartbeat task. SIGTERM/SIGINT stop it
    gracefully when the loop runs in the main thread."""

    def __init__(
        self,
        queue: "AsyncQueue",
        name: str,
        handler: Callable[[Job], Awaitable[Any]],
        *,
        concurrency: int = 1,
        heartbeat: Optional[Seconds] = None,
        handle_signals: bool = True,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 100_000:
            raise InvalidArgumentError("invalid concurrency: must be an int between 1 and 100000", "concurrency")
        if not callable(handler):
            raise InvalidArgumentError("invalid handler: must be callable", "handler")
        self.consumer = queue.consumer(name)
        self._handler = handler
        self._concurrency = concurrency
        vis = queue.visibility_timeout
        self._heartbeat = _ms(heartbeat, "heartbeat") / 1000.0 if heartbeat is not None else vis / 3.0
        self._handle_signals = handle_signals
        self._in_flight: Set[str] = set()
        self._stopped = False
        self.result = WorkerResult()

    def stop(self) -> None:
        self._stopped = True
        self.consumer.stop()

    async def _slot(self, max_jobs: Optional[int], deadline: Optional[float]) -> None:
        c = self.consumer
        while not self._stopped and not c.is_stopped:
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    self.stop()
                    return
            job = await c.reserve(wait)
            if job is None:
                continue
            self._in_flight.add(job.receipt)
            n = -1
            try:
                try:
                    await self._handler(job)
                except Exception as e:
                    try:
                        await c.fail(job, _error_text(e))
                        n = self.result._add("failed")
                    except ConflictError:
                        self.result._add("lost")
                else:
                    try:
                        await c.ack(job)
                        n = self.result._add("completed")
                    except ConflictError:
                        self.result._add("lost")
            finally:
                self._in_flight.discard(job.receipt)
            if max_jobs is not None and n >= max_jobs:
                self.stop()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            for r in list(self._in_flight):
                try:
                    await self.consumer.extend(r)
                except Exception:
                    pass  # settled, reclaimed (reported by the ack) or Redis briefly down

    async def run(self, *, max_jobs: Optional[int] = None, timeout: Optional[Seconds] = None) -> WorkerResult:
        deadline = time.monotonic() + _ms(timeout, "timeout") / 1000.0 if timeout is not None else None
        loop = asyncio.get_running_loop()
        installed: List[signal.Signals] = []
        if self._handle_signals and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(s, self.stop)
                    installed.append(s)
                except (NotImplementedError, RuntimeError):
                    pass
        beat = asyncio.ensure_future(self._beat())
        try:
            await asyncio.gather(*(self._slot(max_jobs, deadline) for _ in range(self._concurrency)))
        finally:
            self.stop()
            beat.cancel()
            self.result.returned = await self.consumer.shutdown()
            for s in installed:
                loop.remove_signal_handler(s)
        return self.result


class Queue:
    """A deployment's task queue service (``ck.queue``): enqueue, introspection, dead
    letters, consumers and workers, for any queue name."""

    def __init__(self, native: _native.Queue) -> None:
        self._n: Any = native

    @property
    def backend(self) -> str:
        """``"redis"`` or ``"memory"`` (embedded)."""
        return str(self._n.backend)

    @property
    def visibility_timeout(self) -> float:
        return float(self._n.visibility_timeout)

    def enqueue(
        self,
        queue: str,
        payload: Payload,
        *,
        delay: Optional[Seconds] = None,
        run_at: Union[None, datetime, float, int] = None,
        max_attempts: Optional[int] = None,
        backoff: Optional[BackoffSpec] = None,
        idempotency_key: Optional[str] = None,
        idempotency_ttl: Optional[Seconds] = None,
        priority: Optional[str] = None,
    ) -> str:
        """Stores a job and returns its id (a duplicate ``idempotency_key`` within its window
        returns the first job's id and stores nothing). ``priority``: high, normal, low."""
        o = _options(delay, run_at, max_attempts, backoff, idempotency_key, idempotency_ttl, priority)
        return str(self._n.enqueue(queue, payload, o))

    def enqueue_many(self, queue: str, jobs: Iterable[JobSpec]) -> List[str]:
        """Many jobs in one round trip: each a payload or ``(payload, {"delay": 1, ...})``."""
        return list(self._n.enqueue_many(queue, [_spec(j, i) for i, j in enumerate(jobs)]))

    def stats(self, queue: str) -> Dict[str, Any]:
        """``waiting``, ``in_flight``, ``delayed``, ``dead``, ``oldest_age_ms`` (None: empty)."""
        return dict(self._n.stats(queue))

    def dead_jobs(self, queue: str, limit: int = 100) -> List[Dict[str, Any]]:
        """Dead-lettered jobs, oldest first: id, payload, attempts, last_error, ..."""
        return list(self._n.dead_jobs(queue, limit))

    def redrive(self, queue: str, limit: int = 1000) -> int:
        """Moves dead jobs back to their lanes with fresh attempts; how many moved."""
        return int(self._n.redrive(queue, limit))

    def purge(self, queue: str) -> None:
        """Deletes every job of ``queue`` (waiting, in flight, delayed, dead)."""
        self._n.purge(queue)

    def metrics(self) -> Dict[str, Any]:
        return dict(self._n.metrics())

    def consumer(self, queue: str) -> Consumer:
        return Consumer(self._n.consumer(queue))

    def worker(
        self,
        queue: str,
        handler: Callable[[Job], Any],
        *,
        concurrency: int = 1,
        heartbeat: Optional[Seconds] = None,
        handle_signals: bool = True,
    ) -> Worker:
        return Worker(self, queue, handler, concurrency=concurrency, heartbeat=heartbeat, handle_signals=handle_signals)


class AsyncQueue:
    """The asyncio face of :class:`Queue` (``ck.aio.queue``)."""

    def __init__(self, native: _native.Queue) -> None:
        self._n: Any = native

    @property
    def backend(self) -> str:
        return str(self._n.backend)

    @property
    def visibility_timeout(self) -> float:
        return float(self._n.visibility_timeout)

    async def enqueue(
        self,
        queue: str,
        payload: Payload,
        *,
        delay: Optional[Seconds] = None,
        run_at: Union[None, datetime, float, int] = None,
        max_attempts: Optional[int] = None,
        backoff: Optional[BackoffSpec] = None,
        idempotency_key: Optional[str] = None,
        idempotency_ttl: Optional[Seconds] = None,
        priority: Optional[str] = None,
    ) -> str:
        o = _options(delay, run_at, max_attempts, backoff, idempotency_key, idempotency_ttl, priority)
        return str(await self._n.enqueue_async(queue, payload, o))

    async def enqueue_many(self, queue: str, jobs: Iterable[JobSpec]) -> List[str]:
        return list(await self._n.enqueue_many_async(queue, [_spec(j, i) for i, j in enumerate(jobs)]))

    async def stats(self, queue: str) -> Dict[str, Any]:
        return dict(await self._n.stats_async(queue))

    async def redrive(self, queue: str, limit: int = 1000) -> int:
        return int(await self._n.redrive_async(queue, limit))

    def consumer(self, queue: str) -> AsyncConsumer:
        return AsyncConsumer(self._n.consumer(queue))

    def worker(
        self,
        queue: str,
        handler: Callable[[Job], Awaitable[Any]],
        *,
        concurrency: int = 1,
        heartbeat: Optional[Seconds] = None,
        handle_signals: bool = True,
    ) -> AsyncWorker:
        return AsyncWorker(self, queue, handler, concurrency=concurrency, heartbeat=heartbeat, handle_signals=handle_signals)
