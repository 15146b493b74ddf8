/*
 * C tests of the clusterkit C ABI (include/clusterkit.h). Built with
 * -Wall -Wextra -Werror and run under valgrind by tests/c/run. Ends with the line
 * "N passed, N failed" and exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clusterkit.h"

static int passed = 0;
static int failed = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            passed++;                                                            \
        } else {                                                                 \
            failed++;                                                            \
            fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__,      \
                    __LINE__, #cond, ck_last_error());                           \
        }                                                                        \
    } while (0)

/* The status is `want` and the thread's last error mentions `needle`. */
#define CHECK_ERR(call, want, needle)                                            \
    do {                                                                         \
        ck_status st_ = (call);                                                  \
        CHECK(st_ == (want));                                                    \
        CHECK(strstr(ck_last_error(), (needle)) != NULL);                        \
    } while (0)

#define KEY(s) (const uint8_t *)(s), strlen(s)

static const char *CONFIG =
    "[pools.app]\n"
    "strategy = \"round_robin\"\n"
    "nodes = [\n"
    "  { id = \"web-1\", host = \"127.0.0.1\", port = 8081 },\n"
    "  { id = \"web-2\", host = \"127.0.0.2\", port = 8082 },\n"
    "]\n"
    "[pools.ring]\n"
    "strategy = \"ketama\"\n"
    "nodes = [\n"
    "  { id = \"r1\", host = \"10.0.0.1\", port = 6379 },\n"
    "  { id = \"r2\", host = \"10.0.0.2\", port = 6379 },\n"
    "  { id = \"r3\", host = \"10.0.0.3\", port = 6379 },\n"
    "]\n"
    "[cache]\n"
    "namespace = \"ctest\"\n";

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_version(void) {
    const char *v = ck_version();
    CHECK(v != NULL && strlen(v) >= 5 && v[0] >= '0' && v[0] <= '9');
    uint32_t abi = ck_abi_version();
    CHECK(abi >> 16 == CK_ABI_MAJOR);
    CHECK(abi >= (uint32_t)CK_ABI_VERSION);
    /* No failure yet on this thread: the message is empty, never NULL. */
    CHECK(ck_last_error() != NULL && ck_last_error()[0] == '\0');
}

static void test_deployment_new(void) {
    ck_deployment *sentinel = (ck_deployment *)&passed; /* never dereferenced */
    ck_deployment *dep = sentinel;

    CHECK_ERR(ck_deployment_new(NULL, &dep), CK_INVALID_ARGUMENT, "config");
    CHECK(dep == sentinel);
    CHECK_ERR(ck_deployment_new("", NULL), CK_INVALID_ARGUMENT, "out");
    CHECK_ERR(ck_deployment_new("a = \"\xff\xfe\"", &dep), CK_INVALID_ARGUMENT, "UTF-8");
    CHECK(dep == sentinel);
    /* A bad value: the message names the field path. */
    CHECK_ERR(ck_deployment_new("[pools.app]\nnodes = [ { id = \"a\", host = \"h\", port = 0 } ]\n",
                                &dep),
              CK_INVALID_ARGUMENT, "pools.app.nodes[0].port");
    CHECK(dep == sentinel);
    CHECK_ERR(ck_deployment_new("{\"pools\": {\"app\": {\"strategy\": \"fastest\"}}}", &dep),
              CK_INVALID_ARGUMENT, "pools.app");
    CHECK_ERR(ck_deployment_new("{ not json", &dep), CK_INVALID_ARGUMENT, "invalid");
    CHECK(dep == sentinel);

    /* Empty document: everything embedded. */
    dep = NULL;
    CHECK(ck_deployment_new("", &dep) == CK_OK);
    CHECK(dep != NULL);
    ck_deployment_free(dep);
    /* JSON works too. */
    dep = NULL;
    CHECK(ck_deployment_new("{\"cache\": {\"namespace\": \"j\"}}", &dep) == CK_OK);
    CHECK(dep != NULL);
    ck_deployment_free(dep);
    ck_deployment_free(NULL);
}

