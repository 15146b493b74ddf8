/*
 * Clusters node by node (ck_cluster_*) and their polled events (ck_events_*, ck_event_*).
 */
#include "ck_test.h"

static ck_cluster *new_cluster(const char *name, const char *strategy) {
    ck_cluster *c = NULL;
    CHECK_OK(ck_cluster_new(name, strategy, &c));
    return c;
}

/* Counts picks per node id over `n` picks without a key ("a", "b", "c" ids only). */
static void count_picks(ck_cluster *c, int n, int counts[3]) {
    counts[0] = counts[1] = counts[2] = 0;
    for (int i = 0; i < n; i++) {
        ck_pick *p = NULL;
        CHECK_OK(ck_cluster_pick(c, NULL, 0, &p));
        if (p == NULL) continue;
        const char *id = ck_pick_node_id(p);
        if (id[0] >= 'a' && id[0] <= 'c' && id[1] == '\0') counts[id[0] - 'a']++;
        ck_pick_free(p);
    }
}

void test_cluster(void) {
    ck_cluster *c = SENTINEL(ck_cluster);

    /* ck_cluster_new: arguments. */
    CHECK_INVALID(ck_cluster_new(NULL, "round_robin", &c), "name");
    CHECK(c == SENTINEL(ck_cluster));
    CHECK_INVALID(ck_cluster_new("x", "round_robin", NULL), "out");
    CHECK_INVALID(ck_cluster_new("", "round_robin", &c), "name");
    if (c != SENTINEL(ck_cluster)) { /* accepted after all: do not leak it */
        ck_cluster_free(c);
        c = SENTINEL(ck_cluster);
    }
    CHECK_ERR(ck_cluster_new("\xff", "round_robin", &c), CK_INVALID_ARGUMENT, "name");
    CHECK(strstr(ck_last_error(), "UTF-8") != NULL);
    CHECK_INVALID(ck_cluster_new("x", "fastest", &c), "strategy");
    CHECK_INVALID(ck_cluster_new("x", "\xc3\x28", &c), "strategy");
    CHECK(c == SENTINEL(ck_cluster));
    const char *strategies[] = {"round_robin", "weighted_round_robin", "random",
                                "least_connections", "p2c", "ketama", "maglev",
                                "rendezvous", "", NULL};
    for (size_t i = 0; i < sizeof strategies / sizeof strategies[0]; i++) {
        ck_cluster *s = NULL;
        CHECK_OK(ck_cluster_new("strategies", strategies[i], &s));
        CHECK(s != NULL && ck_cluster_len(s) == 0 && ck_cluster_healthy_count(s) == 0);
        CHECK_OK(ck_cluster_add_node(s, "a", "127.0.0.1", 80, 0, NULL, NULL));
        CHECK_OK(ck_cluster_add_node(s, "b", "127.0.0.1", 81, 0, NULL, NULL));
        ck_pick *p = NULL;
        CHECK_OK(ck_cluster_pick(s, KEY("some key"), &p));
        CHECK(p && (strcmp(ck_pick_node_id(p), "a") == 0 || strcmp(ck_pick_node_id(p), "b") == 0));
        ck_pick_free(p);
        ck_cluster_free(s);
    }

    c = new_cluster("web", "round_robin");
    if (c == NULL) return;

    /* An empty cluster has nothing to pick. */
    ck_pick *p = SENTINEL(ck_pick);
    CHECK_ST(ck_cluster_pick(c, NULL, 0, &p), CK_UNAVAILABLE);
    CHECK(p == SENTINEL(ck_pick));

    /* ck_cluster_add_node. */
    CHECK_OK(ck_cluster_add_node(c, "a", "127.0.0.1", 8001, 0, NULL, NULL));
    CHECK_OK(ck_cluster_add_node(c, "b", "127.0.0.2", 8002, 2, "zone-b", "{\"rack\": \"r2\"}"));
    CHECK_OK(ck_cluster_add_node(c, "c", "localhost", 8003, 256, "", ""));
    CHECK(ck_cluster_len(c) == 3);
    CHECK(ck_cluster_healthy_count(c) == 3);
    CHECK_ERR(ck_cluster_add_node(c, "a", "127.0.0.9", 9000, 0, NULL, NULL), CK_CONFLICT, "\"a\"");
    CHECK(ck_cluster_len(c) == 3);
    CHECK_INVALID(ck_cluster_add_node(NULL, "d", "h", 1, 0, NULL, NULL), "cluster");
    CHECK_INVALID(ck_cluster_add_node(c, NULL, "h", 1, 0, NULL, NULL), "id");
    CHECK_INVALID(ck_cluster_add_node(c, "d", NULL, 1, 0, NULL, NULL), "host");
    CHECK_INVALID(ck_cluster_add_node(c, "", "h", 1, 0, NULL, NULL), "id");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "", 1, 0, NULL, NULL), "host");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h", 0, 0, NULL, NULL), "port");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h", 1, 257, NULL, NULL), "weight");
    CHECK_INVALID(ck_cluster_add_node(c, "\xff\xfe", "h", 1, 0, NULL, NULL), "id");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h\xff", 1, 0, NULL, NULL), "host");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h", 1, 0, "\xff", NULL), "zone");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h", 1, 0, NULL, "[1, 2]"), "metadata_json");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h", 1, 0, NULL, "{\"n\": 1}"), "metadata_json");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h", 1, 0, NULL, "{oops"), "metadata_json");
    CHECK_INVALID(ck_cluster_add_node(c, "d", "h", 1, 0, NULL, "\xff"), "metadata_json");
    CHECK(ck_cluster_len(c) == 3);

    /* Nodes as JSON. */
    ck_buf *json = NULL;
    CHECK_OK(ck_cluster_nodes(c, &json));
    CHECK(json != NULL && ck_buf_len(json) > 0 && ck_buf_data(json)[0] == '[');
    CHECK(buf_has(json, "\"id\":\"a\""));
    CHECK(buf_has(json, "\"host\":\"127.0.0.2\""));
    CHECK(buf_has(json, "\"port\":8002"));
    CHECK(buf_has(json, "\"weight\":2"));
    CHECK(buf_has(json, "\"weight\":256"));
    CHECK(buf_has(json, "\"zone\":\"zone-b\""));
    CHECK(buf_has(json, "\"zone\":null"));
    CHECK(buf_has(json, "\"rack\":\"r2\""));
    CHECK(buf_has(json, "\"health\":\"healthy\""));
    CHECK(!buf_has(json, "\"health\":\"unhealthy\""));
    const char *fields[] = {"\"metadata\"", "\"reason\"", "\"since_ms\"", "\"in_flight\"",
                            "\"successes\"", "\"failures\"", "\"consecutive_failures\"",
                            "\"last_latency_us\""};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) CHECK(buf_has(json, fields[i]));
    ck_buf_free(json);
    json = SENTINEL(ck_buf);
    CHECK_INVALID(ck_cluster_nodes(NULL, &json), "cluster");
    CHECK_INVALID(ck_cluster_nodes(c, NULL), "out");
    CHECK(json == SENTINEL(ck_buf));

    /* Round robin over three healthy nodes. */
    int counts[3];
    count_picks(c, 9, counts);
    CHECK(counts[0] == 3 && counts[1] == 3 && counts[2] == 3);

    /* ck_cluster_set_health: an unhealthy or draining node gets no picks. */
    CHECK_OK(ck_cluster_set_health(c, "b", CK_UNHEALTHY, "maintenance window"));
    CHECK(ck_cluster_healthy_count(c) == 2);
    CHECK(ck_cluster_len(c) == 3);
    count_picks(c, 8, counts);
    CHECK(counts[1] == 0 && counts[0] == 4 && counts[2] == 4);
    json = NULL;
    CHECK_OK(ck_cluster_nodes(c, &json));
    CHECK(buf_has(json, "\"health\":\"unhealthy\""));
    CHECK(buf_has(json, "maintenance window"));
    ck_buf_free(json);
    CHECK_OK(ck_cluster_set_health(c, "c", CK_DRAINING, NULL));
    CHECK(ck_cluster_healthy_count(c) == 1);
    count_picks(c, 4, counts);
    CHECK(counts[0] == 4);
    json = NULL;
    CHECK_OK(ck_cluster_nodes(c, &json));
    CHECK(buf_has(json, "\"health\":\"draining\""));
    ck_buf_free(json);
    CHECK_OK(ck_cluster_set_health(c, "b", CK_HEALTHY, "back"));
    CHECK_OK(ck_cluster_set_health(c, "c", CK_HEALTHY, NULL));
    CHECK(ck_cluster_healthy_count(c) == 3);
    CHECK_OK(ck_cluster_set_health(c, "c", CK_HEALTHY, NULL)); /* the same word again */
    CHECK_ERR(ck_cluster_set_health(c, "zz", CK_UNHEALTHY, NULL), CK_NOT_FOUND, "zz");
    CHECK_INVALID(ck_cluster_set_health(NULL, "a", CK_UNHEALTHY, NULL), "cluster");
    CHECK_INVALID(ck_cluster_set_health(c, NULL, CK_UNHEALTHY, NULL), "id");
    CHECK_INVALID(ck_cluster_set_health(c, "a", 3, NULL), "health");
    CHECK_INVALID(ck_cluster_set_health(c, "a", 0xFFFFFFFFu, NULL), "health");
    CHECK_INVALID(ck_cluster_set_health(c, "\xff", CK_UNHEALTHY, NULL), "id");
    CHECK_INVALID(ck_cluster_set_health(c, "a", CK_UNHEALTHY, "\xff"), "reason");
    CHECK(ck_cluster_healthy_count(c) == 3);

    /* ck_cluster_set_weight. */
    CHECK_OK(ck_cluster_set_weight(c, "a", 7));
    json = NULL;
    CHECK_OK(ck_cluster_nodes(c, &json));
    CHECK(buf_has(json, "\"weight\":7"));
    ck_buf_free(json);
    CHECK_INVALID(ck_cluster_set_weight(c, "a", 0), "weight");
    CHECK_INVALID(ck_cluster_set_weight(c, "a", 257), "weight");
    CHECK_ERR(ck_cluster_set_weight(c, "zz", 2), CK_NOT_FOUND, "zz");
    CHECK_INVALID(ck_cluster_set_weight(NULL, "a", 2), "cluster");
    CHECK_INVALID(ck_cluster_set_weight(c, NULL, 2), "id");
    CHECK_INVALID(ck_cluster_set_weight(c, "\xff", 2), "id");

    /* ck_cluster_pick arguments. */
    p = SENTINEL(ck_pick);
    CHECK_INVALID(ck_cluster_pick(NULL, NULL, 0, &p), "cluster");
    CHECK_INVALID(ck_cluster_pick(c, NULL, 0, NULL), "out");
    CHECK_INVALID(ck_cluster_pick(c, NULL, 3, &p), "key");
    CHECK(p == SENTINEL(ck_pick));

    /* Metrics. */
    json = NULL;
    CHECK_OK(ck_cluster_metrics(c, &json));
    CHECK(json != NULL && ck_buf_len(json) > 0 && ck_buf_data(json)[0] == '{');
    CHECK(buf_has(json, "\"name\":\"web\""));
    CHECK(buf_has(json, "\"strategy\":\"round_robin\""));
    CHECK(buf_has(json, "\"total\":3"));
    CHECK(buf_has(json, "\"healthy\":3"));
    CHECK(buf_has(json, "\"in_panic\":false"));
    CHECK(buf_has(json, "\"version\""));
    CHECK(buf_has(json, "\"marked_unhealthy\""));
    CHECK(buf_has(json, "\"ejections\""));
    CHECK(buf_has(json, "\"nodes\":["));
    CHECK(buf_has(json, "\"id\":\"c\""));
    ck_buf_free(json);
    json = SENTINEL(ck_buf);
    CHECK_INVALID(ck_cluster_metrics(NULL, &json), "cluster");
    CHECK_INVALID(ck_cluster_metrics(c, NULL), "out");
    CHECK(json == SENTINEL(ck_buf));

    /* ck_cluster_remove_node; a pick holding the removed node finishes normally. */
    ck_pick *held = NULL;
    for (int i = 0; i < 3 && held == NULL; i++) {
        ck_pick *q = NULL;
        CHECK_OK(ck_cluster_pick(c, NULL, 0, &q));
        if (q && strcmp(ck_pick_node_id(q), "c") == 0) held = q;
        else ck_pick_free(q);
    }
    CHECK(held != NULL);
    CHECK_OK(ck_cluster_remove_node(c, "c"));
    CHECK(ck_cluster_len(c) == 2);
    CHECK(ck_cluster_healthy_count(c) == 2);
    CHECK(held && strcmp(ck_pick_node_id(held), "c") == 0 && ck_pick_port(held) == 8003);
    CHECK(held && strcmp(ck_pick_host(held), "localhost") == 0);
    if (held) CHECK_OK(ck_pick_success(held, 2));
    /* Latencies of more than CK_MAX_WAIT_MS (24 h) are refused naming the argument; the pick
     * is freed all the same (valgrind would report it otherwise). */
    ck_pick *q = NULL;
    CHECK_OK(ck_cluster_pick(c, NULL, 0, &q));
    if (q) CHECK_INVALID(ck_pick_success(q, CK_MAX_WAIT_MS + 1), "latency_ms");
    q = NULL;
    CHECK_OK(ck_cluster_pick(c, NULL, 0, &q));
    if (q) CHECK_INVALID(ck_pick_success_us(q, UINT64_MAX), "latency_us");
    q = NULL;
    CHECK_OK(ck_cluster_pick(c, NULL, 0, &q));
    if (q) CHECK_OK(ck_pick_success_us(q, (uint64_t)CK_MAX_WAIT_MS * 1000));
    CHECK_ERR(ck_cluster_remove_node(c, "c"), CK_NOT_FOUND, "\"c\"");
    CHECK_INVALID(ck_cluster_remove_node(NULL, "a"), "cluster");
    CHECK_INVALID(ck_cluster_remove_node(c, NULL), "id");
    CHECK_INVALID(ck_cluster_remove_node(c, "\xff"), "id");
    count_picks(c, 4, counts);
    CHECK(counts[2] == 0 && counts[0] == 2 && counts[1] == 2);
    /* A node id can be reused once removed. */
    CHECK_OK(ck_cluster_add_node(c, "c", "127.0.0.3", 8004, 0, NULL, NULL));
    CHECK(ck_cluster_len(c) == 3);

    /* A pick outlives its cluster handle. */
    p = NULL;
    CHECK_OK(ck_cluster_pick(c, NULL, 0, &p));
    ck_cluster_free(c);
    CHECK(p != NULL && ck_pick_port(p) > 0);
    if (p) CHECK_OK(ck_pick_failure(p));
    ck_cluster_free(NULL); /* a no-op */

    /* Smooth weighted round robin follows the weights. */
    c = new_cluster("weighted", "weighted_round_robin");
    if (c) {
        CHECK_OK(ck_cluster_add_node(c, "a", "127.0.0.1", 1, 3, NULL, NULL));
        CHECK_OK(ck_cluster_add_node(c, "b", "127.0.0.1", 2, 1, NULL, NULL));
        count_picks(c, 40, counts);
        CHECK(counts[0] == 30 && counts[1] == 10);
        CHECK_OK(ck_cluster_set_weight(c, "b", 3));
        count_picks(c, 40, counts);
        CHECK(counts[0] == 20 && counts[1] == 20);
        ck_cluster_free(c);
    }

    /* Least connections avoids the node with a request in flight. */
    c = new_cluster("lc", "least_connections");
    if (c) {
        CHECK_OK(ck_cluster_add_node(c, "a", "127.0.0.1", 1, 0, NULL, NULL));
        CHECK_OK(ck_cluster_add_node(c, "b", "127.0.0.1", 2, 0, NULL, NULL));
        ck_pick *first = NULL, *second = NULL;
        CHECK_OK(ck_cluster_pick(c, NULL, 0, &first));
        CHECK_OK(ck_cluster_pick(c, NULL, 0, &second));
        CHECK(first && second && strcmp(ck_pick_node_id(first), ck_pick_node_id(second)) != 0);
        ck_pick_free(first);
        ck_pick_free(second);
        ck_cluster_free(c);
    }

    /* Ketama: a key stays on its node; a node leaving moves only its own keys. */
    c = new_cluster("ring", "ketama");
    if (c) {
        CHECK_OK(ck_cluster_add_node(c, "a", "127.0.0.1", 1, 0, NULL, NULL));
        CHECK_OK(ck_cluster_add_node(c, "b", "127.0.0.1", 2, 0, NULL, NULL));
        CHECK_OK(ck_cluster_add_node(c, "c", "127.0.0.1", 3, 0, NULL, NULL));
        char before[40];
        int moved_wrongly = 0, on_c = 0;
        for (int i = 0; i < 40; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%d", i);
            ck_pick *q = NULL;
            CHECK_OK(ck_cluster_pick(c, KEY(key), &q));
            before[i] = q ? ck_pick_node_id(q)[0] : '?';
            on_c += before[i] == 'c';
            ck_pick_free(q);
        }
        CHECK_OK(ck_cluster_remove_node(c, "c"));
        for (int i = 0; i < 40; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%d", i);
            ck_pick *q = NULL;
            CHECK_OK(ck_cluster_pick(c, KEY(key), &q));
            char now = q ? ck_pick_node_id(q)[0] : '?';
            if (before[i] != 'c' && now != before[i]) moved_wrongly++;
            ck_pick_free(q);
        }
        CHECK(on_c > 0);
        CHECK(moved_wrongly == 0);
        ck_cluster_free(c);
    }

    /* ck_deployment_cluster: a handle on a deployment's pool, sharing its state. */
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &dep));
    if (dep == NULL) return;
    c = SENTINEL(ck_cluster);
    CHECK_INVALID(ck_deployment_cluster(NULL, "app", &c), "dep");
    CHECK_INVALID(ck_deployment_cluster(dep, NULL, &c), "pool");
    CHECK_INVALID(ck_deployment_cluster(dep, "app", NULL), "out");
    CHECK_INVALID(ck_deployment_cluster(dep, "\xff", &c), "pool");
    CHECK_ERR(ck_deployment_cluster(dep, "nope", &c), CK_NOT_FOUND, "nope");
    CHECK(c == SENTINEL(ck_cluster));
    c = NULL;
    CHECK_OK(ck_deployment_cluster(dep, "app", &c));
    CHECK(ck_cluster_len(c) == 2);
    CHECK_OK(ck_cluster_add_node(c, "web-3", "127.0.0.3", 8083, 0, NULL, NULL));
    CHECK_OK(ck_cluster_set_health(c, "web-1", CK_DRAINING, "deploy"));
    int web1 = 0;
    for (int i = 0; i < 6; i++) {
        ck_pick *q = NULL;
        CHECK_OK(ck_deployment_pick(dep, "app", NULL, 0, &q));
        web1 += q && strcmp(ck_pick_node_id(q), "web-1") == 0;
        ck_pick_free(q);
    }
    CHECK(web1 == 0);
    /* The pool lives as long as either handle. */
    ck_deployment_free(dep);
    CHECK(ck_cluster_len(c) == 3);
    CHECK(ck_cluster_healthy_count(c) == 2);
    p = NULL;
    CHECK_OK(ck_cluster_pick(c, NULL, 0, &p));
    ck_pick_free(p);
    ck_cluster_free(c);

    CHECK(ck_cluster_len(NULL) == 0);
    CHECK(ck_cluster_healthy_count(NULL) == 0);
}

