/*
 * Deployments (ck_deployment_new / _shared / _free), picks from a deployment's pools and
 * the deployment's metrics.
 */
#include "ck_test.h"

static void bad_config(const char *config, const char *field) {
    ck_deployment *dep = SENTINEL(ck_deployment);
    CHECK_ERR(ck_deployment_new(config, &dep), CK_INVALID_ARGUMENT, field);
    CHECK(dep == SENTINEL(ck_deployment));
    /* A failure of the shared registry is the same and is not remembered. */
    CHECK_ERR(ck_deployment_shared(config, &dep), CK_INVALID_ARGUMENT, field);
    CHECK(dep == SENTINEL(ck_deployment));
}

void test_deployment(void) {
    ck_deployment *dep = SENTINEL(ck_deployment);

    /* NULL arguments name themselves; the out-parameter is untouched. */
    CHECK_INVALID(ck_deployment_new(NULL, &dep), "config");
    CHECK(dep == SENTINEL(ck_deployment));
    CHECK_INVALID(ck_deployment_new("", NULL), "out");
    CHECK_INVALID(ck_deployment_shared(NULL, &dep), "config");
    CHECK(dep == SENTINEL(ck_deployment));
    CHECK_INVALID(ck_deployment_shared("", NULL), "out");
    /* Not UTF-8. */
    CHECK_ERR(ck_deployment_new("a = \"\xff\xfe\"", &dep), CK_INVALID_ARGUMENT, "UTF-8");
    CHECK(strstr(ck_last_error(), "config") != NULL);
    CHECK(dep == SENTINEL(ck_deployment));
    CHECK_ERR(ck_deployment_shared("a = \"\xc3\x28\"", &dep), CK_INVALID_ARGUMENT, "UTF-8");
    CHECK(dep == SENTINEL(ck_deployment));

    /* Bad documents: the message names the field by its path. */
    bad_config("[pools.app]\nnodes = [ { id = \"a\", host = \"h\", port = 0 } ]\n",
               "pools.app.nodes[0].port");
    bad_config("{\"pools\": {\"app\": {\"strategy\": \"fastest\"}}}", "pools.app");
    bad_config("{\"pools\": {\"app\": {\"nodes\": [{\"id\": \"a\", \"host\": \"h\", \"port\": 1, "
               "\"weight\": 999}]}}}",
               "pools.app.nodes[0].weight");
    bad_config("[pools.app]\nnodes = [ { id = \"a\", host = \"h\", port = 1 },\n"
               "  { id = \"a\", host = \"h\", port = 2 } ]\n",
               "pools.app.nodes[1].id");
    bad_config("[cache]\nnamespce = \"x\"\n", "namespce");
    bad_config("[cache]\npool = \"nowhere\"\n", "cache.pool");
    bad_config("[pools.app]\nstrategy = \"round_robin\"\n"
               "nodes = [ { id = \"a\", host = \"h\", port = 1 } ]\n[cache]\npool = \"app\"\n",
               "cache.pool");
    bad_config("[cache]\nreplicas = 0\n", "cache.replicas");
    bad_config("[locks]\npool = \"nowhere\"\n", "locks.pool");
    bad_config("[sessions]\nlock_wait = \"soon\"\n", "sessions.lock_wait");
    bad_config("[sessions]\nlock_ttl = \"0ms\"\n", "sessions");
    bad_config("{ not json", "invalid");
    bad_config("[pools.app\n", "invalid");

    /* Empty document: everything embedded. TOML and JSON both work. */
    dep = NULL;
    CHECK_OK(ck_deployment_new("", &dep));
    CHECK(dep != NULL);
    ck_deployment_free(dep);
    dep = NULL;
    CHECK_OK(ck_deployment_new("  \n ", &dep));
    ck_deployment_free(dep);
    dep = NULL;
    CHECK_OK(ck_deployment_new("{\"cache\": {\"namespace\": \"j\"}}", &dep));
    CHECK(dep != NULL);
    ck_deployment_free(dep);
    dep = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &dep));
    ck_deployment_free(dep);
    ck_deployment_free(NULL); /* a no-op */

    /* Shared: the same config text gives handles to the same deployment (same embedded
     * cache, same pool state); another text or ck_deployment_new gives another one. */
    const char *cfg = "[cache]\nnamespace = \"shared-a\"\n"
                      "[pools.app]\nstrategy = \"round_robin\"\n"
                      "nodes = [ { id = \"a1\", host = \"127.0.0.1\", port = 1001 },\n"
                      "          { id = \"a2\", host = \"127.0.0.1\", port = 1002 } ]\n";
    ck_deployment *s1 = NULL, *s2 = NULL, *s3 = NULL, *other = NULL, *fresh = NULL;
    CHECK_OK(ck_deployment_shared(cfg, &s1));
    CHECK_OK(ck_deployment_shared(cfg, &s2));
    CHECK_OK(ck_deployment_shared("[cache]\nnamespace = \"shared-b\"\n", &other));
    CHECK_OK(ck_deployment_new(cfg, &fresh));
    CHECK(s1 != NULL && s2 != NULL && s1 != s2); /* distinct handles */
    CHECK_OK(ck_cache_set(s1, KEY("shared-key"), KEY("from s1"), 0));
    ck_buf *buf = NULL;
    CHECK_OK(ck_cache_get(s2, KEY("shared-key"), &buf));
    CHECK(buf_is(buf, "from s1"));
    ck_buf_free(buf);
    CHECK_ST(ck_cache_get(other, KEY("shared-key"), &buf), CK_NOT_FOUND);
    CHECK_ST(ck_cache_get(fresh, KEY("shared-key"), &buf), CK_NOT_FOUND);
    /* Pool state is shared too: a node marked down through s1 is down through s2. */
    ck_cluster *c1 = NULL, *c2 = NULL;
    CHECK_OK(ck_deployment_cluster(s1, "app", &c1));
    CHECK_OK(ck_deployment_cluster(s2, "app", &c2));
    CHECK_OK(ck_cluster_set_health(c1, "a1", CK_UNHEALTHY, "shared test"));
    CHECK(ck_cluster_healthy_count(c2) == 1);
    for (int i = 0; i < 4; i++) {
        ck_pick *p = NULL;
        CHECK_OK(ck_deployment_pick(s2, "app", NULL, 0, &p));
        CHECK(p != NULL && strcmp(ck_pick_node_id(p), "a2") == 0);
        ck_pick_free(p);
    }
    CHECK_OK(ck_cluster_set_health(c2, "a1", CK_HEALTHY, NULL));
    CHECK(ck_cluster_healthy_count(c1) == 2);
    ck_cluster_free(c1);
    ck_cluster_free(c2);
    /* Freeing a handle drops only that reference: the process keeps the deployment. */
    ck_deployment_free(s1);
    buf = NULL;
    CHECK_OK(ck_cache_get(s2, KEY("shared-key"), &buf));
    CHECK(buf_is(buf, "from s1"));
    ck_buf_free(buf);
    ck_deployment_free(s2);
    CHECK_OK(ck_deployment_shared(cfg, &s3));
    buf = NULL;
    CHECK_OK(ck_cache_get(s3, KEY("shared-key"), &buf));
    CHECK(buf_is(buf, "from s1"));
    ck_buf_free(buf);
    CHECK_OK(ck_cache_delete(s3, KEY("shared-key"), NULL));
    ck_deployment_free(s3);
    ck_deployment_free(other);
    ck_deployment_free(fresh);

    /* A buffer outlives the deployment it came from. */
    ck_deployment *gone = NULL;
    CHECK_OK(ck_deployment_new("", &gone));
    buf = NULL;
    if (gone) {
        CHECK_OK(ck_cache_set(gone, KEY("k"), KEY("kept after free"), 0));
        CHECK_OK(ck_cache_get(gone, KEY("k"), &buf));
        ck_deployment_free(gone);
        CHECK(buf_is(buf, "kept after free"));
        ck_buf_free(buf);
    }

    /* Two ck_deployment_new deployments have separate embedded caches. */
    ck_deployment *d1 = NULL, *d2 = NULL;
    CHECK_OK(ck_deployment_new("", &d1));
    CHECK_OK(ck_deployment_new("", &d2));
    CHECK_OK(ck_cache_set(d1, KEY("mine"), KEY("1"), 0));
    buf = SENTINEL(ck_buf);
    CHECK_ST(ck_cache_get(d2, KEY("mine"), &buf), CK_NOT_FOUND);
    CHECK(buf == SENTINEL(ck_buf));
    ck_deployment_free(d1);
    ck_deployment_free(d2);
}