static void test_pick(ck_deployment *dep) {
    ck_pick *sentinel = (ck_pick *)&passed;
    ck_pick *p = NULL;

    /* Round robin alternates over both nodes; accessors match the config. */
    int seen1 = 0, seen2 = 0;
    for (int i = 0; i < 4; i++) {
        p = NULL;
        CHECK(ck_deployment_pick(dep, "app", NULL, 0, &p) == CK_OK);
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
        if (i == 0) CHECK(ck_pick_success(p, 3) == CK_OK);
        else if (i == 1) CHECK(ck_pick_failure(p) == CK_OK);
        else ck_pick_free(p);
    }
    CHECK(seen1 == 2 && seen2 == 2);

    /* A key pick on a hashing pool is stable; key length 0 means no key. */
    ck_pick *a = NULL, *b = NULL;
    CHECK(ck_deployment_pick(dep, "ring", KEY("user:42"), &a) == CK_OK);
    CHECK(ck_deployment_pick(dep, "ring", KEY("user:42"), &b) == CK_OK);
    CHECK(a && b && strcmp(ck_pick_node_id(a), ck_pick_node_id(b)) == 0);
    CHECK(a && b && ck_pick_port(a) == 6379);
    ck_pick_free(a);
    ck_pick_free(b);
    p = NULL;
    CHECK(ck_deployment_pick(dep, "ring", (const uint8_t *)"ignored", 0, &p) == CK_OK);
    ck_pick_free(p);

    /* Error paths; the out-parameter is untouched. */
    p = sentinel;
    CHECK_ERR(ck_deployment_pick(dep, "nope", NULL, 0, &p), CK_NOT_FOUND, "nope");
    CHECK(p == sentinel);
    CHECK_ERR(ck_deployment_pick(NULL, "app", NULL, 0, &p), CK_INVALID_ARGUMENT, "dep");
    CHECK_ERR(ck_deployment_pick(dep, NULL, NULL, 0, &p), CK_INVALID_ARGUMENT, "pool");
    CHECK_ERR(ck_deployment_pick(dep, "app", NULL, 0, NULL), CK_INVALID_ARGUMENT, "out");
    CHECK_ERR(ck_deployment_pick(dep, "ring", NULL, 5, &p), CK_INVALID_ARGUMENT, "key");
    CHECK_ERR(ck_deployment_pick(dep, "\xc3\x28", NULL, 0, &p), CK_INVALID_ARGUMENT, "UTF-8");
    CHECK(p == sentinel);
    CHECK_ERR(ck_pick_success(NULL, 1), CK_INVALID_ARGUMENT, "pick");
    CHECK_ERR(ck_pick_failure(NULL), CK_INVALID_ARGUMENT, "pick");
    CHECK(ck_pick_node_id(NULL) == NULL);
    CHECK(ck_pick_host(NULL) == NULL);
    CHECK(ck_pick_port(NULL) == 0);
    ck_pick_free(NULL);

    /* A pick outlives its deployment. */
    ck_deployment *tmp = NULL;
    CHECK(ck_deployment_new(CONFIG, &tmp) == CK_OK);
    p = NULL;
    CHECK(ck_deployment_pick(tmp, "app", NULL, 0, &p) == CK_OK);
    ck_deployment_free(tmp);
    CHECK(p && strncmp(ck_pick_node_id(p), "web-", 4) == 0);
    CHECK(ck_pick_success(p, 1) == CK_OK);

    /* An embedded deployment has no pools. */
    ck_deployment *emb = NULL;
    CHECK(ck_deployment_new("", &emb) == CK_OK);
    p = sentinel;
    CHECK_ERR(ck_deployment_pick(emb, "app", NULL, 0, &p), CK_NOT_FOUND, "app");
    CHECK(p == sentinel);
    ck_deployment_free(emb);
}

