/*
 * clusterkit from C: a two-node application cluster, picks with outcome reports, health
 * events, the cache, a lock with its fencing token and a session round trip. Everything
 * runs embedded in this process (no server needed).
 *
 * Build (with clusterkit installed, or PKG_CONFIG_PATH pointing at a staged copy made by
 * scripts/stage-lib):
 *
 *     cc -std=c11 -Wall -o quickstart quickstart.c $(pkg-config --cflags --libs clusterkit)
 *
 * or `make` in this folder. Run: ./quickstart
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <clusterkit.h>

/* One config document describes the whole deployment (TOML or JSON). */
static const char *CONFIG =
    "[pools.app]\n"
    "strategy = \"round_robin\"\n"
    "nodes = [\n"
    "  { id = \"web-1\", host = \"127.0.0.1\", port = 8081 },\n"
    "  { id = \"web-2\", host = \"127.0.0.1\", port = 8082 },\n"
    "]\n"
    "[cache]\n"
    "namespace = \"quickstart\"\n"
    "[sessions]\n"
    "idle_timeout = \"30m\"\n";

/* Every fallible call returns a ck_status; ck_last_error() says what went wrong. */
static void check(ck_status st, const char *what) {
    if (st != CK_OK) {
        fprintf(stderr, "%s failed (status %d): %s\n", what, (int)st, ck_last_error());
        exit(1);
    }
}

int main(void) {
    /* The library we run against must speak the ABI this program was built for. */
    if (ck_abi_version() >> 16 != CK_ABI_MAJOR || ck_abi_version() < (uint32_t)CK_ABI_VERSION) {
        fprintf(stderr, "incompatible libclusterkit %s\n", ck_version());
        return 1;
    }
    printf("clusterkit %s\n", ck_version());

    ck_deployment *dep = NULL;
    check(ck_deployment_new(CONFIG, &dep), "ck_deployment_new");

    /* --- Load balancing: pick a node, send the request, report how it went. ------------ */
    for (int i = 0; i < 4; i++) {
        ck_pick *pick = NULL;
        check(ck_deployment_pick(dep, "app", NULL, 0, &pick), "ck_deployment_pick");
        printf("request %d -> %s (%s:%u)\n", i, ck_pick_node_id(pick), ck_pick_host(pick),
               (unsigned)ck_pick_port(pick));
        /* ...send the request here... then report its outcome, which also frees the pick. */
        if (i == 3) check(ck_pick_failure(pick), "ck_pick_failure");
        else check(ck_pick_success(pick, 12 /* ms */), "ck_pick_success");
    }

    /* --- Membership and health events. --------------------------------------------------- */
    ck_cluster *app = NULL;
    check(ck_deployment_cluster(dep, "app", &app), "ck_deployment_cluster");
    ck_events *events = NULL;
    check(ck_cluster_subscribe(app, &events), "ck_cluster_subscribe");
    check(ck_cluster_set_health(app, "web-2", CK_DRAINING, "deploying v2"), "ck_cluster_set_health");
    ck_event *ev = NULL;
    check(ck_events_next(events, 1000, &ev), "ck_events_next");
    if (ck_event_get_kind(ev) == CK_EVENT_HEALTH_CHANGED) {
        printf("event: %s went from health %d to %d (%s)\n", ck_event_node_id(ev),
               (int)ck_event_old_health(ev), (int)ck_event_new_health(ev), ck_event_message(ev));
    }
    ck_buf *json = NULL;
    check(ck_event_json(ev, &json), "ck_event_json");
    printf("event as JSON: %.*s\n", (int)ck_buf_len(json), (const char *)ck_buf_data(json));
    ck_buf_free(json);
    ck_event_free(ev);
    printf("healthy nodes while web-2 drains: %zu of %zu\n", ck_cluster_healthy_count(app),
           ck_cluster_len(app));
    check(ck_cluster_set_health(app, "web-2", CK_HEALTHY, NULL), "ck_cluster_set_health");
    /* Nothing else happened: ck_events_next times out. */
    ev = NULL;
    if (ck_events_next(events, 0, &ev) == CK_OK) ck_event_free(ev); /* the "healthy" event */
    if (ck_events_next(events, 10, &ev) == CK_TIMEOUT) printf("no more events\n");
    ck_events_free(events);
    ck_cluster_free(app);

    /* --- Cache: byte strings in, library-owned buffers out. ------------------------------ */
    const char *key = "user:42:name";
    check(ck_cache_set(dep, (const uint8_t *)key, strlen(key), (const uint8_t *)"Ada", 3, 60000),
          "ck_cache_set");
    ck_buf *value = NULL;
    check(ck_cache_get(dep, (const uint8_t *)key, strlen(key), &value), "ck_cache_get");
    printf("cache: %s = %.*s\n", key, (int)ck_buf_len(value), (const char *)ck_buf_data(value));
    ck_buf_free(value);
    if (ck_cache_get(dep, (const uint8_t *)"nope", 4, &value) == CK_NOT_FOUND) printf("cache: nope is a miss\n");
    int64_t visits = 0;
    check(ck_cache_increment(dep, (const uint8_t *)"visits", 6, 1, &visits), "ck_cache_increment");
    printf("cache: visits = %lld\n", (long long)visits);

    /* --- Lock: hold it, pass its fencing token to the resource, release it. ------------- */
    ck_lock *lock = NULL;
    check(ck_lock_acquire(dep, "invoice:7", 10000 /* ttl ms */, 2000 /* wait ms */, &lock),
          "ck_lock_acquire");
    printf("lock %s held: fencing token %llu, valid for %llu ms\n", ck_lock_name(lock),
           (unsigned long long)ck_lock_fencing_token(lock),
           (unsigned long long)ck_lock_validity_ms(lock));
    ck_lock *again = NULL;
    if (ck_lock_acquire(dep, "invoice:7", 10000, 0, &again) == CK_CONFLICT) {
        printf("lock: a second holder is refused (%s)\n", ck_last_error());
    }
    check(ck_lock_release(lock), "ck_lock_release");
    ck_lock_free(lock);

    /* --- Session: create, save, load by id, read a field. -------------------------------- */
    ck_session *session = NULL;
    check(ck_session_create(dep, &session), "ck_session_create");
    check(ck_session_set(session, "user", (const uint8_t *)"ada", 3), "ck_session_set");
    check(ck_session_save(dep, session), "ck_session_save");
    char id[64];
    snprintf(id, sizeof id, "%s", ck_session_id(session)); /* the cookie value */
    ck_session_free(session);

    ck_session *loaded = NULL;
    check(ck_session_load(dep, (const uint8_t *)id, strlen(id), true /* lock it */, &loaded),
          "ck_session_load");
    const uint8_t *user = NULL;
    size_t user_len = 0;
    check(ck_session_get(loaded, "user", &user, &user_len), "ck_session_get");
    printf("session %s: user = %.*s\n", id, (int)user_len, (const char *)user);
    check(ck_session_save(dep, loaded), "ck_session_save"); /* also releases the lock */
    ck_session_free(loaded);

    /* --- Metrics as JSON. ----------------------------------------------------------------- */
    ck_buf *metrics = NULL;
    check(ck_deployment_metrics(dep, &metrics), "ck_deployment_metrics");
    printf("metrics: %zu bytes of JSON\n", ck_buf_len(metrics));
    ck_buf_free(metrics);

    ck_deployment_free(dep);
    return 0;
}
