"""Interop with the PHP package: a cache value, a held lock (with its fencing token) and a
session written through PHP are seen identically from Python, and the reverse — one config
document, the same keys, one redis-server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

import clusterkit
from conftest import fresh_ns, redis_config
from support import RedisServer

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent


@pytest.fixture(scope="module")
def php_env() -> Dict[str, str]:
    php = shutil.which("php")
    assert php, "php is missing (apt-get install php-cli): the interop test needs it"
    lib = os.environ.get("CLUSTERKIT_LIB")
    if not lib:
        built = subprocess.run([str(ROOT / "scripts" / "stage-lib")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert built.returncode == 0, f"scripts/stage-lib failed:\n{built.stderr[-4000:]}"
        prefix = built.stdout.strip()
        lib = f"{prefix}/lib/libclusterkit.so.1"
    assert os.path.isfile(lib), f"CLUSTERKIT_LIB={lib} does not exist"
    return {"php": php, "lib": lib}


def php(env: Dict[str, str], cfg: Dict[str, Any], *args: str, **kw: Any) -> "subprocess.Popen[str]":
    e = dict(os.environ, CLUSTERKIT_LIB=env["lib"], CK_CONFIG=json.dumps(cfg))
    return subprocess.Popen([env["php"], "-d", "ffi.enable=1", str(HERE / "interop.php"), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, **kw)


def test_php_and_python_share_cache_locks_and_sessions(php_env: Dict[str, str], redis_server: RedisServer) -> None:
    cfg = redis_config(redis_server, fresh_ns("interop"))
    ck = clusterkit.Clusterkit(cfg)

    # PHP writes; Python reads while PHP still holds the lock.
    p = php(php_env, cfg, "write")
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line, p.stderr.read() if p.stderr else ""
        wrote = json.loads(line)
        assert ck.cache.get("interop:php") == b"from-php\x00\xff\xfe bytes"
        s = ck.sessions.load(wrote["session"])
        assert s is not None
        assert s.get("user") == b"ada" and s.get("cart") == b"[1,2,3]"
        assert sorted(s.keys()) == ["cart", "user"]
        assert ck.locks.try_acquire("interop-php-lock", 5) is None, "PHP's lock is held as seen from Python"
        out, err = p.communicate("release\n", timeout=30)
        assert p.returncode == 0, err
        assert out.strip() == "released"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with ck.lock("interop-php-lock", ttl=5, wait=5) as lk:
        assert lk.fencing_token > wrote["fence"], "the fence counter is shared"

    # Python writes; PHP reads while Python holds the lock.
    ck.cache.set("interop:py", b"from-python\x00\x01")
    s = ck.sessions.create()
    s["who"] = b"grace"
    s["n"] = b"42"
    s.save()
    held = ck.lock("interop-py-lock", ttl=30)
    r = php(php_env, cfg, "read", s.id)
    out, err = r.communicate(timeout=60)
    assert r.returncode == 0, err
    seen = json.loads(out)
    assert bytes.fromhex(seen["value"]) == b"from-python\x00\x01"
    assert {k: bytes.fromhex(v) for k, v in seen["fields"].items()} == {"who": b"grace", "n": b"42"}
    assert seen["held_by_other"] is True, "Python's lock is held as seen from PHP"
    fence = held.fencing_token
    held.release()
    a = php(php_env, cfg, "acquire")
    out, err = a.communicate(timeout=60)
    assert a.returncode == 0, err
    assert json.loads(out)["fence"] > fence