static void test_cache(ck_deployment *dep) {
    ck_buf *sentinel = (ck_buf *)&passed;
    ck_buf *buf = sentinel;
    bool existed = true;

    CHECK_ERR(ck_cache_get(dep, KEY("missing"), &buf), CK_NOT_FOUND, "");
    CHECK(buf == sentinel);

    /* Binary values round-trip, NUL bytes included. */
    const uint8_t value[] = {'a', 0, 'b', 0xff, 0};
    CHECK(ck_cache_set(dep, KEY("k1"), value, sizeof value, 0) == CK_OK);
    buf = NULL;
    CHECK(ck_cache_get(dep, KEY("k1"), &buf) == CK_OK);
    CHECK(buf != NULL && ck_buf_len(buf) == sizeof value);
    CHECK(buf != NULL && memcmp(ck_buf_data(buf), value, sizeof value) == 0);
    ck_buf_free(buf);

    /* Overwrite; an empty value (NULL, 0) is a value. */
    CHECK(ck_cache_set(dep, KEY("k1"), NULL, 0, 0) == CK_OK);
    buf = NULL;
    CHECK(ck_cache_get(dep, KEY("k1"), &buf) == CK_OK);
    CHECK(buf != NULL && ck_buf_len(buf) == 0);
    ck_buf_free(buf);

    /* Delete reports whether the key existed; `existed` may be NULL. */
    CHECK(ck_cache_delete(dep, KEY("k1"), &existed) == CK_OK);
    CHECK(existed == true);
    CHECK(ck_cache_delete(dep, KEY("k1"), &existed) == CK_OK);
    CHECK(existed == false);
    CHECK(ck_cache_delete(dep, KEY("k1"), NULL) == CK_OK);
    buf = sentinel;
    CHECK(ck_cache_get(dep, KEY("k1"), &buf) == CK_NOT_FOUND);
    CHECK(buf == sentinel);

    /* TTL in milliseconds. */
    CHECK(ck_cache_set(dep, KEY("short"), KEY("v"), 50) == CK_OK);
    CHECK(ck_cache_set(dep, KEY("long"), KEY("v"), 60000) == CK_OK);
    sleep_ms(150);
    CHECK(ck_cache_get(dep, KEY("short"), &buf) == CK_NOT_FOUND);
    buf = NULL;
    CHECK(ck_cache_get(dep, KEY("long"), &buf) == CK_OK);
    ck_buf_free(buf);

    /* Error paths. */
    static uint8_t big[4097];
    memset(big, 'x', sizeof big);
    buf = sentinel;
    existed = true;
    CHECK_ERR(ck_cache_get(dep, (const uint8_t *)"", 0, &buf), CK_INVALID_ARGUMENT, "key");
    CHECK_ERR(ck_cache_get(dep, big, sizeof big, &buf), CK_INVALID_ARGUMENT, "key");
    CHECK_ERR(ck_cache_get(NULL, KEY("k"), &buf), CK_INVALID_ARGUMENT, "dep");
    CHECK_ERR(ck_cache_get(dep, KEY("k"), NULL), CK_INVALID_ARGUMENT, "out");
    CHECK_ERR(ck_cache_get(dep, NULL, 3, &buf), CK_INVALID_ARGUMENT, "key");
    CHECK(buf == sentinel);
    CHECK_ERR(ck_cache_set(dep, NULL, 0, KEY("v"), 0), CK_INVALID_ARGUMENT, "key");
    CHECK_ERR(ck_cache_set(dep, big, sizeof big, KEY("v"), 0), CK_INVALID_ARGUMENT, "key");
    CHECK_ERR(ck_cache_set(NULL, KEY("k"), KEY("v"), 0), CK_INVALID_ARGUMENT, "dep");
    CHECK_ERR(ck_cache_set(dep, KEY("k"), NULL, 4, 0), CK_INVALID_ARGUMENT, "value");
    /* Values are limited to 16 MiB by default. */
    size_t huge_len = ((size_t)16 << 20) + 1;
    uint8_t *huge = calloc(huge_len, 1);
    CHECK(huge != NULL);
    if (huge) {
        CHECK_ERR(ck_cache_set(dep, KEY("huge"), huge, huge_len, 0), CK_INVALID_ARGUMENT, "value");
        /* A large value that fits (the embedded cache takes up to ~8 MiB per entry). */
        huge[0] = 7;
        huge[(1 << 20) - 1] = 9;
        CHECK(ck_cache_set(dep, KEY("huge"), huge, 1 << 20, 0) == CK_OK);
        buf = NULL;
        CHECK(ck_cache_get(dep, KEY("huge"), &buf) == CK_OK);
        CHECK(buf != NULL && ck_buf_len(buf) == 1 << 20);
        CHECK(buf != NULL && ck_buf_data(buf)[0] == 7 && ck_buf_data(buf)[(1 << 20) - 1] == 9);
        ck_buf_free(buf);
        CHECK(ck_cache_delete(dep, KEY("huge"), NULL) == CK_OK);
        free(huge);
    }
    buf = sentinel;
    CHECK_ERR(ck_cache_delete(dep, (const uint8_t *)"", 0, &existed), CK_INVALID_ARGUMENT, "key");
    CHECK_ERR(ck_cache_delete(NULL, KEY("k"), &existed), CK_INVALID_ARGUMENT, "dep");
    CHECK(existed == true);
    CHECK(ck_buf_data(NULL) == NULL);
    CHECK(ck_buf_len(NULL) == 0);
    ck_buf_free(NULL);

    /* Two deployments have separate embedded caches. */
    ck_deployment *other = NULL;
    CHECK(ck_deployment_new("", &other) == CK_OK);
    CHECK(ck_cache_set(dep, KEY("mine"), KEY("1"), 0) == CK_OK);
    CHECK(ck_cache_get(other, KEY("mine"), &buf) == CK_NOT_FOUND);
    ck_deployment_free(other);
}