void test_deployment_pick(void) {
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &dep));
    if (dep == NULL) return;
    ck_pick *p = NULL;

    /* Round robin alternates over both nodes; accessors match the config. */
    int seen1 = 0, seen2 = 0;
    for (int i = 0; i < 4; i++) {
        p = NULL;
        CHECK_OK(ck_deployment_pick(dep, "app", NULL, 0, &p));
        if (p == NULL) continue;
        const char *id = ck_pick_node_id(p);
        if (strcmp(id, "web-1") == 0) {
            seen1++;
            CHECK(strcmp(ck_pick_host(p), "127.0.0.1") == 0);
            CHECK(ck_pick_port(p) == 8081);
        } else if (strcmp(id, "web-2") == 0) {
            seen2++;
            CHECK(strcmp(ck_pick_host(p), "127.0.0.2") == 0);
            CHECK(ck_pick_port(p) == 8082);
        } else {
            CHECK(!"unknown node id");
        }
        if (i == 0) CHECK_OK(ck_pick_success(p, 3));
        else if (i == 1) CHECK_OK(ck_pick_failure(p));
        else ck_pick_free(p);
    }
    CHECK(seen1 == 2 && seen2 == 2);

    /* A key pick on a hashing pool is stable; different keys spread over the nodes; key
     * length 0 means no key (whatever the pointer). */
    ck_pick *a = NULL, *b = NULL;
    CHECK_OK(ck_deployment_pick(dep, "ring", KEY("user:42"), &a));
    CHECK_OK(ck_deployment_pick(dep, "ring", KEY("user:42"), &b));
    CHECK(a && b && strcmp(ck_pick_node_id(a), ck_pick_node_id(b)) == 0);
    CHECK(a && ck_pick_port(a) == 6379 && strncmp(ck_pick_host(a), "127.0.1.", 8) == 0);
    ck_pick_free(a);
    ck_pick_free(b);
    int spread[3] = {0, 0, 0};
    for (int i = 0; i < 60; i++) {
        char key[32];
        snprintf(key, sizeof key, "spread-%d", i);
        p = NULL;
        CHECK_OK(ck_deployment_pick(dep, "ring", KEY(key), &p));
        if (p) {
            const char *id = ck_pick_node_id(p);
            if (id[0] == 'r' && id[1] >= '1' && id[1] <= '3') spread[id[1] - '1']++;
        }
        ck_pick_free(p);
    }
    CHECK(spread[0] > 0 && spread[1] > 0 && spread[2] > 0);
    CHECK(spread[0] + spread[1] + spread[2] == 60);
    p = NULL;
    CHECK_OK(ck_deployment_pick(dep, "ring", (const uint8_t *)"ignored", 0, &p));
    ck_pick_free(p);
    p = NULL;
    CHECK_OK(ck_deployment_pick(dep, "ring", NULL, 0, &p));
    ck_pick_free(p);

    /* A live pick counts as in flight on its node; its outcome lands in the counters. */
    ck_cluster *app = NULL;
    CHECK_OK(ck_deployment_cluster(dep, "app", &app));
    p = NULL;
    CHECK_OK(ck_deployment_pick(dep, "app", NULL, 0, &p));
    ck_buf *nodes = NULL;
    CHECK_OK(ck_cluster_nodes(app, &nodes));
    CHECK(buf_has(nodes, "\"in_flight\":1"));
    ck_buf_free(nodes);
    CHECK_OK(ck_pick_success(p, 7));
    /* Microsecond latencies: the node's last latency is kept in microseconds. */
    CHECK_OK(ck_deployment_pick(dep, "app", NULL, 0, &p));
    CHECK_OK(ck_pick_success_us(p, 1234));
    CHECK(ck_pick_success_us(NULL, 1) == CK_INVALID_ARGUMENT);
    nodes = NULL;
    CHECK_OK(ck_cluster_nodes(app, &nodes));
    CHECK(!buf_has(nodes, "\"in_flight\":1"));
    CHECK(buf_has(nodes, "\"successes\":1") || buf_has(nodes, "\"successes\":2"));
    CHECK(buf_has(nodes, "\"last_latency_us\":1234"));
    CHECK(buf_has(nodes, "\"failures\":1"));
    ck_buf_free(nodes);
    ck_cluster_free(app);

    /* Error paths; the out-parameter is untouched. */
    p = SENTINEL(ck_pick);
    CHECK_ERR(ck_deployment_pick(dep, "nope", NULL, 0, &p), CK_NOT_FOUND, "nope");
    CHECK(p == SENTINEL(ck_pick));
    CHECK_INVALID(ck_deployment_pick(NULL, "app", NULL, 0, &p), "dep");
    CHECK_INVALID(ck_deployment_pick(dep, NULL, NULL, 0, &p), "pool");
    CHECK_INVALID(ck_deployment_pick(dep, "app", NULL, 0, NULL), "out");
    CHECK_INVALID(ck_deployment_pick(dep, "ring", NULL, 5, &p), "key");
    CHECK_ERR(ck_deployment_pick(dep, "\xc3\x28", NULL, 0, &p), CK_INVALID_ARGUMENT, "UTF-8");
    CHECK(strstr(ck_last_error(), "pool") != NULL);
    CHECK(p == SENTINEL(ck_pick));
    CHECK_INVALID(ck_pick_success(NULL, 1), "pick");
    CHECK_INVALID(ck_pick_failure(NULL), "pick");
    CHECK(ck_pick_node_id(NULL) == NULL);
    CHECK(ck_pick_host(NULL) == NULL);
    CHECK(ck_pick_port(NULL) == 0);
    ck_pick_free(NULL); /* a no-op */

    /* A pick outlives its deployment. */
    ck_deployment *tmp = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &tmp));
    p = NULL;
    CHECK_OK(ck_deployment_pick(tmp, "app", NULL, 0, &p));
    ck_deployment_free(tmp);
    CHECK(p && strncmp(ck_pick_node_id(p), "web-", 4) == 0);
    CHECK_OK(ck_pick_success(p, 1));

    /* An embedded deployment has no pools. */
    ck_deployment *emb = NULL;
    CHECK_OK(ck_deployment_new("", &emb));
    p = SENTINEL(ck_pick);
    CHECK_ERR(ck_deployment_pick(emb, "app", NULL, 0, &p), CK_NOT_FOUND, "app");
    CHECK(p == SENTINEL(ck_pick));
    ck_deployment_free(emb);

    /* No node to pick: an empty pool, and a pool whose panic mode refuses when every node
     * is down. */
    ck_deployment *empty = NULL;
    CHECK_OK(ck_deployment_new("[pools.none]\nstrategy = \"round_robin\"\n"
                               "[pools.strict]\nstrategy = \"round_robin\"\npanic_mode = \"error\"\n"
                               "nodes = [ { id = \"s1\", host = \"127.0.0.1\", port = 9001 } ]\n",
                               &empty));
    if (empty) {
        p = SENTINEL(ck_pick);
        CHECK_ST(ck_deployment_pick(empty, "none", NULL, 0, &p), CK_UNAVAILABLE);
        CHECK(p == SENTINEL(ck_pick));
        ck_cluster *strict = NULL;
        CHECK_OK(ck_deployment_cluster(empty, "strict", &strict));
        CHECK_OK(ck_cluster_set_health(strict, "s1", CK_UNHEALTHY, "down for the test"));
        CHECK_ST(ck_deployment_pick(empty, "strict", NULL, 0, &p), CK_UNAVAILABLE);
        CHECK(p == SENTINEL(ck_pick));
        CHECK_OK(ck_cluster_set_health(strict, "s1", CK_HEALTHY, NULL));
        p = NULL;
        CHECK_OK(ck_deployment_pick(empty, "strict", NULL, 0, &p));
        ck_pick_free(p);
        ck_cluster_free(strict);
        ck_deployment_free(empty);
    }
    ck_deployment_free(dep);
}

