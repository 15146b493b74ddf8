/*
 * Many threads on one deployment at once: picks (while membership and health change),
 * cache reads and writes, a contended lock (mutual exclusion and fencing order checked),
 * health events (each subscription must see every change exactly once, also one
 * subscription read by every thread at once) and per-thread last errors.
 */
#include "ck_test.h"

#include <pthread.h>

#define MAX_THREADS 8

struct shared {
    ck_deployment *dep;
    ck_cluster *app;
    ck_events *common; /* read by every thread at once */
    int threads;
    int rounds;
    atomic_int in_critical;
    atomic_int overlaps;
    uint64_t last_fence; /* only touched under the distributed lock */
    atomic_int fence_regressions;
    atomic_int common_health_events;
};

struct worker {
    struct shared *sh;
    int index;
    ck_events *own;
    int health_events[MAX_THREADS]; /* per node t<j>, read from this thread's subscription */
    int failures;
};

static void note(struct worker *w, bool ok, const char *what, int round) {
    if (ok) return;
    w->failures++;
    if (w->failures <= 5) {
        fprintf(stderr, "  thread %d round %d: %s failed: %s\n", w->index, round, what, ck_last_error());
    }
}

static void count_event(struct worker *w, ck_event *ev) {
    if (ck_event_get_kind(ev) != CK_EVENT_HEALTH_CHANGED) return;
    const char *id = ck_event_node_id(ev);
    if (id[0] == 't' && id[1] >= '0' && id[1] < '0' + MAX_THREADS && id[2] == '\0') {
        w->health_events[id[1] - '0']++;
    }
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct shared *sh = w->sh;
    char node[8], key[64], val[64], pool[32];
    snprintf(node, sizeof node, "t%d", w->index);
    note(w, ck_cluster_add_node(sh->app, node, "127.0.0.1", (uint16_t)(9100 + w->index), 0, NULL, NULL) == CK_OK,
         "add_node", -1);

    for (int i = 0; i < sh->rounds; i++) {
        /* Picks, with and without a key, while other threads change membership and health. */
        ck_pick *p = NULL;
        note(w, ck_deployment_pick(sh->dep, "app", NULL, 0, &p) == CK_OK && p && ck_pick_port(p) > 0,
             "pick", i);
        if (p) note(w, ck_pick_success(p, 1) == CK_OK, "pick_success", i);
        snprintf(key, sizeof key, "mt:%d:%d", w->index, i);
        p = NULL;
        note(w, ck_deployment_pick(sh->dep, "app", KEY(key), &p) == CK_OK, "key pick", i);
        ck_pick_free(p);

        /* Cache: this thread's key, and a counter every thread increments. */
        snprintf(val, sizeof val, "value %d of thread %d", i, w->index);
        note(w, ck_cache_set(sh->dep, KEY(key), KEY(val), 60000) == CK_OK, "cache_set", i);
        ck_buf *buf = NULL;
        note(w, ck_cache_get(sh->dep, KEY(key), &buf) == CK_OK && buf_is(buf, val), "cache_get", i);
        ck_buf_free(buf);
        int64_t n = 0;
        note(w, ck_cache_increment(sh->dep, KEY("mt:counter"), 1, &n) == CK_OK && n > 0, "increment", i);
        bool existed = false;
        note(w, ck_cache_delete(sh->dep, KEY(key), &existed) == CK_OK && existed, "cache_delete", i);

        /* A contended lock: nobody else inside while held, fencing tokens in order. */
        ck_lock *l = NULL;
        ck_status st = ck_lock_acquire(sh->dep, "mt:lock", 20000, 20000, &l);
        note(w, st == CK_OK, "lock_acquire", i);
        if (st == CK_OK) {
            if (atomic_fetch_add(&sh->in_critical, 1) != 0) atomic_fetch_add(&sh->overlaps, 1);
            uint64_t fence = ck_lock_fencing_token(l);
            if (fence <= sh->last_fence) atomic_fetch_add(&sh->fence_regressions, 1);
            sh->last_fence = fence;
            note(w, ck_lock_is_held(l), "lock_is_held", i);
            atomic_fetch_sub(&sh->in_critical, 1);
            note(w, ck_lock_release(l) == CK_OK, "lock_release", i);
            ck_lock_free(l);
        }

        /* Health changes of this thread's node, and events read as they come. */
        note(w, ck_cluster_set_health(sh->app, node, CK_UNHEALTHY, "thread test") == CK_OK, "set_health", i);
        note(w, ck_cluster_set_health(sh->app, node, CK_HEALTHY, NULL) == CK_OK, "set_health", i);
        ck_event *ev = NULL;
        while (ck_events_next(w->own, 0, &ev) == CK_OK) {
            count_event(w, ev);
            ck_event_free(ev);
            ev = NULL;
        }
        if (ck_events_next(sh->common, 0, &ev) == CK_OK) {
            if (ck_event_get_kind(ev) == CK_EVENT_HEALTH_CHANGED) atomic_fetch_add(&sh->common_health_events, 1);
            ck_event_free(ev);
        }

        /* The last error is per thread. */
        snprintf(pool, sizeof pool, "pool-of-%d", w->index);
        p = NULL;
        note(w, ck_deployment_pick(sh->dep, pool, NULL, 0, &p) == CK_NOT_FOUND &&
                    strstr(ck_last_error(), pool) != NULL,
             "per-thread last error", i);
    }
    return NULL;
}