/* Reads events until one of kind `kind` about `node` (or any node if NULL) arrives within
 * the timeout; returns it (the caller frees it) or NULL. Other events are skipped. */
static ck_event *wait_event(ck_events *e, ck_event_kind kind, const char *node, int *skipped) {
    for (int i = 0; i < 50; i++) {
        ck_event *ev = NULL;
        ck_status st = ck_events_next(e, 2000, &ev);
        if (st != CK_OK) return NULL;
        if (ck_event_get_kind(ev) == kind &&
            (node == NULL || strcmp(ck_event_node_id(ev), node) == 0)) {
            return ev;
        }
        if (skipped) (*skipped)++;
        ck_event_free(ev);
    }
    return NULL;
}

static void drain(ck_events *e) {
    ck_event *ev = NULL;
    while (ck_events_next(e, 0, &ev) == CK_OK) {
        ck_event_free(ev);
        ev = NULL;
    }
}

void test_events(void) {
    ck_cluster *c = new_cluster("events", "round_robin");
    if (c == NULL) return;
    CHECK_OK(ck_cluster_add_node(c, "before", "127.0.0.1", 7000, 0, NULL, NULL));

    ck_events *e = SENTINEL(ck_events);
    CHECK_INVALID(ck_cluster_subscribe(NULL, &e), "cluster");
    CHECK_INVALID(ck_cluster_subscribe(c, NULL), "out");
    CHECK(e == SENTINEL(ck_events));
    e = NULL;
    CHECK_OK(ck_cluster_subscribe(c, &e));
    if (e == NULL) return;

    /* Nothing yet (events before the subscription are not replayed): CK_TIMEOUT, out
     * untouched, and a wait of about the timeout. */
    ck_event *ev = SENTINEL(ck_event);
    CHECK_ST(ck_events_next(e, 0, &ev), CK_TIMEOUT);
    CHECK(ev == SENTINEL(ck_event));
    uint64_t t0 = now_ms();
    CHECK_ST(ck_events_next(e, 60, &ev), CK_TIMEOUT);
    uint64_t waited = now_ms() - t0;
    CHECK(waited >= 55 && waited < 5000);
    CHECK(ev == SENTINEL(ck_event));
    CHECK_INVALID(ck_events_next(NULL, 0, &ev), "events");
    CHECK_INVALID(ck_events_next(e, 0, NULL), "out");
    CHECK(ev == SENTINEL(ck_event));
    /* Timeouts of at most CK_MAX_WAIT_MS (24 h): more is refused at once, naming timeout_ms. */
    t0 = now_ms();
    CHECK_INVALID(ck_events_next(e, CK_MAX_WAIT_MS + 1, &ev), "timeout_ms");
    CHECK_INVALID(ck_events_next(e, UINT64_MAX, &ev), "timeout_ms");
    CHECK(now_ms() - t0 < 2000);
    CHECK(ev == SENTINEL(ck_event));

    /* Added. */
    CHECK_OK(ck_cluster_add_node(c, "n1", "127.0.0.1", 7001, 0, "z1", NULL));
    ev = wait_event(e, CK_EVENT_ADDED, "n1", NULL);
    CHECK(ev != NULL);
    if (ev) {
        ck_buf *json = NULL;
        CHECK_OK(ck_event_json(ev, &json));
        CHECK(buf_has(json, "\"kind\":\"added\""));
        CHECK(buf_has(json, "n1"));
        ck_buf_free(json);
        CHECK(ck_event_old_health(ev) == CK_HEALTHY && ck_event_new_health(ev) == CK_HEALTHY);
        CHECK(ck_event_message(ev) != NULL);
        ck_event_free(ev);
    }

    /* Health changed, with old and new health, node id, reason and JSON. */
    CHECK_OK(ck_cluster_set_health(c, "n1", CK_UNHEALTHY, "disk full"));
    ev = wait_event(e, CK_EVENT_HEALTH_CHANGED, "n1", NULL);
    CHECK(ev != NULL);
    if (ev) {
        CHECK(strcmp(ck_event_node_id(ev), "n1") == 0);
        CHECK(ck_event_old_health(ev) == CK_HEALTHY);
        CHECK(ck_event_new_health(ev) == CK_UNHEALTHY);
        CHECK(ck_event_message(ev) && strstr(ck_event_message(ev), "disk full") != NULL);
        ck_buf *json = SENTINEL(ck_buf);
        CHECK_INVALID(ck_event_json(NULL, &json), "event");
        CHECK_INVALID(ck_event_json(ev, NULL), "out");
        CHECK(json == SENTINEL(ck_buf));
        json = NULL;
        CHECK_OK(ck_event_json(ev, &json));
        CHECK(json != NULL && ck_buf_data(json)[0] == '{');
        CHECK(buf_has(json, "\"kind\":\"health_changed\""));
        CHECK(buf_has(json, "\"node\":{")); /* the node, as in ck_cluster_nodes */
        CHECK(buf_has(json, "\"id\":\"n1\""));
        CHECK(buf_has(json, "\"old_health\":\"healthy\""));
        CHECK(buf_has(json, "\"new_health\":\"unhealthy\""));
        CHECK(buf_has(json, "disk full"));
        ck_buf_free(json);
        ck_event_free(ev);
    }
    CHECK_OK(ck_cluster_set_health(c, "n1", CK_DRAINING, "drain"));
    ev = wait_event(e, CK_EVENT_HEALTH_CHANGED, "n1", NULL);
    CHECK(ev && ck_event_old_health(ev) == CK_UNHEALTHY && ck_event_new_health(ev) == CK_DRAINING);
    ck_event_free(ev);
    CHECK_OK(ck_cluster_set_health(c, "n1", CK_HEALTHY, NULL));
    ev = wait_event(e, CK_EVENT_HEALTH_CHANGED, "n1", NULL);
    CHECK(ev && ck_event_old_health(ev) == CK_DRAINING && ck_event_new_health(ev) == CK_HEALTHY);
    ck_event_free(ev);

    /* Updated (weight) and removed. */
    CHECK_OK(ck_cluster_set_weight(c, "n1", 5));
    ev = wait_event(e, CK_EVENT_UPDATED, "n1", NULL);
    CHECK(ev != NULL);
    if (ev) {
        ck_buf *json = NULL;
        CHECK_OK(ck_event_json(ev, &json));
        CHECK(buf_has(json, "\"kind\":\"updated\""));
        ck_buf_free(json);
        ck_event_free(ev);
    }
    CHECK_OK(ck_cluster_remove_node(c, "n1"));
    ev = wait_event(e, CK_EVENT_REMOVED, "n1", NULL);
    CHECK(ev != NULL);
    if (ev) {
        ck_buf *json = NULL;
        CHECK_OK(ck_event_json(ev, &json));
        CHECK(buf_has(json, "\"kind\":\"removed\""));
        ck_buf_free(json);
        ck_event_free(ev);
    }

    /* Panic: the last healthy node going down puts the pool in panic mode. */
    CHECK_OK(ck_cluster_set_health(c, "before", CK_UNHEALTHY, "last one"));
    ev = wait_event(e, CK_EVENT_PANIC_CHANGED, NULL, NULL);
    CHECK(ev != NULL);
    if (ev) {
        CHECK(ck_event_node_id(ev) != NULL && ck_event_node_id(ev)[0] == '\0');
        ck_buf *json = NULL;
        CHECK_OK(ck_event_json(ev, &json));
        CHECK(buf_has(json, "\"kind\":\"panic_changed\""));
        CHECK(buf_has(json, "\"active\":true"));
        ck_buf_free(json);
        ck_event_free(ev);
    }
    CHECK_OK(ck_cluster_set_health(c, "before", CK_HEALTHY, NULL));
    drain(e);

    /* Two subscriptions each get every event. */
    ck_events *e2 = NULL;
    CHECK_OK(ck_cluster_subscribe(c, &e2));
    CHECK_OK(ck_cluster_add_node(c, "n2", "127.0.0.1", 7002, 0, NULL, NULL));
    ev = wait_event(e, CK_EVENT_ADDED, "n2", NULL);
    CHECK(ev != NULL);
    ck_event_free(ev);
    ev = wait_event(e2, CK_EVENT_ADDED, "n2", NULL);
    CHECK(ev != NULL);
    ck_event_free(ev);
    ck_events_free(e2);

    /* An event outlives its subscription and cluster. */
    CHECK_OK(ck_cluster_set_health(c, "n2", CK_UNHEALTHY, "kept"));
    ck_event *kept = wait_event(e, CK_EVENT_HEALTH_CHANGED, "n2", NULL);
    CHECK(kept != NULL);

    /* A reader that falls more than 1024 events behind gets one CK_EVENT_LAGGED. */
    ck_events *slow = NULL;
    CHECK_OK(ck_cluster_subscribe(c, &slow));
    for (int i = 0; i < 1100; i++) {
        ck_cluster_set_health(c, "n2", i % 2 ? CK_UNHEALTHY : CK_HEALTHY, NULL);
    }
    ev = NULL;
    CHECK_OK(ck_events_next(slow, 0, &ev));
    CHECK(ev && ck_event_get_kind(ev) == CK_EVENT_LAGGED);
    CHECK(ev && strstr(ck_event_message(ev), "missed") != NULL);
    if (ev) {
        ck_buf *json = NULL;
        CHECK_OK(ck_event_json(ev, &json));
        CHECK(buf_has(json, "\"kind\":\"lagged\""));
        CHECK(buf_has(json, "\"missed\""));
        ck_buf_free(json);
    }
    ck_event_free(ev);
    ev = NULL;
    CHECK_OK(ck_events_next(slow, 0, &ev)); /* then the events still queued */
    CHECK(ev && ck_event_get_kind(ev) != CK_EVENT_LAGGED);
    ck_event_free(ev);
    ck_events_free(slow);
    drain(e);

    /* When the cluster is gone and every event was read: CK_CLOSED. */
    ck_cluster_free(c);
    ev = SENTINEL(ck_event);
    ck_status st = CK_OK;
    for (int i = 0; i < 3000 && (st = ck_events_next(e, 100, &ev)) == CK_OK; i++) {
        ck_event_free(ev);
        ev = SENTINEL(ck_event);
    }
    CHECK_ERR(st, CK_CLOSED, "gone");
    CHECK(ev == SENTINEL(ck_event));
    ck_events_free(e);

    CHECK(kept && ck_event_get_kind(kept) == CK_EVENT_HEALTH_CHANGED);
    CHECK(kept && strcmp(ck_event_node_id(kept), "n2") == 0);
    CHECK(kept && strstr(ck_event_message(kept), "kept") != NULL);
    ck_event_free(kept);

    /* NULL accessors and frees. */
    CHECK(ck_event_get_kind(NULL) == CK_EVENT_LAGGED);
    CHECK(ck_event_node_id(NULL) == NULL);
    CHECK(ck_event_old_health(NULL) == CK_HEALTHY);
    CHECK(ck_event_new_health(NULL) == CK_HEALTHY);
    CHECK(ck_event_message(NULL) == NULL);
    ck_event_free(NULL);
    ck_events_free(NULL);

    /* A deployment's pool has events too. */
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &dep));
    if (dep) {
        ck_cluster *app = NULL;
        CHECK_OK(ck_deployment_cluster(dep, "app", &app));
        ck_events *de = NULL;
        CHECK_OK(ck_cluster_subscribe(app, &de));
        CHECK_OK(ck_cluster_set_health(app, "web-2", CK_UNHEALTHY, "from the deployment"));
        ev = wait_event(de, CK_EVENT_HEALTH_CHANGED, "web-2", NULL);
        CHECK(ev && ck_event_new_health(ev) == CK_UNHEALTHY);
        ck_event_free(ev);
        ck_events_free(de);
        ck_cluster_free(app);
        ck_deployment_free(dep);
    }
}