void test_metrics(void) {
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &dep));
    if (dep == NULL) return;
    ck_buf *buf = NULL;
    CHECK_OK(ck_cache_set(dep, KEY("m"), KEY("v"), 0));
    CHECK_OK(ck_cache_get(dep, KEY("m"), &buf));
    ck_buf_free(buf);
    CHECK_ST(ck_cache_get(dep, KEY("m-missing"), &buf), CK_NOT_FOUND);

    ck_buf *json = NULL;
    CHECK_OK(ck_deployment_metrics(dep, &json));
    CHECK(json != NULL && ck_buf_len(json) > 2 && ck_buf_data(json)[0] == '{');
    CHECK(buf_has(json, "\"cache\""));
    CHECK(buf_has(json, "\"namespace\":\"ctest\""));
    CHECK(buf_has(json, "\"hits\":1"));
    CHECK(buf_has(json, "\"misses\":1"));
    CHECK(buf_has(json, "\"writes\":1"));
    CHECK(buf_has(json, "\"errors\":0"));
    CHECK(buf_has(json, "\"pools\""));
    CHECK(buf_has(json, "\"app\""));
    CHECK(buf_has(json, "\"ring\""));
    CHECK(buf_has(json, "\"strategy\":\"ketama\""));
    CHECK(buf_has(json, "\"web-1\""));
    CHECK(buf_has(json, "\"in_panic\":false"));
    ck_buf_free(json);

    json = SENTINEL(ck_buf);
    CHECK_INVALID(ck_deployment_metrics(NULL, &json), "dep");
    CHECK(json == SENTINEL(ck_buf));
    CHECK_INVALID(ck_deployment_metrics(dep, NULL), "out");

    /* An embedded deployment reports its cache and no pools. */
    ck_deployment *emb = NULL;
    CHECK_OK(ck_deployment_new("", &emb));
    json = NULL;
    CHECK_OK(ck_deployment_metrics(emb, &json));
    CHECK(buf_has(json, "\"pools\":{}"));
    CHECK(buf_has(json, "\"namespace\":\"clusterkit\""));
    ck_buf_free(json);
    ck_deployment_free(emb);
    ck_deployment_free(dep);
}
