/*
 * Redis-backed deployments, against the private redis-server processes tests/c/run starts:
 * the cache sharded (ketama) over two servers, Redlock over three masters, sessions on the
 * cache's servers; plus one-server caches and locks, namespaces, shared deployments, and
 * what happens when servers are missing. Never skipped: without the servers it fails.
 */
#include "ck_test.h"

#include <unistd.h>

static ck_deployment *build(const char *config) {
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(config, &dep));
    if (dep == NULL) fprintf(stderr, "  cannot build a deployment from:\n%s\n", config);
    return dep;
}

/* Keys written through the sharded cache are really spread over both servers: a one-server
 * cache with the same namespace on each server sees a part of them, together all. */
static void check_sharding(ck_deployment *sharded, const int cache[2], const char *ns) {
    char cfg[512];
    ck_deployment *one[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        snprintf(cfg, sizeof cfg, "[cache]\nredis = \"127.0.0.1:%d\"\nnamespace = \"%s\"\ntimeout = \"2s\"\n",
                 cache[i], ns);
        one[i] = build(cfg);
    }
    if (one[0] == NULL || one[1] == NULL) goto out;
    int on[2] = {0, 0};
    for (int k = 0; k < 30; k++) {
        char key[32];
        snprintf(key, sizeof key, "shard:%d", k);
        CHECK_OK(ck_cache_set(sharded, KEY(key), KEY("x"), 60000));
        for (int i = 0; i < 2; i++) {
            bool found = false;
            CHECK_OK(ck_cache_has(one[i], KEY(key), &found));
            on[i] += found;
        }
    }
    CHECK(on[0] > 0 && on[1] > 0);
    CHECK(on[0] + on[1] == 30);
out:
    ck_deployment_free(one[0]);
    ck_deployment_free(one[1]);
}

/* Application-level errors (a non-integer increment, a busy session lock, a missing
 * session) are answers, not node failures: both cache shards must still be healthy, or
 * their keys stop being served. */
static void check_cache_pool(ck_deployment *d, const char *after) {
    ck_cluster *c = NULL;
    CHECK_OK(ck_deployment_cluster(d, "cache", &c));
    size_t healthy = ck_cluster_healthy_count(c);
    CHECK(healthy == 2);
    if (healthy != 2) {
        ck_buf *json = NULL;
        ck_cluster_nodes(c, &json);
        fprintf(stderr, "  after %s a cache shard is out: %.*s\n", after, (int)ck_buf_len(json),
                (const char *)ck_buf_data(json));
        ck_buf_free(json);
    }
    ck_cluster_free(c);
}

