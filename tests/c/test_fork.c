/*
 * Fork safety: a process uses the library (embedded and Redis-backed caches, Redlock,
 * sessions, picks, a shared deployment), then fork()s, as PHP-FPM and Python's
 * multiprocessing do. The child keeps working with the handles it inherited (and forks a
 * grandchild that does too), exits with a status the parent checks, and the parent keeps
 * working afterwards, seeing what the child wrote to Redis.
 */
#include "ck_test.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Waits for `pid` up to `timeout_ms`; on the deadline kills it with SIGKILL — its whole
 * process group when `group` (children of this test call setpgid(0, 0), so a grandchild goes
 * with them) — reaps it and returns false. Returns true if it exited with status 0. Never
 * blocks longer than the deadline plus the reaping of a killed process. */
static bool wait_child(pid_t pid, long timeout_ms, const char *who, bool group) {
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            fprintf(stderr, "  waitpid(%s) failed: %s\n", who, strerror(errno));
            return false;
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "  %s (pid %d) did not exit within %ld ms: killing it\n", who, (int)pid, timeout_ms);
            if (group) kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return false;
        }
        sleep_ms(10);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    if (WIFEXITED(status)) fprintf(stderr, "  %s exited with status %d\n", who, WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) fprintf(stderr, "  %s was killed by signal %d\n", who, WTERMSIG(status));
    return false;
}

/* The deadline itself works: a child that hangs (here: it and its own child sleep for a
 * minute) makes wait_child fail within about the deadline, and both are gone afterwards
 * (the pipe they hold open reaches EOF), so a deadlocked child fails the suite instead of
 * hanging it. */
static void a_hung_child_fails_on_the_deadline(void) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        close(fds[0]);
        if (fork() >= 0) sleep(60); /* child and grandchild, both holding fds[1] */
        _exit(0);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return;
    }
    uint64_t t0 = now_ms();
    fprintf(stderr, "  (expected below: the deadline test kills a child that hangs on purpose)\n");
    CHECK(!wait_child(pid, 300, "hanging child", true));
    uint64_t took = now_ms() - t0;
    CHECK(took >= 290 && took < 5000);
    CHECK(kill(pid, 0) == -1 && errno == ESRCH); /* reaped */
    struct pollfd pfd = {fds[0], POLLIN, 0};
    CHECK(poll(&pfd, 1, 5000) == 1);
    char c;
    CHECK(read(fds[0], &c, 1) == 0); /* EOF: the grandchild is dead too */
    close(fds[0]);
}

/* Everything a process should still be able to do after a fork, on both deployments. */
static void keep_working(ck_deployment *emb, ck_deployment *red, const char *who) {
    char key[64], val[64];
    snprintf(key, sizeof key, "fork:%s:%d", who, (int)getpid());
    snprintf(val, sizeof val, "written by %s", who);
    ck_deployment *both[2] = {emb, red};
    for (int i = 0; i < 2; i++) {
        ck_deployment *d = both[i];
        CHECK_OK(ck_cache_set(d, KEY(key), KEY(val), 60000));
        ck_buf *buf = NULL;
        CHECK_OK(ck_cache_get(d, KEY(key), &buf));
        CHECK(buf_is(buf, val));
        ck_buf_free(buf);
        int64_t n = 0;
        CHECK_OK(ck_cache_increment(d, KEY("fork:counter"), 1, &n));
        CHECK(n > 0);
        ck_pick *p = NULL;
        CHECK_OK(ck_deployment_pick(d, "app", KEY(key), &p));
        CHECK(p && strncmp(ck_pick_node_id(p), "web-", 4) == 0);
        if (p) CHECK_OK(ck_pick_success(p, 1));
        ck_lock *l = NULL;
        char lock[64];
        snprintf(lock, sizeof lock, "fork:lock:%s", who);
        CHECK_OK(ck_lock_acquire(d, lock, 5000, 2000, &l));
        CHECK(l && ck_lock_is_held(l) && ck_lock_fencing_token(l) > 0);
        if (l) CHECK_OK(ck_lock_release(l));
        ck_lock_free(l);
    }
    ck_reader *r = NULL;
    CHECK_OK(ck_reader_new(red, 4, &r));
    CHECK(ck_reader_get(r, KEY(key)) == (int64_t)strlen(val));
    CHECK(r && ck_reader_value(r) && memcmp(ck_reader_value(r), val, strlen(val)) == 0);
    ck_reader_free(r);
}

