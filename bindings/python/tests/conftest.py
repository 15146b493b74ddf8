"""Shared fixtures: one private redis-server for the session, deployments on the embedded
and the Redis backends (each test gets its own namespace, so tests never see each other's
keys)."""

from __future__ import annotations

import itertools
import os
import sys
from typing import Any, Dict, Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import clusterkit  # noqa: E402
from support import RedisServer  # noqa: E402

_ns = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    try:
        yield r
    finally:
        r.stop()


def redis_config(server: RedisServer, ns: str, **extra: Any) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {
        "pools": {"locks": {"nodes": [{"id": "r1", "host": "127.0.0.1", "port": server.port}]}},
        "cache": {"redis": server.address, "namespace": ns},
        "locks": {"pool": "locks"},
    }
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def fresh_ns(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}x{next(_ns)}"


@pytest.fixture(params=["embedded", "redis"])
def ck(request: Any) -> Iterator[clusterkit.Clusterkit]:
    """A deployment on each backend."""
    if request.param == "embedded":
        c = clusterkit.Clusterkit({"cache": {"namespace": fresh_ns()}})
    else:
        server = request.getfixturevalue("redis_server")
        c = clusterkit.Clusterkit(redis_config(server, fresh_ns()))
    yield c
    c.close()


@pytest.fixture
def ck_redis(redis_server: RedisServer) -> Iterator[clusterkit.Clusterkit]:
    c = clusterkit.Clusterkit(redis_config(redis_server, fresh_ns()))
    yield c
    c.close()
