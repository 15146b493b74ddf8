/*
 * etcd discovery and locks (issue #17) through the config document alone: the C ABI has no
 * etcd logic, the core does it. tests/c/run starts a private 3-member etcd
 * (scripts/etcd-cluster) and passes its client endpoints in CK_TEST_ETCD.
 */
#include "ck_test.h"

#include <stdlib.h>

static int etcdctl(const char *eps, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --command-timeout=5s --endpoints=%s %s >/dev/null 2>&1", eps,
             args);
    return system(cmd);
}

static bool wait_len(ck_cluster *c, size_t want) {
    for (int i = 0; i < 1000; i++) {
        if (ck_cluster_len(c) == want) return true;
        sleep_ms(20);
    }
    return false;
}

void test_etcd(void) {
    const char *eps = getenv("CK_TEST_ETCD");
    if (eps == NULL || *eps == '\0') {
        CHECK(!"CK_TEST_ETCD missing: run the suite through tests/c/run, which starts etcd");
        return;
    }
    /* ["a","b","c"] from a,b,c */
    char list[512] = "[\"";
    size_t n = 2;
    for (const char *p = eps; *p && n < sizeof list - 4; p++) {
        if (*p == ',') {
            memcpy(list + n, "\",\"", 3);
            n += 3;
        } else {
            list[n++] = *p;
        }
    }
    memcpy(list + n, "\"]", 3);

    /* A node registered the way the core's EtcdRegistry does: JSON under <prefix><id>. */
    CHECK(etcdctl(eps, "put /c/web/n1 '{\"id\":\"n1\",\"host\":\"127.0.0.1\",\"port\":8001}'") == 0);
    CHECK(etcdctl(eps, "put /c/web/junk '{not json'") == 0);

    char config[2048];
    snprintf(config, sizeof config,
             "{\"pools\":{\"web\":{\"strategy\":\"round_robin\",\"discovery\":{\"etcd\":{\"endpoints\":%s,"
             "\"prefix\":\"/c/web/\",\"ttl\":\"2s\"}}}},"
             "\"locks\":{\"etcd\":{\"endpoints\":%s,\"prefix\":\"/c/locks/\"}}}",
             list, list);
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(config, &dep));
    if (dep == NULL) return;
    ck_cluster *web = NULL;
    CHECK_OK(ck_deployment_cluster(dep, "web", &web));
    if (web != NULL) {
        CHECK(wait_len(web, 1));
        CHECK(etcdctl(eps, "del /c/web/n1") == 0);
        CHECK(wait_len(web, 0));
        ck_cluster_free(web);
    }

    /* Locks: the same calls as on Redis; the fencing token is etcd's create revision. */
    ck_lock *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(ck_lock_acquire(dep, "job", 5000, 0, &a));
    if (a != NULL) {
        uint64_t f1 = ck_lock_fencing_token(a);
        CHECK(f1 > 0);
        CHECK(ck_lock_is_held(a));
        CHECK_ST(ck_lock_acquire(dep, "job", 5000, 0, &b), CK_CONFLICT);
        CHECK(b == NULL);
        CHECK_OK(ck_lock_release(a));
        CHECK_OK(ck_lock_acquire(dep, "job", 5000, 2000, &c));
        if (c != NULL) {
            CHECK(ck_lock_fencing_token(c) > f1);
            CHECK_OK(ck_lock_release(c));
            ck_lock_free(c);
        }
        ck_lock_free(a);
    }
    ck_deployment_free(dep);

    /* Bad input names the field. */
    ck_deployment *bad = NULL;
    CHECK_ERR(ck_deployment_new("{\"locks\":{\"etcd\":{\"endpoints\":[\"nohost\"]}}}", &bad), CK_INVALID_ARGUMENT,
              "locks.etcd.endpoints[0]");
    CHECK(bad == NULL);
}