void test_redis(void) {
    int cache[2], locks[3], dead;
    if (!redis_ports(cache, locks, &dead)) return;
    char ns[64], ns2[64], cfg[4096], cfg2[4096];
    snprintf(ns, sizeof ns, "ctest-redis-%d", (int)getpid());
    snprintf(ns2, sizeof ns2, "ctest-redis-%d-b", (int)getpid());
    redis_config(cfg, sizeof cfg, ns);
    redis_config(cfg2, sizeof cfg2, ns2);
    ck_deployment *dep = build(cfg);
    ck_deployment *other = build(cfg); /* same servers, as another process would be */
    ck_deployment *dep2 = build(cfg2); /* same servers, another namespace */
    if (dep == NULL || other == NULL || dep2 == NULL) goto out;

    /* A fresh pair of deployments per suite, so that a failure in one suite (a shard
     * wrongly taken out, say) does not spill into the next. */
    ck_context = "redis cache";
    cache_suite(dep);
    check_cache_pool(dep, "the cache suite");
    ck_deployment_free(dep);
    dep = build(cfg);
    if (dep == NULL) goto out;
    ck_context = "redis reader";
    reader_suite(dep);
    check_cache_pool(dep, "the reader suite");
    ck_context = "redlock";
    lock_suite(dep);
    ck_deployment_free(dep);
    dep = build(cfg);
    if (dep == NULL) goto out;
    ck_context = "redis sessions";
    session_suite(dep, other);
    check_cache_pool(dep, "the session suite");
    check_cache_pool(other, "the session suite (second deployment)");
    {
        char short_lock[512];
        snprintf(short_lock, sizeof short_lock,
                 "[cache]\nredis = \"127.0.0.1:%d\"\nnamespace = \"%s-ll\"\ntimeout = \"2s\"\n"
                 "[sessions]\nlock_ttl = \"150ms\"\nlock_wait = \"100ms\"\n",
                 cache[1], ns);
        ck_deployment *d = build(short_lock);
        if (d) session_lock_lost_suite(d);
        ck_deployment_free(d);
    }
    ck_deployment_free(dep);
    ck_deployment_free(other);
    dep = build(cfg);
    other = build(cfg);
    if (dep == NULL || other == NULL) goto out;

    ck_context = "redis across deployments";
    /* Another deployment on the same servers sees the same data, locks and sessions. */
    CHECK_OK(ck_cache_set(dep, KEY("x:shared"), KEY("written by dep"), 60000));
    ck_buf *buf = NULL;
    CHECK_OK(ck_cache_get(other, KEY("x:shared"), &buf));
    CHECK(buf_is(buf, "written by dep"));
    ck_buf_free(buf);
    ck_lock *held = NULL, *l = SENTINEL(ck_lock);
    CHECK_OK(ck_lock_acquire(dep, "x:lock", 10000, 0, &held));
    CHECK_ERR(ck_lock_acquire(other, "x:lock", 10000, 0, &l), CK_CONFLICT, "x:lock");
    CHECK(l == SENTINEL(ck_lock));
    if (held) CHECK_OK(ck_lock_release(held));
    l = NULL;
    CHECK_OK(ck_lock_acquire(other, "x:lock", 10000, 0, &l));
    CHECK(held && l && ck_lock_fencing_token(l) > ck_lock_fencing_token(held));
    if (l) CHECK_OK(ck_lock_release(l));
    ck_lock_free(l);
    ck_lock_free(held);
    /* Namespaces: clear removes only this deployment's namespace. */
    CHECK_OK(ck_cache_set(dep, KEY("x:ns"), KEY("one"), 60000));
    CHECK_OK(ck_cache_set(dep2, KEY("x:ns"), KEY("two"), 60000));
    buf = NULL;
    CHECK_OK(ck_cache_get(dep2, KEY("x:ns"), &buf));
    CHECK(buf_is(buf, "two"));
    ck_buf_free(buf);
    uint64_t deleted = 0;
    CHECK_OK(ck_cache_clear(dep, &deleted));
    CHECK(deleted >= 2);
    bool found = true;
    CHECK_OK(ck_cache_has(other, KEY("x:ns"), &found));
    CHECK(found == false);
    buf = NULL;
    CHECK_OK(ck_cache_get(dep2, KEY("x:ns"), &buf));
    CHECK(buf_is(buf, "two"));
    ck_buf_free(buf);
    check_sharding(dep, cache, ns);
    CHECK_OK(ck_cache_clear(dep, NULL));
    CHECK_OK(ck_cache_clear(dep2, NULL));

    /* Metrics name the cache's namespace and count its traffic. */
    ck_buf *json = NULL;
    CHECK_OK(ck_deployment_metrics(dep, &json));
    CHECK(buf_has(json, ns));
    CHECK(buf_has(json, "\"cache\""));
    CHECK(buf_has(json, "\"locks\""));
    ck_buf_free(json);

    ck_context = "redis threads";
    threads_suite(dep, 6, 6);

    ck_context = "redis shared";
    /* A shared Redis-backed deployment: two handles, one deployment. */
    {
        ck_deployment *s1 = NULL, *s2 = NULL;
        CHECK_OK(ck_deployment_shared(cfg, &s1));
        CHECK_OK(ck_deployment_shared(cfg, &s2));
        if (s1 && s2) {
            CHECK_OK(ck_cache_set(s1, KEY("x:via-shared"), KEY("s"), 60000));
            buf = NULL;
            CHECK_OK(ck_cache_get(s2, KEY("x:via-shared"), &buf));
            CHECK(buf_is(buf, "s"));
            ck_buf_free(buf);
            CHECK_OK(ck_cache_delete(s2, KEY("x:via-shared"), NULL));
        }
        ck_deployment_free(s1);
        ck_deployment_free(s2);
    }

    ck_context = "one redis";
    /* One Redis server for the cache, one for the locks (its fence assigned in one script). */
    {
        char one[1024];
        snprintf(one, sizeof one,
                 "[pools.lock1]\nstrategy = \"round_robin\"\n"
                 "nodes = [ { id = \"l1\", host = \"127.0.0.1\", port = %d } ]\n"
                 "[cache]\nredis = \"127.0.0.1:%d\"\nnamespace = \"%s-one\"\ntimeout = \"2s\"\n"
                 "[locks]\npool = \"lock1\"\n[sessions]\nlock_wait = \"200ms\"\n",
                 locks[0], cache[0], ns);
        ck_deployment *d = build(one);
        ck_deployment *d_other = build(one);
        if (d && d_other) {
            CHECK_OK(ck_cache_set(d, KEY("one:k"), KEY("v"), 0));
            buf = NULL;
            CHECK_OK(ck_cache_get(d_other, KEY("one:k"), &buf));
            CHECK(buf_is(buf, "v"));
            ck_buf_free(buf);
            int64_t n = 0;
            CHECK_OK(ck_cache_increment(d, KEY("one:n"), 3, &n));
            CHECK(n == 3);
            CHECK_OK(ck_cache_set(d, KEY("one:word"), KEY("abc"), 0));
            CHECK_ST(ck_cache_increment(d, KEY("one:word"), 1, &n), CK_BACKEND);
            CHECK(n == 3);
            ck_lock *a = NULL, *b = SENTINEL(ck_lock);
            CHECK_OK(ck_lock_acquire(d, "one:lock", 5000, 0, &a));
            CHECK_ST(ck_lock_acquire(d_other, "one:lock", 5000, 0, &b), CK_CONFLICT);
            CHECK(b == SENTINEL(ck_lock));
            uint64_t f = ck_lock_fencing_token(a);
            CHECK(a && f > 0);
            ck_lock_free(a); /* released in the background */
            b = NULL;
            CHECK_OK(ck_lock_acquire(d_other, "one:lock", 5000, 5000, &b));
            CHECK(b && ck_lock_fencing_token(b) > f);
            if (b) CHECK_OK(ck_lock_release(b));
            ck_lock_free(b);
            ck_session *s = NULL;
            CHECK_OK(ck_session_create(d, &s));
            if (s) {
                CHECK_OK(ck_session_set(s, "k", KEY("v")));
                CHECK_OK(ck_session_save(d, s));
                ck_session *t = NULL;
                CHECK_OK(ck_session_load(d_other, (const uint8_t *)ck_session_id(s), 32, true, &t));
                ck_session *u = SENTINEL(ck_session);
                CHECK_ST(ck_session_load(d, (const uint8_t *)ck_session_id(s), 32, true, &u), CK_TIMEOUT);
                CHECK(u == SENTINEL(ck_session));
                if (t) CHECK_OK(ck_session_save(d_other, t));
                ck_session_free(t);
                CHECK_OK(ck_session_destroy(d, (const uint8_t *)ck_session_id(s), 32, NULL));
                ck_session_free(s);
            }
            CHECK_OK(ck_cache_clear(d, NULL));
        }
        ck_deployment_free(d);
        ck_deployment_free(d_other);
    }

    ck_context = "redis down";
    /* Servers that are not there: the cache reports it, Redlock needs a majority. */
    {
        char down[1024];
        snprintf(down, sizeof down,
                 "[cache]\nredis = \"127.0.0.1:%d\"\nnamespace = \"down\"\ntimeout = \"200ms\"\n", dead);
        ck_deployment *d = build(down);
        if (d) {
            uint64_t t0 = now_ms();
            buf = SENTINEL(ck_buf);
            ck_status st = ck_cache_get(d, KEY("k"), &buf);
            CHECK(st == CK_UNAVAILABLE || st == CK_TIMEOUT);
            CHECK(ck_last_error()[0] != '\0');
            CHECK(buf == SENTINEL(ck_buf));
            st = ck_cache_set(d, KEY("k"), KEY("v"), 0);
            CHECK(st == CK_UNAVAILABLE || st == CK_TIMEOUT);
            ck_reader *r = NULL;
            CHECK_OK(ck_reader_new(d, 16, &r));
            int64_t n = ck_reader_get(r, KEY("k"));
            CHECK(n == -(int64_t)CK_UNAVAILABLE || n == -(int64_t)CK_TIMEOUT);
            ck_reader_free(r);
            CHECK(now_ms() - t0 < 20000);
            ck_deployment_free(d);
        }
        /* Redlock over three masters with one missing still works (2 of 3)... */
        snprintf(down, sizeof down,
                 "[pools.locks]\nstrategy = \"round_robin\"\n"
                 "nodes = [ { id = \"l1\", host = \"127.0.0.1\", port = %d },\n"
                 "          { id = \"l2\", host = \"127.0.0.1\", port = %d },\n"
                 "          { id = \"gone\", host = \"127.0.0.1\", port = %d } ]\n"
                 "[locks]\npool = \"locks\"\ntimeout = \"200ms\"\n",
                 locks[1], locks[2], dead);
        d = build(down);
        if (d) {
            ck_lock *a = NULL;
            CHECK_OK(ck_lock_acquire(d, "down:lock", 5000, 0, &a));
            CHECK(a && ck_lock_is_held(a) && ck_lock_fencing_token(a) > 0);
            if (a) CHECK_OK(ck_lock_release(a));
            ck_lock_free(a);
            ck_deployment_free(d);
        }
        /* ...with two missing it cannot reach a quorum: CK_UNAVAILABLE. */
        snprintf(down, sizeof down,
                 "[pools.locks]\nstrategy = \"round_robin\"\n"
                 "nodes = [ { id = \"l1\", host = \"127.0.0.1\", port = %d },\n"
                 "          { id = \"gone1\", host = \"127.0.0.1\", port = %d },\n"
                 "          { id = \"gone2\", host = \"127.0.0.2\", port = %d } ]\n"
                 "[locks]\npool = \"locks\"\ntimeout = \"200ms\"\n",
                 locks[0], dead, dead);
        d = build(down);
        if (d) {
            ck_lock *a = SENTINEL(ck_lock);
            CHECK_ST(ck_lock_acquire(d, "down:lock", 5000, 0, &a), CK_UNAVAILABLE);
            CHECK(ck_last_error()[0] != '\0');
            CHECK(a == SENTINEL(ck_lock));
            /* The lost attempt left nothing behind on the live master. */
            ck_deployment *live = NULL;
            char one[512];
            snprintf(one, sizeof one,
                     "[pools.l]\nstrategy = \"round_robin\"\n"
                     "nodes = [ { id = \"l1\", host = \"127.0.0.1\", port = %d } ]\n"
                     "[locks]\npool = \"l\"\n", locks[0]);
            live = build(one);
            if (live) {
                ck_lock *b = NULL;
                CHECK_OK(ck_lock_acquire(live, "down:lock", 5000, 2000, &b));
                if (b) CHECK_OK(ck_lock_release(b));
                ck_lock_free(b);
                ck_deployment_free(live);
            }
            ck_deployment_free(d);
        }
        /* ...and with none there: CK_UNAVAILABLE. */
        snprintf(down, sizeof down,
                 "[pools.locks]\nstrategy = \"round_robin\"\n"
                 "nodes = [ { id = \"gone1\", host = \"127.0.0.1\", port = %d },\n"
                 "          { id = \"gone2\", host = \"127.0.0.2\", port = %d },\n"
                 "          { id = \"gone3\", host = \"127.0.0.3\", port = %d } ]\n"
                 "[locks]\npool = \"locks\"\ntimeout = \"200ms\"\n",
                 dead, dead, dead);
        d = build(down);
        if (d) {
            ck_lock *a = SENTINEL(ck_lock);
            CHECK_ST(ck_lock_acquire(d, "down:lock", 5000, 0, &a), CK_UNAVAILABLE);
            CHECK(a == SENTINEL(ck_lock));
            ck_deployment_free(d);
        }
    }

out:
    ck_deployment_free(dep);
    ck_deployment_free(other);
    ck_deployment_free(dep2);
}
