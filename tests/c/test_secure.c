/*
 * Production connections over the C ABI: a deployment document whose [redis] section names an
 * ACL user, takes the password from an environment variable, selects database 5 and uses
 * mutual TLS (certificates made by tests/c/run with openssl) serves the sharded cache,
 * Redlock over three masters and sessions; a wrong password gives CK_UNAVAILABLE with
 * "authentication failed" and without the password anywhere in the message.
 *
 * The Redis health check marks both cache shards healthy over the same connections, and a pool
 * discovered through the registry (service "cweb", one node registered by tests/c/run with
 * redis-cli in the documented entry format) sees its node; with a wrong password the
 * registry pool reports a discovery problem instead, without the password.
 *
 * tests/c/run starts three TLS-only redis-server processes with an ACL user (the default user
 * off) and exports CK_TEST_SECURE_PORTS, CK_TEST_SECURE_DIR (ca.pem, client.pem, client.key),
 * CK_TEST_SECURE_USER and CK_TEST_SECURE_PASSWORD.
 */
#include "ck_test.h"

static const char *need(const char *var) {
    const char *v = getenv(var);
    if (v == NULL || *v == '\0') {
        CHECK(!"secure Redis variable missing: run the suite through tests/c/run");
        fprintf(stderr, "  %s is not set\n", var);
        return NULL;
    }
    return v;
}

static void secure_config(char *out, size_t cap, const int ports[3], const char *dir,
                          const char *user, const char *password_line) {
    snprintf(out, cap,
             "[redis]\n"
             "username = \"%s\"\n"
             "%s\n"
             "db = 5\n"
             "tls = { ca_file = \"%s/ca.pem\", cert_file = \"%s/client.pem\", "
             "key_file = \"%s/client.key\" }\n"
             "[pools.cache]\n"
             "strategy = \"ketama\"\n"
             "nodes = [ { id = \"c1\", host = \"127.0.0.1\", port = %d },\n"
             "          { id = \"c2\", host = \"127.0.0.1\", port = %d } ]\n"
             "health = { check = \"redis\", interval = \"500ms\", timeout = \"5s\", rise = 1, fall = 3 }\n"
             "[pools.locks]\n"
             "nodes = [ { id = \"l1\", host = \"127.0.0.1\", port = %d },\n"
             "          { id = \"l2\", host = \"127.0.0.1\", port = %d },\n"
             "          { id = \"l3\", host = \"127.0.0.1\", port = %d } ]\n"
             "[pools.app]\n"
             "discovery = { redis = \"127.0.0.1:%d\", service = \"cweb\", interval = \"200ms\" }\n"
             "[cache]\n"
             "pool = \"cache\"\n"
             "namespace = \"csecure\"\n"
             "timeout = \"3s\"\n"
             "[locks]\n"
             "pool = \"locks\"\n"
             "timeout = \"3s\"\n"
             "connect_timeout = \"5s\"\n",
             user, password_line, dir, dir, dir, ports[0], ports[1], ports[0], ports[1],
             ports[2], ports[0]);
}

