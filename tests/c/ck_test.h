/*
 * Shared helpers of the C test suite of the clusterkit C ABI (the .c files of tests/c).
 *
 * Every check counts into one pair of counters (atomic: checks may run on worker threads);
 * main.c prints "N passed, N failed" at the end and exits non-zero on any failure.
 * A failing check prints its file, line, expression, the current context (which backend a
 * shared suite runs against) and the thread's ck_last_error().
 */
#ifndef CK_TEST_H
#define CK_TEST_H

#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clusterkit.h"

extern atomic_int ck_passed;
extern atomic_int ck_failed;
/* What the shared suites run against ("embedded", "redis", ...), shown in failures. */
extern const char *ck_context;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (cond) {                                                                      \
            atomic_fetch_add(&ck_passed, 1);                                             \
        } else {                                                                         \
            atomic_fetch_add(&ck_failed, 1);                                             \
            fprintf(stderr, "FAIL %s:%d [%s]: %s (last error: %s)\n", __FILE__, __LINE__, \
                    ck_context, #cond, ck_last_error());                                 \
        }                                                                                \
    } while (0)

/* The call returns `want`. */
#define CHECK_ST(call, want)                                                             \
    do {                                                                                 \
        ck_status st_ = (call);                                                          \
        if (st_ == (want)) {                                                             \
            atomic_fetch_add(&ck_passed, 1);                                             \
        } else {                                                                         \
            atomic_fetch_add(&ck_failed, 1);                                             \
            fprintf(stderr, "FAIL %s:%d [%s]: %s returned %s, expected %s (last error: %s)\n", \
                    __FILE__, __LINE__, ck_context, #call, ck_status_name(st_),          \
                    ck_status_name(want), ck_last_error());                              \
        }                                                                                \
    } while (0)

#define CHECK_OK(call) CHECK_ST(call, CK_OK)

/* The call returns `want` and the thread's last error mentions `needle`. */
#define CHECK_ERR(call, want, needle)                                                    \
    do {                                                                                 \
        CHECK_ST(call, want);                                                            \
        if (strstr(ck_last_error(), (needle)) != NULL) {                                 \
            atomic_fetch_add(&ck_passed, 1);                                             \
        } else {                                                                         \
            atomic_fetch_add(&ck_failed, 1);                                             \
            fprintf(stderr, "FAIL %s:%d [%s]: the message of %s does not mention \"%s\": %s\n", \
                    __FILE__, __LINE__, ck_context, #call, (needle), ck_last_error());   \
        }                                                                                \
    } while (0)

/* A NULL (or bad) argument: CK_INVALID_ARGUMENT with a message naming it. */
#define CHECK_INVALID(call, argname) CHECK_ERR(call, CK_INVALID_ARGUMENT, argname)

/* A string literal as a (ptr, len) buffer. */
#define KEY(s) (const uint8_t *)(s), strlen(s)

/* Sentinels pre-filled into out-parameters to show a failed call left them alone; never
 * dereferenced. */
#define SENTINEL(type) ((type *)(uintptr_t)0x5e5e5e5e)

const char *ck_status_name(ck_status st);
void sleep_ms(long ms);
uint64_t now_ms(void);

/* True if `buf` (a ck_buf of text) contains `needle`. */
bool buf_has(const ck_buf *buf, const char *needle);
/* True if `buf` holds exactly the bytes of the string `s`. */
bool buf_is(const ck_buf *buf, const char *s);

/* Builds packed lists (4-byte little-endian length + bytes per entry). */
typedef struct packer {
    uint8_t *data;
    size_t len;
    size_t cap;
} packer;
void pack_bytes(packer *p, const void *bytes, size_t n);
void pack_str(packer *p, const char *s);
void pack_raw_u32(packer *p, uint32_t v); /* a bare length word, for malformed lists */
void pack_free(packer *p);

/* Reads packed lists: the next entry's bytes and length; returns false at the end or when
 * the list is malformed. An absent value (length 0xFFFFFFFF) gives *data NULL. */
typedef struct unpacker {
    const uint8_t *data;
    size_t len;
    size_t pos;
} unpacker;
bool unpack_next(unpacker *u, const uint8_t **data, uint32_t *n);

/* The embedded test deployment's config (pools "app" and "ring", a namespace, a short
 * session lock wait). */
extern const char *EMBEDDED_CONFIG;

/* Ports of the private redis-server processes started by tests/c/run, from the environment:
 * CK_TEST_REDIS_CACHE (two cache shards), CK_TEST_REDIS_LOCKS (three Redlock masters),
 * CK_TEST_REDIS_DEAD (a loopback port nothing listens on). Missing variables are a failure:
 * the Redis tests never skip. Returns false (after a loud failure) if they are missing. */
bool redis_ports(int cache[2], int locks[3], int *dead);
/* A config for the Redis-backed deployment: cache sharded (ketama) over the two cache
 * shards under `ns`, Redlock over the three masters, sessions with lock_wait 200ms, and the
 * "app" pool. Written to `out` (size `cap`). */
void redis_config(char *out, size_t cap, const char *ns);

/* Suites shared by every backend (run against the embedded and the Redis deployments). */
void cache_suite(ck_deployment *dep);
void reader_suite(ck_deployment *dep);
void lock_suite(ck_deployment *dep);
void session_suite(ck_deployment *dep, ck_deployment *other_handle);
/* Sessions whose lock outlives its lock_ttl (the deployment has lock_ttl = "150ms"). */
void session_lock_lost_suite(ck_deployment *dep);
/* Many threads on one deployment: picks, cache, locks and events at once. */
void threads_suite(ck_deployment *dep, int threads, int rounds);

/* Test groups. */
void test_version(void);
void test_deployment(void);
void test_deployment_pick(void);
void test_metrics(void);
void test_cluster(void);
void test_events(void);
void test_embedded_backends(void);
void test_threads(void);
void test_redis(void);
void test_fork(void);
void test_secure(void);
void test_monitoring(void);
void test_queue(void);
void test_etcd(void);

#endif /* CK_TEST_H */
