"""Starlette / FastAPI integration: an ASGI session middleware on clusterkit's asyncio face.

::

    from clusterkit.starlette import SessionMiddleware
    app.add_middleware(SessionMiddleware, ck=clusterkit.Clusterkit.shared(CONFIG))

``request.session`` is a dict; each top-level key is one field (JSON), written at the end of
the request only when it changed (delta saves). The cookie carries only the session id.
"""

from __future__ import annotations

import json
from typing import Any, Dict, MutableMapping, Optional

from .deployment import Clusterkit
from .session import AsyncSession

__all__ = ["SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def _dumps(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode()


class SessionMiddleware:
    def __init__(
        self,
        app: Any,
        ck: Clusterkit,
        cookie_name: str = "session",
        max_age: Optional[int] = 14 * 24 * 3600,
        path: str = "/",
        same_site: str = "lax",
        https_only: bool = False,
        lock: bool = False,
    ) -> None:
        self.app = app
        self.ck = ck
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.path = path
        self.same_site = same_site
        self.https_only = https_only
        self.lock = lock

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import MutableHeaders
        from starlette.requests import HTTPConnection

        conn = HTTPConnection(scope)
        sid = conn.cookies.get(self.cookie_name)
        sessions = self.ck.aio.sessions
        native: Optional[AsyncSession] = await sessions.load(sid, lock=self.lock) if sid else None
        loaded: Dict[str, bytes] = {}
        data: Dict[str, Any] = {}
        if native is not None:
            loaded = {k: v for k in native.keys() if (v := native.get(k)) is not None}
            for k, raw in loaded.items():
                try:
                    data[k] = json.loads(raw)
                except ValueError:
                    continue
        scope["session"] = data

        async def send_wrapper(message: Message) -> None:
            nonlocal native
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                session: Dict[str, Any] = scope["session"]
                if session:
                    if native is None:
                        native = sessions.create()
                    current = {k: _dumps(v) for k, v in session.items()}
                    for k, raw in current.items():
                        if loaded.get(k) != raw:
                            native.set(k, raw)
                    for k in loaded:
                        if k not in current:
                            native.remove(k)
                    if native.is_modified or native.is_new or native.is_locked:
                        await native.save()
                    cookie = f"{self.cookie_name}={native.id}; path={self.path}; HttpOnly; SameSite={self.same_site}"
                    if self.max_age:
                        cookie += f"; Max-Age={self.max_age}"
                    if self.https_only:
                        cookie += "; Secure"
                    headers.append("Set-Cookie", cookie)
                elif native is not None:
                    await sessions.destroy(native.id)
                    headers.append(
                        "Set-Cookie",
                        f"{self.cookie_name}=null; path={self.path}; expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly",
                    )
            await send(message)

        await self.app(scope, receive, send_wrapper)
