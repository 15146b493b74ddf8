"""Helpers of the native asyncio bridge (called from the core's runtime threads)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from typing import Any, Callable


def _complete(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    # Runs in the loop (call_soon_threadsafe). A cancelled future takes no result.
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _call(fn: Callable[[], Any]) -> Any:
    r = fn()
    if inspect.isawaitable(r):
        r = await r
    return r


def _compute(fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> "concurrent.futures.Future[Any]":
    # get_or_compute's miss in the async face: the function (or coroutine) runs in the
    # caller's loop; the core waits for the concurrent future.
    return asyncio.run_coroutine_threadsafe(_call(fn), loop)