void threads_suite(ck_deployment *dep, int threads, int rounds) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    struct shared sh = {0};
    sh.dep = dep;
    sh.threads = threads;
    sh.rounds = rounds;
    CHECK_OK(ck_deployment_cluster(dep, "app", &sh.app));
    CHECK_OK(ck_cluster_subscribe(sh.app, &sh.common));
    CHECK_OK(ck_cache_delete(dep, KEY("mt:counter"), NULL));
    if (sh.app == NULL || sh.common == NULL) return;

    pthread_t t[MAX_THREADS];
    struct worker w[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.sh = &sh, .index = i};
        CHECK_OK(ck_cluster_subscribe(sh.app, &w[i].own));
    }
    for (int i = 0; i < threads; i++) CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
    for (int i = 0; i < threads; i++) CHECK(pthread_join(t[i], NULL) == 0);

    for (int i = 0; i < threads; i++) {
        CHECK(w[i].failures == 0);
        if (w[i].failures) fprintf(stderr, "thread %d: %d failures\n", i, w[i].failures);
    }
    CHECK(atomic_load(&sh.overlaps) == 0);
    CHECK(atomic_load(&sh.fence_regressions) == 0);
    int64_t counter = 0;
    CHECK_OK(ck_cache_increment(dep, KEY("mt:counter"), 0, &counter));
    CHECK(counter == (int64_t)threads * rounds);

    /* Every subscription saw every health change of every thread's node exactly once. */
    int expected = 2 * rounds;
    bool exact = true;
    for (int i = 0; i < threads; i++) {
        ck_event *ev = NULL;
        while (ck_events_next(w[i].own, 0, &ev) == CK_OK) {
            CHECK(ck_event_get_kind(ev) != CK_EVENT_LAGGED);
            count_event(&w[i], ev);
            ck_event_free(ev);
            ev = NULL;
        }
        for (int j = 0; j < threads; j++) {
            if (w[i].health_events[j] != expected) {
                exact = false;
                fprintf(stderr, "  subscription %d saw %d health events of t%d, expected %d\n", i,
                        w[i].health_events[j], j, expected);
            }
        }
        ck_events_free(w[i].own);
    }
    CHECK(exact);
    ck_event *ev = NULL;
    while (ck_events_next(sh.common, 0, &ev) == CK_OK) {
        if (ck_event_get_kind(ev) == CK_EVENT_HEALTH_CHANGED) atomic_fetch_add(&sh.common_health_events, 1);
        ck_event_free(ev);
        ev = NULL;
    }
    CHECK(atomic_load(&sh.common_health_events) == threads * expected);
    ck_events_free(sh.common);

    /* Leave the pool as it was. */
    for (int i = 0; i < threads; i++) {
        char node[8];
        snprintf(node, sizeof node, "t%d", i);
        CHECK_OK(ck_cluster_remove_node(sh.app, node));
    }
    CHECK(ck_cluster_len(sh.app) == 2);
    ck_cluster_free(sh.app);
}

void test_threads(void) {
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &dep));
    if (dep == NULL) return;
    threads_suite(dep, 8, 25);
    ck_deployment_free(dep);
}
