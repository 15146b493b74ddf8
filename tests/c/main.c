/*
 * C tests of the clusterkit C ABI (include/clusterkit.h). Built with -Wall -Wextra -Werror
 * and run (under valgrind) by tests/c/run, which also starts the private redis-server
 * processes the Redis groups use. Ends with the line "N passed, N failed" and exits
 * non-zero on any failure.
 *
 *   test_clusterkit              every group
 *   test_clusterkit GROUP...     only those groups (names as listed by --list)
 *   test_clusterkit --no-fork    every group but the fork test (tests/c/run runs that one
 *                                under valgrind without leak checking: a forked child has
 *                                none of its parent's threads, so what only their stacks
 *                                referenced looks lost there)
 */
#include "ck_test.h"

#include <time.h>

atomic_int ck_passed = 0;
atomic_int ck_failed = 0;
const char *ck_context = "-";

const char *EMBEDDED_CONFIG =
    "[pools.app]\n"
    "strategy = \"round_robin\"\n"
    "nodes = [\n"
    "  { id = \"web-1\", host = \"127.0.0.1\", port = 8081 },\n"
    "  { id = \"web-2\", host = \"127.0.0.2\", port = 8082 },\n"
    "]\n"
    "[pools.ring]\n"
    "strategy = \"ketama\"\n"
    "nodes = [\n"
    "  { id = \"r1\", host = \"127.0.1.1\", port = 6379 },\n"
    "  { id = \"r2\", host = \"127.0.1.2\", port = 6379 },\n"
    "  { id = \"r3\", host = \"127.0.1.3\", port = 6379 },\n"
    "]\n"
    "[cache]\n"
    "namespace = \"ctest\"\n"
    "[sessions]\n"
    "lock_wait = \"200ms\"\n"
    "lock_ttl = \"5s\"\n";

const char *ck_status_name(ck_status st) {
    switch (st) {
    case CK_OK: return "CK_OK";
    case CK_NOT_FOUND: return "CK_NOT_FOUND";
    case CK_INVALID_ARGUMENT: return "CK_INVALID_ARGUMENT";
    case CK_TIMEOUT: return "CK_TIMEOUT";
    case CK_UNAVAILABLE: return "CK_UNAVAILABLE";
    case CK_CONFLICT: return "CK_CONFLICT";
    case CK_CLOSED: return "CK_CLOSED";
    case CK_BACKEND: return "CK_BACKEND";
    case CK_INTERNAL: return "CK_INTERNAL";
    }
    return "(not a ck_status)";
}

void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool mem_has(const uint8_t *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    if (hay == NULL || m > n) return false;
    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(hay + i, needle, m) == 0) return true;
    }
    return false;
}

bool buf_has(const ck_buf *buf, const char *needle) {
    return buf != NULL && mem_has(ck_buf_data(buf), ck_buf_len(buf), needle);
}

bool buf_is(const ck_buf *buf, const char *s) {
    return buf != NULL && ck_buf_len(buf) == strlen(s) &&
           (ck_buf_len(buf) == 0 || memcmp(ck_buf_data(buf), s, strlen(s)) == 0);
}

