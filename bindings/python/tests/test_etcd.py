"""etcd discovery and locks (issue #17) through the config document alone: the binding has no
etcd logic, the core does it. Runs a private 3-member etcd (scripts/etcd-cluster)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

import clusterkit
from support import wait_until

ROOT = Path(__file__).resolve().parents[3]


def etcdctl(eps: List[str], *args: str) -> str:
    out = subprocess.run(
        ["etcdctl", f"--endpoints={','.join(eps)}", "--command-timeout=5s", *args],
        env={**os.environ, "ETCDCTL_API": "3"},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


@pytest.fixture(scope="module")
def etcd() -> Iterator[List[str]]:
    d = tempfile.mkdtemp(prefix="ck-etcd-py-")
    out = subprocess.run(
        [str(ROOT / "scripts" / "etcd-cluster"), "start", f"{d}/c"],
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        yield out.stdout.strip().split(",")
    finally:
        subprocess.run([str(ROOT / "scripts" / "etcd-cluster"), "stop", f"{d}/c"], check=False)
        os.rmdir(d)


def test_etcd_discovery_and_lock_from_the_config_document(etcd: List[str]) -> None:
    # A node registered the way the core's EtcdRegistry does: JSON under <prefix><id>, on a lease.
    lease = etcdctl(etcd, "lease", "grant", "60").split()[1]
    etcdctl(etcd, "put", f"--lease={lease}", "/py/web/n1", '{"id":"n1","host":"127.0.0.1","port":8001}')
    etcdctl(etcd, "put", "/py/web/junk", "{not json")
    ck = clusterkit.Clusterkit(
        {
            "pools": {
                "web": {
                    "strategy": "round_robin",
                    "discovery": {"etcd": {"endpoints": etcd, "prefix": "/py/web/", "ttl": "2s"}},
                }
            },
            "locks": {"etcd": {"endpoints": etcd, "prefix": "/py/locks/"}},
        }
    )
    web = ck.pool("web")
    wait_until(lambda: len(web) == 1 or None, "n1 discovered", 20)
    assert web.node("n1") is not None and web.node("junk") is None
    with web.pick() as p:
        assert p.node_id == "n1"

    # Locks: the same API as on Redis; the fencing token is etcd's create revision.
    with ck.lock("job", ttl=5) as l1:
        assert l1.is_held and l1.fencing_token > 0
        assert ck.locks.try_acquire("job", 5) is None
        keys = etcdctl(etcd, "get", "--prefix", "/py/locks/", "--keys-only")
        assert "/py/locks/job/" in keys
        assert l1.token not in etcdctl(etcd, "get", "--prefix", "/py/locks/")
        f1 = l1.fencing_token
    assert etcdctl(etcd, "get", "--prefix", "/py/locks/", "--keys-only").strip() == ""
    with ck.locks.acquire("job", 5, wait=5) as l2:
        assert l2.fencing_token > f1

    # The node's lease is revoked (its process died): it leaves the pool.
    etcdctl(etcd, "lease", "revoke", lease)
    wait_until(lambda: len(web) == 0 or None, "n1 gone after its lease", 20)
    ck.close()


def test_bad_etcd_section_names_the_field() -> None:
    with pytest.raises(clusterkit.InvalidArgumentError) as e:
        clusterkit.Clusterkit({"locks": {"etcd": {"endpoints": ["nohost"]}}})
    assert "locks.etcd.endpoints[0]" in str(e.value)
    with pytest.raises(clusterkit.InvalidArgumentError) as e:
        clusterkit.Clusterkit(
            {"locks": {"etcd": {"endpoints": ["127.0.0.1:1"], "user": "u", "password": "s3cr3t-etcd", "password_env": "X"}}}
        )
    assert "password" in str(e.value) and "s3cr3t-etcd" not in str(e.value)
