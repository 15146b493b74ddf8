"""Flask integration: server-side sessions on clusterkit.

::

    from clusterkit.flask import ClusterkitSessionInterface
    app.session_interface = ClusterkitSessionInterface(clusterkit.Clusterkit.shared(CONFIG))

Each top-level key of ``flask.session`` is one field (JSON), written only when it changed
(delta saves); the cookie carries only the session id (HttpOnly, the app's cookie settings).
``lock=True`` holds the session's lock for the request (one request per session at a time).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from .deployment import Clusterkit
from .session import Session as _Session

__all__ = ["ClusterkitSessionInterface", "ClusterkitSession"]


class ClusterkitSession(dict, SessionMixin):  # type: ignore[type-arg]
    """``flask.session``: a dict whose changes are saved at the end of the request."""

    def __init__(self, native: Optional[_Session], data: Dict[str, Any], loaded: Dict[str, bytes]) -> None:
        super().__init__(data)
        self.native = native
        self.loaded = loaded
        self.modified = False
        self.new = native is None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.modified = True

    def pop(self, key: str, *default: Any) -> Any:
        self.modified = True
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self.modified = True

    def update(self, *a: Any, **k: Any) -> None:
        super().update(*a, **k)
        self.modified = True

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.modified = True
        return super().setdefault(key, default)


def _dumps(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode()


class ClusterkitSessionInterface(SessionInterface):
    def __init__(self, ck: Clusterkit, lock: bool = False) -> None:
        self.ck = ck
        self.lock = lock

    def open_session(self, app: Flask, request: Request) -> ClusterkitSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        native = self.ck.sessions.load(sid, lock=self.lock) if sid else None
        if native is None:
            return ClusterkitSession(None, {}, {})
        loaded = {k: v for k in native.keys() if (v := native.get(k)) is not None}
        data: Dict[str, Any] = {}
        for k, raw in loaded.items():
            try:
                data[k] = json.loads(raw)
            except ValueError:
                continue
        return ClusterkitSession(native, data, loaded)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ClusterkitSession)
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        native = session.native
        if not session:
            if native is not None:
                self.ck.sessions.destroy(native.id)
                response.delete_cookie(name, domain=domain, path=path)
            return
        if native is None:
            native = self.ck.sessions.create()
        current = {k: _dumps(v) for k, v in session.items()}
        for k, raw in current.items():
            if session.loaded.get(k) != raw:
                native.set(k, raw)
        for k in session.loaded:
            if k not in current:
                native.remove(k)
        if native.is_modified or native.is_new or native.is_locked:
            native.save()
        response.set_cookie(
            name,
            native.id,
            expires=self.get_expiration_time(app, session),
            httponly=self.get_cookie_httponly(app),
            domain=domain,
            path=path,
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
        )