static void pack_reserve(packer *p, size_t more) {
    if (p->len + more <= p->cap) return;
    size_t cap = p->cap ? p->cap : 64;
    while (cap < p->len + more) cap *= 2;
    uint8_t *d = realloc(p->data, cap);
    if (d == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    p->data = d;
    p->cap = cap;
}

void pack_raw_u32(packer *p, uint32_t v) {
    pack_reserve(p, 4);
    for (int i = 0; i < 4; i++) p->data[p->len++] = (uint8_t)(v >> (8 * i));
}

void pack_bytes(packer *p, const void *bytes, size_t n) {
    pack_raw_u32(p, (uint32_t)n);
    pack_reserve(p, n);
    if (n) memcpy(p->data + p->len, bytes, n);
    p->len += n;
}

void pack_str(packer *p, const char *s) { pack_bytes(p, s, strlen(s)); }

void pack_free(packer *p) {
    free(p->data);
    *p = (packer){0};
}

bool unpack_next(unpacker *u, const uint8_t **data, uint32_t *n) {
    if (u->pos + 4 > u->len) return false;
    const uint8_t *h = u->data + u->pos;
    uint32_t len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    u->pos += 4;
    if (len == 0xFFFFFFFFu) {
        *data = NULL;
        *n = len;
        return true;
    }
    if (len > u->len - u->pos) return false;
    *data = u->data + u->pos;
    *n = len;
    u->pos += len;
    return true;
}

static bool parse_ports(const char *var, int *out, int want) {
    const char *v = getenv(var);
    if (v == NULL || *v == '\0') {
        CHECK(!"Redis port variable missing: run the suite through tests/c/run, which starts redis-server");
        fprintf(stderr, "  %s is not set\n", var);
        return false;
    }
    int n = 0;
    char *end = NULL;
    const char *s = v;
    while (n < want) {
        long p = strtol(s, &end, 10);
        if (end == s || p <= 0 || p > 65535) break;
        out[n++] = (int)p;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    if (n != want) {
        CHECK(!"malformed Redis port variable");
        fprintf(stderr, "  %s=%s: expected %d ports\n", var, v, want);
        return false;
    }
    return true;
}

bool redis_ports(int cache[2], int locks[3], int *dead) {
    bool ok = parse_ports("CK_TEST_REDIS_CACHE", cache, 2);
    ok = parse_ports("CK_TEST_REDIS_LOCKS", locks, 3) && ok;
    ok = parse_ports("CK_TEST_REDIS_DEAD", dead, 1) && ok;
    return ok;
}

void redis_config(char *out, size_t cap, const char *ns) {
    int cache[2] = {0, 0}, locks[3] = {0, 0, 0}, dead = 0;
    redis_ports(cache, locks, &dead);
    snprintf(out, cap,
             "[pools.app]\n"
             "strategy = \"round_robin\"\n"
             "nodes = [ { id = \"web-1\", host = \"127.0.0.1\", port = 8081 },\n"
             "          { id = \"web-2\", host = \"127.0.0.2\", port = 8082 } ]\n"
             "[pools.cache]\n"
             "strategy = \"ketama\"\n"
             "nodes = [ { id = \"c1\", host = \"127.0.0.1\", port = %d },\n"
             "          { id = \"c2\", host = \"127.0.0.1\", port = %d } ]\n"
             "[pools.locks]\n"
             "strategy = \"round_robin\"\n"
             "nodes = [ { id = \"l1\", host = \"127.0.0.1\", port = %d },\n"
             "          { id = \"l2\", host = \"127.0.0.1\", port = %d },\n"
             "          { id = \"l3\", host = \"127.0.0.1\", port = %d } ]\n"
             "[cache]\n"
             "pool = \"cache\"\n"
             "namespace = \"%s\"\n"
             "timeout = \"2s\"\n"
             "[locks]\n"
             "pool = \"locks\"\n"
             "timeout = \"500ms\"\n"
             "[sessions]\n"
             "lock_wait = \"200ms\"\n"
             "lock_ttl = \"5s\"\n",
             cache[0], cache[1], locks[0], locks[1], locks[2], ns);
}

void test_version(void) {
    const char *v = ck_version();
    CHECK(v != NULL && strlen(v) >= 5 && v[0] >= '0' && v[0] <= '9');
    CHECK(v != NULL && strchr(v, '.') != NULL);
    uint32_t abi = ck_abi_version();
    CHECK(abi >> 16 == CK_ABI_MAJOR);
    CHECK(abi >= (uint32_t)CK_ABI_VERSION);
    CHECK((uint32_t)CK_ABI_VERSION >> 16 == (uint32_t)CK_ABI_MAJOR);
    /* No failure yet on this thread: the message is empty, never NULL. */
    CHECK(ck_last_error() != NULL && ck_last_error()[0] == '\0');
    /* A failure sets it; a later success does not clear it. */
    ck_deployment *dep = NULL;
    CHECK_ST(ck_deployment_new(NULL, &dep), CK_INVALID_ARGUMENT);
    CHECK(ck_last_error()[0] != '\0');
    CHECK(strcmp(ck_version(), v) == 0);
    CHECK(strstr(ck_last_error(), "config") != NULL);
}

struct group {
    const char *name;
    void (*run)(void);
};

static const struct group GROUPS[] = {
    {"version", test_version},
    {"deployment", test_deployment},
    {"pick", test_deployment_pick},
    {"metrics", test_metrics},
    {"monitoring", test_monitoring},
    {"cluster", test_cluster},
    {"events", test_events},
    {"embedded", test_embedded_backends},
    {"threads", test_threads},
    {"redis", test_redis},
    {"fork", test_fork},
    {"secure", test_secure},
    {"queue", test_queue},
    {"etcd", test_etcd},
};
#define NGROUPS (sizeof GROUPS / sizeof GROUPS[0])

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t g = 0; g < NGROUPS; g++) printf("%s\n", GROUPS[g].name);
        return 0;
    }
    bool no_fork = argc == 2 && strcmp(argv[1], "--no-fork") == 0;
    if (no_fork) argc = 1;
    for (int a = 1; a < argc; a++) {
        bool known = false;
        for (size_t g = 0; g < NGROUPS; g++) known |= strcmp(argv[a], GROUPS[g].name) == 0;
        if (!known) {
            fprintf(stderr, "unknown group %s (see --list)\n", argv[a]);
            return 2;
        }
    }
    for (size_t g = 0; g < NGROUPS; g++) {
        bool run = argc == 1 && !(no_fork && strcmp(GROUPS[g].name, "fork") == 0);
        for (int a = 1; a < argc; a++) run |= strcmp(argv[a], GROUPS[g].name) == 0;
        if (!run) continue;
        int before = atomic_load(&ck_failed);
        uint64_t t0 = now_ms();
        ck_context = GROUPS[g].name;
        GROUPS[g].run();
        ck_context = "-";
        printf("group %-10s %s (%llu ms)\n", GROUPS[g].name,
               atomic_load(&ck_failed) == before ? "ok" : "FAILED",
               (unsigned long long)(now_ms() - t0));
    }
    int passed = atomic_load(&ck_passed), failed = atomic_load(&ck_failed);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
