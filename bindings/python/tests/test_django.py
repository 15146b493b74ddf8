"""The Django cache backend and session engine inside real Django (settings configured
here, caches and sessions used through Django's own APIs and a test client request cycle).
The cache cases follow Django's own cache test suite (BaseCacheTests)."""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any, Dict, Iterator

import django
import pytest
from django.conf import settings

from conftest import fresh_ns, redis_config
from support import RedisServer

_configured: Dict[str, Any] = {}


@pytest.fixture(scope="module")
def django_env(redis_server: RedisServer) -> Iterator[Dict[str, Any]]:
    if not settings.configured:
        ns = fresh_ns("dj")
        cfg = redis_config(redis_server, ns, sessions={"lock_wait": "300ms"})
        settings.configure(
            DEBUG=True,
            SECRET_KEY="test-only-not-secret",
            ALLOWED_HOSTS=["*"],
            CLUSTERKIT=cfg,
            CACHES={
                "default": {"BACKEND": "clusterkit.django.Cache", "TIMEOUT": 300},
                "prefixed": {
                    "BACKEND": "clusterkit.django.Cache",
                    "KEY_PREFIX": "cacheprefix",
                    "VERSION": 2,
                    "OPTIONS": {"CONFIG": cfg},
                },
                "embedded": {"BACKEND": "clusterkit.django.Cache", "OPTIONS": {"CONFIG": {"cache": {"namespace": ns}}}},
                "keyfunc": {
                    "BACKEND": "clusterkit.django.Cache",
                    "KEY_FUNCTION": lambda key, prefix, version: f"CUSTOM-{prefix}-{version}-{key}",
                },
            },
            SESSION_ENGINE="clusterkit.django",
            INSTALLED_APPS=["django.contrib.sessions"],
            MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
            ROOT_URLCONF=__name__,
        )
        django.setup()
        _configured["cfg"] = cfg
    yield _configured


def _count(request: Any) -> Any:
    from django.http import HttpResponse

    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(str(request.session["n"]))


def _peek(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(str(request.session.get("n")))


def _logout(request: Any) -> Any:
    from django.http import HttpResponse

    request.session.flush()
    return HttpResponse("bye")


def _urls() -> Any:
    from django.urls import path

    return [path("count", _count), path("peek", _peek), path("logout", _logout)]


def __getattr__(name: str) -> Any:  # ROOT_URLCONF=__name__: urlpatterns built lazily
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)


@pytest.fixture(params=["default", "embedded"])
def cache(request: Any, django_env: Dict[str, Any]) -> Any:
    from django.core.cache import caches

    c = caches[request.param]
    c.clear()
    return c


def test_simple_add_get_delete(cache: Any) -> None:
    cache.set("key", "value")
    assert cache.get("key") == "value"
    assert cache.add("addkey1", "value")
    assert not cache.add("addkey1", "newvalue")
    assert cache.get("addkey1") == "value"
    assert cache.get("does_not_exist") is None
    assert cache.get("does_not_exist", "default") == "default"
    assert cache.delete("key") is True
    assert cache.delete("key") is False
    assert cache.get("key") is None


def test_data_types_and_binary(cache: Any) -> None:
    stuff = {"string": "this is a string", "int": 42, "bool": True, "list": [1, 2, 3, 4],
             "tuple": (1, 2, 3, 4), "dict": {"A": 1, "B": 2}, "none": None, "float": 1.5,
             "bytes": b"\x00\xff", "unicode": "Iñtërnâtiônàlizætiøn"}
    cache.set("stuff", stuff)
    assert cache.get("stuff") == stuff
    cache.set("false", False)
    assert cache.get("false") is False
    cache.set("zero", 0)
    assert cache.get("zero") == 0
    cache.set("ключ-юникод", "значение")
    assert cache.get("ключ-юникод") == "значение"


def test_get_many_set_many_delete_many(cache: Any) -> None:
    assert cache.set_many({"a": "a", "b": "b", "c": "c"}) == []
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c"}
    assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
    assert cache.get_many([]) == {}
    cache.delete_many(["a", "b"])
    assert cache.get_many(["a", "b", "c"]) == {"c": "c"}
    cache.delete_many([])


def test_has_key_in_incr_decr(cache: Any) -> None:
    cache.set("hello1", "goodbye1")
    assert cache.has_key("hello1") and "hello1" in cache
    assert not cache.has_key("goodbye1")
    cache.set("answer", 41)
    assert cache.incr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.decr("answer", 10) == 42
    assert cache.decr("answer") == 41
    with pytest.raises(ValueError):
        cache.incr("does_not_exist")
    with pytest.raises(ValueError):
        cache.decr("does_not_exist")
    cache.set("notint", "x")
    with pytest.raises(ValueError):
        cache.incr("notint")


def test_timeouts(cache: Any) -> None:
    cache.set("expire1", "v", 1)
    cache.set("forever", "v", None)
    cache.set("zero", "v", 0)
    cache.set("negative", "v", -1)
    cache.set("float", "v", 1.5)
    assert cache.get("zero") is None and cache.get("negative") is None
    assert cache.add("zero_add", "v", 0) is True  # "added" and expired at once (Django's semantics)
    assert cache.get("zero_add") is None
    assert cache.get("float") == "v"
    cache.set("long", "v", 60 * 60 * 24 * 30 + 1)
    assert cache.get("long") == "v"
    assert cache._cache.ttl(cache.make_key("forever")) == float("inf")
    assert cache.touch("expire1", None)
    assert cache._cache.ttl(cache.make_key("expire1")) == float("inf")
    assert cache.touch("forever", 1)
    assert not cache.touch("nope")
    time.sleep(1.6)
    assert cache.get("forever") is None and cache.get("float") is None
    assert cache.get("expire1") == "v"


