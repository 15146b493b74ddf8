"""examples/python/app.py runs end to end, embedded and on a private redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import RedisServer

APP = Path(__file__).resolve().parents[3] / "examples" / "python" / "app.py"


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_example_app(backend: str, redis_server: RedisServer) -> None:
    env = dict(os.environ)
    env.pop("REDIS", None)
    if backend == "redis":
        env["REDIS"] = redis_server.address
    r = subprocess.run([sys.executable, str(APP)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "warm-up ran under lock example.warmup" in out
    assert "10 requests, one session (10 items viewed)" in out
    assert "web-2 stopped; next 10 calls served by: web-1x10" in out
    assert "InvalidArgumentError: invalid key" in out
    assert out.rstrip().endswith("done")
    assert ("Redis at" in out) == (backend == "redis")


def test_asgi_example() -> None:
    import importlib.util

    from starlette.testclient import TestClient

    spec = importlib.util.spec_from_file_location("asgi_app", APP.parent / "asgi_app.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with TestClient(mod.app) as c:
        first = c.get("/report").json()
        second = c.get("/report").json()
    assert first["report"] == second["report"] and first["report"].startswith('{"built_under_fence": ')
    assert second["visits"] == first["visits"] + 1
    assert (first["seen_by_this_session"], second["seen_by_this_session"]) == (1, 2)
    assert first["cached"] == {"first": True}
