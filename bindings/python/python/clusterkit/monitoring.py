"""The status page (HTML, rendered by the core) and its JSON twin as a WSGI and an ASGI
application that any app mounts at a path of its choice, plus the Prometheus scrape.

Paths below the mount point: ``/`` (or nothing) the HTML page, ``/json`` its JSON twin,
``/metrics`` Prometheus text (OpenMetrics when the scraper's ``Accept`` asks for
``application/openmetrics-text``). With ``aggregate_dir`` every response adds up the
snapshots other processes published there (:meth:`Clusterkit.publish_metrics`).

Flask::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/ops": status_wsgi_app(ck)})

Starlette::

    Mount("/ops", app=status_asgi_app(ck))

Django: wrap the application in ``wsgi.py`` with the same DispatcherMiddleware (or mount
the ASGI app in ``asgi.py``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterable, List, MutableMapping, Optional, Tuple, Union

from . import _native
from .errors import ClusterkitError, InvalidArgumentError

if TYPE_CHECKING:
    from .deployment import Clusterkit

__all__ = ["StatusPage", "status_wsgi_app", "status_asgi_app"]

StartResponse = Callable[[str, List[Tuple[str, str]]], Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class StatusPage:
    """Renders the status page, its JSON and the scrape for one deployment; the WSGI and
    ASGI applications below answer with it."""

    def __init__(
        self,
        ck: "Clusterkit",
        *,
        title: Optional[str] = None,
        aggregate_dir: Union[None, str, "os.PathLike[str]"] = None,
        max_age: float = 60.0,
    ) -> None:
        self.ck = ck
        self.title = title
        self.aggregate_dir = None if aggregate_dir is None else os.fspath(aggregate_dir)
        self.max_age = max_age

    def render(self, path: str, accept: str = "") -> Tuple[int, str, bytes]:
        """(status code, content type, body) for ``path`` below the mount point."""
        p = path.rstrip("/")
        if p in ("", "/index.html"):
            fmt = "html"
        elif p in ("/json", "/status.json"):
            fmt = "status_json"
        elif p == "/metrics":
            fmt = "openmetrics" if "application/openmetrics-text" in accept else "prometheus"
        else:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        try:
            if self.aggregate_dir is not None:
                text = self.ck.aggregate_metrics_text(self.aggregate_dir, fmt, max_age=self.max_age)
            else:
                text = self.ck.metrics_text(fmt, title=self.title)
        except ClusterkitError as e:
            return 503, "text/plain; charset=utf-8", (str(e) + "\n").encode()
        return 200, str(_native.content_type(fmt)), text.encode()


_REASONS = {200: "200 OK", 404: "404 Not Found", 405: "405 Method Not Allowed", 503: "503 Service Unavailable"}


def status_wsgi_app(
    ck: "Clusterkit",
    *,
    title: Optional[str] = None,
    aggregate_dir: Union[None, str, "os.PathLike[str]"] = None,
    max_age: float = 60.0,
) -> Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI application serving the status page (see the module's doc)."""
    page = StatusPage(ck, title=title, aggregate_dir=aggregate_dir, max_age=max_age)

    def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            code, ctype, body = 405, "text/plain; charset=utf-8", b"method not allowed\n"
        else:
            code, ctype, body = page.render(str(environ.get("PATH_INFO", "")), str(environ.get("HTTP_ACCEPT", "")))
        start_response(
            _REASONS[code],
            [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
        )
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


def status_asgi_app(
    ck: "Clusterkit",
    *,
    title: Optional[str] = None,
    aggregate_dir: Union[None, str, "os.PathLike[str]"] = None,
    max_age: float = 60.0,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI (3.0) application serving the status page (see the module's doc). Under a
    Starlette ``Mount`` the path below the mount point is ``scope["path"]`` minus
    ``scope["root_path"]``."""
    page = StatusPage(ck, title=title, aggregate_dir=aggregate_dir, max_age=max_age)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise InvalidArgumentError(f"invalid scope: the status page serves http, not {scope['type']}", "scope")
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        accept = ""
        for k, v in scope.get("headers", []):
            if bytes(k).lower() == b"accept":
                accept = bytes(v).decode("latin-1")
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            code, ctype, body = 405, "text/plain; charset=utf-8", b"method not allowed\n"
        else:
            code, ctype, body = page.render(path, accept)
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    return app