void test_fork(void) {
    a_hung_child_fails_on_the_deadline();
    int cache[2], locks[3], dead;
    if (!redis_ports(cache, locks, &dead)) return;
    char ns[64], cfg[4096];
    snprintf(ns, sizeof ns, "ctest-fork-%d", (int)getpid());
    redis_config(cfg, sizeof cfg, ns);

    ck_deployment *emb = NULL, *red = NULL, *shared = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &emb));
    CHECK_OK(ck_deployment_new(cfg, &red));
    CHECK_OK(ck_deployment_shared("[cache]\nnamespace = \"fork-shared\"\n", &shared));
    if (emb == NULL || red == NULL || shared == NULL) {
        ck_deployment_free(emb);
        ck_deployment_free(red);
        ck_deployment_free(shared);
        return;
    }

    /* The parent uses everything first: the runtime, connections and pools exist. */
    keep_working(emb, red, "parent-before");
    CHECK_OK(ck_cache_set(emb, KEY("fork:from-parent"), KEY("p"), 0));
    CHECK_OK(ck_cache_set(red, KEY("fork:from-parent"), KEY("p"), 60000));
    CHECK_OK(ck_cache_set(shared, KEY("fork:from-parent"), KEY("p"), 0));
    ck_session *sess = NULL;
    CHECK_OK(ck_session_create(red, &sess));
    char sid[33] = "";
    if (sess) {
        CHECK_OK(ck_session_set(sess, "by", KEY("parent")));
        CHECK_OK(ck_session_save(red, sess));
        snprintf(sid, sizeof sid, "%s", ck_session_id(sess));
        ck_session_free(sess);
    }
    /* A lock the parent holds across the fork (in Redis: the child sees it held). */
    ck_lock *held = NULL;
    CHECK_OK(ck_lock_acquire(red, "fork:held", 30000, 0, &held));
    ck_events *events = NULL;
    ck_cluster *app = NULL;
    CHECK_OK(ck_deployment_cluster(red, "app", &app));
    CHECK_OK(ck_cluster_subscribe(app, &events));

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0); /* a kill on the deadline takes the grandchild too */
        /* The child: count only its own failures and report them by exit status. */
        int before = atomic_load(&ck_failed);
        ck_context = "fork child";
        keep_working(emb, red, "child");
        ck_buf *buf = NULL;
        /* The embedded cache's contents were inherited; Redis is the same Redis. */
        CHECK_OK(ck_cache_get(emb, KEY("fork:from-parent"), &buf));
        CHECK(buf_is(buf, "p"));
        ck_buf_free(buf);
        buf = NULL;
        CHECK_OK(ck_cache_get(red, KEY("fork:from-parent"), &buf));
        CHECK(buf_is(buf, "p"));
        ck_buf_free(buf);
        CHECK_OK(ck_cache_set(red, KEY("fork:from-child"), KEY("c"), 60000));
        /* The parent's lock is held for the child too. */
        ck_lock *l = SENTINEL(ck_lock);
        CHECK_ST(ck_lock_acquire(red, "fork:held", 5000, 0, &l), CK_CONFLICT);
        CHECK(l == SENTINEL(ck_lock));
        /* Sessions through the inherited deployment. */
        ck_session *s = NULL;
        CHECK_OK(ck_session_load(red, (const uint8_t *)sid, strlen(sid), true, &s));
        if (s) {
            const uint8_t *d = NULL;
            size_t n = 0;
            CHECK_OK(ck_session_get(s, "by", &d, &n));
            CHECK(n == 6 && memcmp(d, "parent", 6) == 0);
            CHECK_OK(ck_session_set(s, "child", KEY("was here")));
            CHECK_OK(ck_session_save(red, s));
            ck_session_free(s);
        }
        /* Health changes and events on the inherited pool. */
        CHECK_OK(ck_cluster_set_health(app, "web-2", CK_DRAINING, "child"));
        ck_event *ev = NULL;
        ck_status st = CK_OK;
        bool seen = false;
        while (!seen && (st = ck_events_next(events, 2000, &ev)) == CK_OK) {
            seen = ck_event_get_kind(ev) == CK_EVENT_HEALTH_CHANGED &&
                   strcmp(ck_event_node_id(ev), "web-2") == 0;
            ck_event_free(ev);
            ev = NULL;
        }
        CHECK(seen);
        CHECK_OK(ck_cluster_set_health(app, "web-2", CK_HEALTHY, NULL));
        /* A shared deployment is built afresh in the child (the parent's is not used). */
        ck_deployment *cs = NULL;
        CHECK_OK(ck_deployment_shared("[cache]\nnamespace = \"fork-shared\"\n", &cs));
        buf = SENTINEL(ck_buf);
        CHECK_ST(ck_cache_get(cs, KEY("fork:from-parent"), &buf), CK_NOT_FOUND);
        CHECK(buf == SENTINEL(ck_buf));
        CHECK_OK(ck_cache_set(cs, KEY("fork:child-shared"), KEY("c"), 0));
        ck_deployment *cs2 = NULL;
        CHECK_OK(ck_deployment_shared("[cache]\nnamespace = \"fork-shared\"\n", &cs2));
        buf = NULL;
        CHECK_OK(ck_cache_get(cs2, KEY("fork:child-shared"), &buf));
        CHECK(buf_is(buf, "c"));
        ck_buf_free(buf);
        ck_deployment_free(cs2);
        ck_deployment_free(cs);
        /* A second generation: the grandchild works too. */
        fflush(stdout);
        fflush(stderr);
        pid_t g = fork();
        if (g == 0) {
            int gbefore = atomic_load(&ck_failed);
            ck_context = "fork grandchild";
            keep_working(emb, red, "grandchild");
            fflush(stderr);
            _exit(atomic_load(&ck_failed) == gbefore ? 0 : 1);
        }
        CHECK(g > 0);
        if (g > 0) CHECK(wait_child(g, 60000, "grandchild", false));
        keep_working(emb, red, "child-after");
        /* The child releases what it inherited, as a long-lived worker would. */
        ck_events_free(events);
        ck_cluster_free(app);
        ck_deployment_free(shared);
        ck_deployment_free(emb);
        ck_deployment_free(red);
        fflush(stderr);
        _exit(atomic_load(&ck_failed) == before ? 0 : 1);
    }
    if (pid > 0) CHECK(wait_child(pid, 90000, "child", true));

    /* The parent keeps working, and sees what the child wrote to Redis. */
    keep_working(emb, red, "parent-after");
    ck_buf *buf = NULL;
    CHECK_OK(ck_cache_get(red, KEY("fork:from-child"), &buf));
    CHECK(buf_is(buf, "c"));
    ck_buf_free(buf);
    buf = SENTINEL(ck_buf);
    /* The child's embedded writes stayed in the child. */
    char child_key[64];
    snprintf(child_key, sizeof child_key, "fork:child:%d", (int)pid);
    CHECK_ST(ck_cache_get(emb, KEY(child_key), &buf), CK_NOT_FOUND);
    CHECK(buf == SENTINEL(ck_buf));
    buf = NULL;
    CHECK_OK(ck_cache_get(red, KEY(child_key), &buf));
    CHECK(buf_is(buf, "written by child"));
    ck_buf_free(buf);
    ck_session *s = NULL;
    CHECK_OK(ck_session_load(red, (const uint8_t *)sid, strlen(sid), false, &s));
    if (s) {
        const uint8_t *d = NULL;
        size_t n = 0;
        CHECK_OK(ck_session_get(s, "child", &d, &n));
        CHECK(n == 8 && memcmp(d, "was here", 8) == 0);
        ck_session_free(s);
    }
    CHECK(held && ck_lock_is_held(held));
    if (held) CHECK_OK(ck_lock_release(held));
    ck_lock_free(held);
    /* The parent's own shared deployment is untouched by the child's fresh one. */
    buf = NULL;
    CHECK_OK(ck_cache_get(shared, KEY("fork:from-parent"), &buf));
    CHECK(buf_is(buf, "p"));
    ck_buf_free(buf);
    /* Pool state is per process: the child's health changes did not reach the parent. */
    ck_event *ev = SENTINEL(ck_event);
    CHECK_ST(ck_events_next(events, 0, &ev), CK_TIMEOUT);
    CHECK(ev == SENTINEL(ck_event));
    CHECK(ck_cluster_healthy_count(app) == 2);
    ck_events_free(events);
    ck_cluster_free(app);
    CHECK_OK(ck_cache_clear(red, NULL));
    ck_deployment_free(shared);
    ck_deployment_free(emb);
    ck_deployment_free(red);
}