def test_versions_prefix_and_key_functions(django_env: Dict[str, Any]) -> None:
    from django.core.cache import caches

    c = caches["default"]
    c.set("answer1", 42, version=2)
    assert c.get("answer1") is None
    assert c.get("answer1", version=2) == 42
    assert c.incr_version("answer1", version=2) == 3
    assert c.get("answer1", version=3) == 42 and c.get("answer1", version=2) is None
    assert c.decr_version("answer1", version=3) == 2
    p = caches["prefixed"]
    p.set("k", "in-prefixed")
    assert p.get("k") == "in-prefixed" and c.get("k") is None
    assert p.get("k", version=2) == "in-prefixed" and p.get("k", version=1) is None
    assert c._cache.get("cacheprefix:2:k") is not None
    kf = caches["keyfunc"]
    kf.set("k", "v")
    assert c._cache.get("CUSTOM--1-k") is not None


def test_key_validation_warnings(cache: Any) -> None:
    from django.core.cache import CacheKeyWarning

    for key in ("key with spaces", "k" * 251, "key\x00ctrl"):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cache.set(key, "v")
        assert any(issubclass(x.category, CacheKeyWarning) for x in w), key


def test_get_or_set_and_close(cache: Any) -> None:
    assert cache.get_or_set("gos", "default") == "default"
    assert cache.get_or_set("gos", "other") == "default"
    assert cache.get_or_set("gos_callable", lambda: "computed") == "computed"
    cache.close()
    assert cache.get("gos") == "default", "close() keeps the shared deployment working"


def test_async_methods(cache: Any) -> None:
    async def main() -> None:
        await cache.aset("ak", "av")
        assert await cache.aget("ak") == "av"
        assert await cache.aadd("ak", "x") is False
        assert await cache.aadd("ak2", "x") is True
        assert await cache.ahas_key("ak2")
        await cache.aset_many({"am1": 1, "am2": 2})
        assert await cache.aget_many(["am1", "am2", "nope"]) == {"am1": 1, "am2": 2}
        assert await cache.aincr("am1", 5) == 6
        assert await cache.adecr("am1") == 5
        with pytest.raises(ValueError):
            await cache.aincr("nope")
        assert await cache.atouch("ak", 100)
        await cache.adelete_many(["am1", "am2"])
        assert await cache.adelete("ak") is True
        assert await cache.aget_or_set("agos", "d") == "d"
        await cache.aclear()
        assert await cache.aget("ak2") is None
        await cache.aclose()

    asyncio.run(main())


def test_session_engine_request_cycle(django_env: Dict[str, Any]) -> None:
    from django.test import Client

    c = Client()
    assert c.get("/count").content == b"1"
    assert c.get("/count").content == b"2"
    sid = c.cookies[settings.SESSION_COOKIE_NAME].value
    # The session lives in clusterkit's store, readable through the core API.
    import clusterkit

    ck = clusterkit.Clusterkit.shared(django_env["cfg"])
    s = ck.sessions.load(sid)
    assert s is not None and s.get("n") == b"2"
    other = Client()
    assert other.get("/peek").content == b"None"
    assert c.get("/peek").content == b"2"
    c.get("/logout")
    assert ck.sessions.load(sid) is None


def test_session_store_api(django_env: Dict[str, Any]) -> None:
    from clusterkit.django import SessionStore

    s = SessionStore()
    s["a"] = 1
    s["b"] = {"x": [1, 2]}
    s.save()
    key = s.session_key
    assert key and s.exists(key)
    s2 = SessionStore(key)
    assert s2["a"] == 1 and s2["b"] == {"x": [1, 2]}
    s3 = SessionStore(key)
    s2["a"] = 2
    s3["c"] = 3
    s2.save()
    s3.save()
    final = SessionStore(key)
    assert final["a"] == 2 and final["c"] == 3, "delta saves keep both requests' writes"
    final.cycle_key()
    assert final.session_key != key and not SessionStore().exists(key)
    assert SessionStore(final.session_key)["a"] == 2
    final.delete()
    assert not final.exists(final.session_key)
    assert SessionStore("bogus-key").load() == {}


def test_session_engine_optional_locking(django_env: Dict[str, Any]) -> None:
    from django.test import override_settings

    import clusterkit
    from clusterkit.django import SessionStore

    s = SessionStore()
    s["n"] = 1
    s.save()
    key = s.session_key
    with override_settings(CLUSTERKIT_SESSION_LOCK=True):
        first = SessionStore(key)
        assert first["n"] == 1  # loads and holds the session's lock
        second = SessionStore(key)
        with pytest.raises(clusterkit.TimeoutError):
            second.load()
        first["n"] = 2
        first.save()  # writes and gives the lock back
        third = SessionStore(key)
        assert third["n"] == 2
        third.save()


def test_cache_location_is_a_config_file(django_env: Dict[str, Any], tmp_path: Any) -> None:
    from clusterkit.django import Cache

    f = tmp_path / "clusterkit.toml"
    f.write_text('[cache]\nnamespace = "fromfile"\n')
    c = Cache(str(f), {"TIMEOUT": 60})
    assert c._cache.namespace == "fromfile"
    c.set("k", [1, 2])
    assert c.get("k") == [1, 2]
    t = c._cache.ttl(c.make_key("k"))
    assert t is not None and 58 < t <= 60, "TIMEOUT is the default timeout"