void test_secure(void) {
    const char *ports_var = need("CK_TEST_SECURE_PORTS");
    const char *dir = need("CK_TEST_SECURE_DIR");
    const char *user = need("CK_TEST_SECURE_USER");
    const char *password = need("CK_TEST_SECURE_PASSWORD");
    if (!ports_var || !dir || !user || !password) return;
    int ports[3] = {0, 0, 0};
    if (sscanf(ports_var, "%d,%d,%d", &ports[0], &ports[1], &ports[2]) != 3) {
        CHECK(!"CK_TEST_SECURE_PORTS holds three ports");
        return;
    }
    static char cfg[4096];

    /* The right password, from the environment variable. */
    secure_config(cfg, sizeof cfg, ports, dir, user, "password_env = \"CK_TEST_SECURE_PASSWORD\"");
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(cfg, &dep));
    if (dep == NULL) return;

    /* Cache: set and read back over TLS + ACL in db 5. */
    CHECK_OK(ck_cache_set(dep, KEY("greeting"), (const uint8_t *)"hello", 5, 60000));
    ck_buf *v = NULL;
    CHECK_OK(ck_cache_get(dep, KEY("greeting"), &v));
    CHECK(buf_is(v, "hello"));
    ck_buf_free(v);

    /* Redlock over three TLS masters. Under valgrind on a loaded machine a first TLS
     * handshake can take longer than the default 500 ms connect timeout (seen: 20 warm-up
     * attempts all timed out at a load average of 15), so the document sets
     * [locks] connect_timeout = 5s, and the connections are still warmed up first
     * (bounded: 20 attempts). */
    ck_lock *l = NULL;
    ck_status warm = CK_UNAVAILABLE;
    for (int i = 0; i < 20 && warm != CK_OK; i++) {
        /* A fresh name per attempt: a timed-out attempt may still hold its key on some
         * masters until its TTL passes. While the handshakes are still slower than the
         * connect timeout an attempt fails (unavailable, timeout, or a split vote reported
         * as a conflict); the connections are warm once one succeeds. */
        char warm_name[64];
        snprintf(warm_name, sizeof warm_name, "c-secure-warmup-%d", i);
        warm = ck_lock_acquire(dep, warm_name, 1000, 0, &l);
        if (warm == CK_OK) {
            CHECK_OK(ck_lock_release(l));
            ck_lock_free(l);
            l = NULL;
        }
    }
    CHECK_ST(warm, CK_OK);
    CHECK_OK(ck_lock_acquire(dep, "c-secure-lock", 10000, 0, &l));
    CHECK(l != NULL && ck_lock_fencing_token(l) >= 1);
    ck_lock *l2 = SENTINEL(ck_lock);
    CHECK_ST(ck_lock_acquire(dep, "c-secure-lock", 10000, 0, &l2), CK_CONFLICT);
    CHECK(l2 == SENTINEL(ck_lock));
    if (l != NULL) {
        CHECK_OK(ck_lock_release(l));
        ck_lock_free(l);
    }

    /* Health: the Redis PING check passes over TLS + ACL on both shards (bounded wait). */
    ck_cluster *cache_pool = NULL;
    CHECK_OK(ck_deployment_cluster(dep, "cache", &cache_pool));
    size_t healthy = 0;
    for (int i = 0; i < 300 && cache_pool != NULL; i++) {
        healthy = ck_cluster_healthy_count(cache_pool);
        if (healthy == 2) break;
        sleep_ms(100);
    }
    CHECK(healthy == 2);
    ck_cluster_free(cache_pool);

    /* Registry discovery over TLS + ACL: the registered node shows up (bounded wait). */
    ck_cluster *app = NULL;
    CHECK_OK(ck_deployment_cluster(dep, "app", &app));
    size_t found = 0;
    for (int i = 0; i < 300 && app != NULL; i++) {
        found = ck_cluster_len(app);
        if (found == 1) break;
        sleep_ms(100);
    }
    CHECK(found == 1);
    if (app != NULL) {
        ck_buf *nodes = NULL;
        CHECK_OK(ck_cluster_nodes(app, &nodes));
        CHECK(nodes != NULL && buf_has(nodes, "\"web-1\"") && buf_has(nodes, "8081"));
        ck_buf_free(nodes);
        ck_cluster_free(app);
    }

    /* Sessions: save, load, destroy. */
    ck_session *s = NULL;
    CHECK_OK(ck_session_create(dep, &s));
    if (s != NULL) {
        CHECK_OK(ck_session_set(s, "user", (const uint8_t *)"alice", 5));
        CHECK_OK(ck_session_save(dep, s));
        char id[256];
        snprintf(id, sizeof id, "%s", ck_session_id(s));
        ck_session_free(s);
        ck_session *loaded = NULL;
        CHECK_OK(ck_session_load(dep, KEY(id), false, &loaded));
        const uint8_t *data = NULL;
        size_t len = 0;
        CHECK_OK(ck_session_get(loaded, "user", &data, &len));
        CHECK(len == 5 && data != NULL && memcmp(data, "alice", 5) == 0);
        ck_session_free(loaded);
    }
    ck_deployment_free(dep);

    /* A wrong inline password: CK_UNAVAILABLE, "authentication failed", no secret. */
    const char *wrong = "c-wrong-password-0451";
    char line[128];
    snprintf(line, sizeof line, "password = \"%s\"", wrong);
    secure_config(cfg, sizeof cfg, ports, dir, user, line);
    dep = NULL;
    CHECK_OK(ck_deployment_new(cfg, &dep));
    if (dep == NULL) return;
    CHECK_ERR(ck_cache_set(dep, KEY("k"), (const uint8_t *)"v", 1, 0), CK_UNAVAILABLE,
              "authentication failed");
    CHECK(strstr(ck_last_error(), wrong) == NULL);
    CHECK(strstr(ck_last_error(), password) == NULL);
    ck_lock *bad = SENTINEL(ck_lock);
    /* The masters refuse AUTH (unavailable), unless under valgrind the TLS handshakes outlast
     * the masters' connect timeout first (then they are reported as timed out). */
    ck_status lst = ck_lock_acquire(dep, "c-secure-lock", 1000, 0, &bad);
    CHECK(lst == CK_UNAVAILABLE || lst == CK_TIMEOUT);
    CHECK(strstr(ck_last_error(), "authentication failed") != NULL ||
          strstr(ck_last_error(), "timed out") != NULL);
    CHECK(bad == SENTINEL(ck_lock));
    CHECK(strstr(ck_last_error(), wrong) == NULL);
    /* The registry pool reports a discovery problem (bounded wait), naming no password. */
    ck_cluster *bad_app = NULL;
    CHECK_OK(ck_deployment_cluster(dep, "app", &bad_app));
    ck_events *events = NULL;
    if (bad_app != NULL) CHECK_OK(ck_cluster_subscribe(bad_app, &events));
    bool problem = false;
    for (int i = 0; i < 60 && events != NULL && !problem; i++) {
        ck_event *ev = NULL;
        if (ck_events_next(events, 500, &ev) != CK_OK) continue;
        if (ck_event_get_kind(ev) == CK_EVENT_DISCOVERY_PROBLEM) {
            problem = true;
            const char *m = ck_event_message(ev);
            CHECK(m != NULL && strstr(m, wrong) == NULL && strstr(m, password) == NULL);
        }
        ck_event_free(ev);
    }
    CHECK(problem);
    CHECK(bad_app == NULL || ck_cluster_len(bad_app) == 0);
    ck_events_free(events);
    ck_cluster_free(bad_app);
    ck_deployment_free(dep);

    /* A password in a URL is not echoed either (the server is TLS-only: the plain
     * connection fails). */
    snprintf(cfg, sizeof cfg, "[cache]\nredis = \"redis://%s:%s@127.0.0.1:%d\"\ntimeout = \"1s\"\n",
             user, wrong, ports[0]);
    dep = NULL;
    CHECK_OK(ck_deployment_new(cfg, &dep));
    if (dep == NULL) return;
    ck_status st = ck_cache_set(dep, KEY("k"), (const uint8_t *)"v", 1, 0);
    CHECK(st == CK_UNAVAILABLE || st == CK_TIMEOUT);
    CHECK(ck_last_error()[0] != '\0' && strstr(ck_last_error(), wrong) == NULL);
    ck_deployment_free(dep);
}
