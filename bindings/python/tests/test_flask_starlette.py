"""The Flask SessionInterface and the Starlette/FastAPI session middleware inside the real
frameworks (their test clients drive full request cycles)."""

from __future__ import annotations

import threading
from typing import Any, Dict

import clusterkit
from conftest import fresh_ns, redis_config
from support import RedisServer


def test_flask_sessions(redis_server: RedisServer) -> None:
    from flask import Flask, session

    from clusterkit.flask import ClusterkitSessionInterface

    ck = clusterkit.Clusterkit(redis_config(redis_server, fresh_ns("fl")))
    app = Flask("ckflask")
    app.session_interface = ClusterkitSessionInterface(ck)

    @app.route("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.route("/peek")
    def peek() -> str:
        return str(session.get("n"))

    @app.route("/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    c = app.test_client()
    assert c.get("/count").data == b"1"
    assert c.get("/count").data == b"2"
    cookie = c.get_cookie("session")
    assert cookie is not None
    sid = cookie.value
    s = ck.sessions.load(sid)
    assert s is not None and s.get("n") == b"2"
    assert app.test_client().get("/peek").data == b"None"
    assert c.get("/peek").data == b"2"
    c.get("/logout")
    assert ck.sessions.load(sid) is None


def test_flask_concurrent_requests_keep_both_writes(redis_server: RedisServer) -> None:
    from flask import Flask, request, session

    from clusterkit.flask import ClusterkitSessionInterface

    ck = clusterkit.Clusterkit(redis_config(redis_server, fresh_ns("fl")))
    app = Flask("ckflask2")
    app.session_interface = ClusterkitSessionInterface(ck, lock=True)

    @app.route("/set/<name>")
    def set_(name: str) -> str:
        session[name] = request.args.get("v", "1")
        return "ok"

    @app.route("/all")
    def all_() -> Dict[str, Any]:
        return dict(session)

    c = app.test_client()
    c.get("/set/first")
    cookie = c.get_cookie("session")
    assert cookie is not None

    def hit(name: str) -> None:
        cl = app.test_client()
        cl.set_cookie("session", cookie.value)
        for i in range(5):
            assert cl.get(f"/set/{name}?v={i}").status_code == 200

    ts = [threading.Thread(target=hit, args=(f"k{i}",)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    got = c.get("/all").json
    assert got == {"first": "1", "k0": "4", "k1": "4", "k2": "4", "k3": "4"}


def test_starlette_session_middleware(redis_server: RedisServer) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from clusterkit.starlette import SessionMiddleware

    ck = clusterkit.Clusterkit(redis_config(redis_server, fresh_ns("st")))

    async def count(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        # The async face works inside the app's loop too.
        await ck.aio.cache.incr("visits")
        return PlainTextResponse(str(request.session["n"]))

    async def peek(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("n")))

    async def logout(request: Request) -> PlainTextResponse:
        request.session.clear()
        return PlainTextResponse("bye")

    app = Starlette(routes=[Route("/count", count), Route("/peek", peek), Route("/logout", logout)])
    app.add_middleware(SessionMiddleware, ck=ck)
    with TestClient(app) as c:
        assert c.get("/count").text == "1"
        assert c.get("/count").text == "2"
        sid = c.cookies.get("session")
        assert sid
        s = ck.sessions.load(sid)
        assert s is not None and s.get("n") == b"2"
        assert c.get("/peek").text == "2"
        with TestClient(app) as other:
            assert other.get("/peek").text == "None"
        c.get("/logout")
        assert ck.sessions.load(sid) is None
    assert ck.cache.get("visits") == b"2"