/* ---- several threads at once ------------------------------------------------------------ */

#define THREADS 6
#define ROUNDS 200

struct worker {
    ck_deployment *dep;
    int index;
    int failures;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    char key[64], val[64], pool[32];
    for (int i = 0; i < ROUNDS; i++) {
        ck_pick *p = NULL;
        if (ck_deployment_pick(w->dep, "app", NULL, 0, &p) != CK_OK ||
            strncmp(ck_pick_node_id(p), "web-", 4) != 0) {
            w->failures++;
        }
        if (p && (i % 2 ? ck_pick_success(p, 1) : ck_pick_failure(p)) != CK_OK) w->failures++;

        snprintf(key, sizeof key, "t%d-%d", w->index, i);
        snprintf(val, sizeof val, "value %d of thread %d", i, w->index);
        p = NULL;
        if (ck_deployment_pick(w->dep, "ring", KEY(key), &p) != CK_OK) w->failures++;
        ck_pick_free(p);

        if (ck_cache_set(w->dep, KEY(key), KEY(val), 0) != CK_OK) w->failures++;
        ck_buf *buf = NULL;
        if (ck_cache_get(w->dep, KEY(key), &buf) != CK_OK || ck_buf_len(buf) != strlen(val) ||
            memcmp(ck_buf_data(buf), val, strlen(val)) != 0) {
            w->failures++;
        }
        ck_buf_free(buf);
        /* A key every thread writes: contention on one entry. */
        if (ck_cache_set(w->dep, KEY("shared"), KEY(val), 0) != CK_OK) w->failures++;
        bool existed = false;
        if (ck_cache_delete(w->dep, KEY(key), &existed) != CK_OK || !existed) w->failures++;

        /* The last error is per thread. */
        snprintf(pool, sizeof pool, "pool-of-%d", w->index);
        if (ck_deployment_pick(w->dep, pool, NULL, 0, &p) != CK_NOT_FOUND ||
            strstr(ck_last_error(), pool) == NULL) {
            w->failures++;
        }
    }
    return NULL;
}

static void test_threads(ck_deployment *dep) {
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){dep, i, 0};
        CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(t[i], NULL) == 0);
        CHECK(w[i].failures == 0);
        if (w[i].failures) fprintf(stderr, "thread %d: %d failures\n", i, w[i].failures);
    }
    ck_buf *buf = NULL;
    CHECK(ck_cache_get(dep, KEY("shared"), &buf) == CK_OK);
    CHECK(buf && strncmp((const char *)ck_buf_data(buf), "value ", 6) == 0);
    ck_buf_free(buf);
}

int main(void) {
    test_version();
    test_deployment_new();

    ck_deployment *dep = NULL;
    CHECK(ck_deployment_new(CONFIG, &dep) == CK_OK);
    if (dep == NULL) {
        fprintf(stderr, "cannot build the test deployment: %s\n", ck_last_error());
        printf("%d passed, %d failed\n", passed, failed + 1);
        return 1;
    }
    test_pick(dep);
    test_cache(dep);
    test_threads(dep);
    ck_deployment_free(dep);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
