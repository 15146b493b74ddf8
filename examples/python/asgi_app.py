"""The same deployment from an ASGI app (Starlette; FastAPI mounts it the same way), on
clusterkit's asyncio face: awaited cache calls, an async lock, server-side sessions.

    pip install ./bindings/python starlette uvicorn
    uvicorn --workers 2 examples.python.asgi_app:app     # REDIS=127.0.0.1:6379 to share one Redis
"""

from __future__ import annotations

import os
from typing import Any, Dict

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import clusterkit
from clusterkit.starlette import SessionMiddleware

config: Dict[str, Any] = {"cache": {"namespace": "asgi-example"}}
if os.environ.get("REDIS"):
    config["cache"]["redis"] = os.environ["REDIS"]
ck = clusterkit.Clusterkit.shared(config)
cache = ck.aio.cache.typed(clusterkit.JsonSerializer())


async def report(request: Request) -> JSONResponse:
    async def build() -> bytes:
        # Runs once per key at a time, in this loop; concurrent requests wait for it.
        async with ck.aio.lock("report.build", ttl=10, wait=5) as lock:
            return b'{"built_under_fence": %d}' % lock.fencing_token

    raw = await ck.aio.cache.get_or_compute("report", 60, build)
    visits = await ck.aio.cache.incr("visits")
    request.session["seen"] = int(request.session.get("seen", 0)) + 1
    return JSONResponse({"report": raw.decode(), "visits": visits, "seen_by_this_session": request.session["seen"],
                         "cached": await cache.get("report-meta", {"first": True})})


app = Starlette(routes=[Route("/report", report)])
app.add_middleware(SessionMiddleware, ck=ck)
