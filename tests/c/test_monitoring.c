/*
 * Monitoring (issue #15) over the C ABI: metrics rendered as Prometheus text, OpenMetrics,
 * JSON, the status page; publishing and aggregating snapshots between processes; the log
 * records polled as JSON with a level filter.
 */
#define _DEFAULT_SOURCE
#include "ck_test.h"

#include <dirent.h>
#include <unistd.h>

static char *render(ck_deployment *dep, uint32_t format) {
    ck_buf *b = NULL;
    CHECK_OK(ck_deployment_metrics_render(dep, format, &b));
    if (b == NULL) return strdup("");
    char *s = strndup((const char *)ck_buf_data(b), ck_buf_len(b));
    ck_buf_free(b);
    return s;
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || e->d_name[1] == '.')) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

void test_monitoring(void) {
    const char *doc =
        "[pools.app]\nstrategy = \"round_robin\"\n"
        "nodes = [ { id = \"a0\", host = \"127.0.0.1\", port = 1 },\n"
        "          { id = \"a1\", host = \"127.0.0.1\", port = 2 },\n"
        "          { id = \"a2\", host = \"127.0.0.1\", port = 3 } ]\n"
        "[metrics.scaling.app]\ntarget_in_flight = 4\nmax_nodes = 5\n";
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(doc, &dep));
    for (int i = 0; i < 9; i++) {
        ck_pick *p = NULL;
        CHECK_OK(ck_deployment_pick(dep, "app", NULL, 0, &p));
        CHECK_OK(ck_pick_success_us(p, 1500));
    }
    char *text = render(dep, CK_METRICS_PROMETHEUS);
    CHECK(strstr(text, "# TYPE clusterkit_node_picks_total counter") != NULL);
    CHECK(strstr(text, "clusterkit_node_picks_total{pool=\"app\",node=\"a0\"} 3\n") != NULL);
    CHECK(strstr(text, "clusterkit_node_latency_seconds_bucket{le=\"0.0025\",pool=\"app\",node=\"a1\"} 3") != NULL
          || strstr(text, "clusterkit_node_latency_seconds_bucket{pool=\"app\",node=\"a1\",le=\"0.0025\"} 3") != NULL);
    CHECK(strstr(text, "clusterkit_scaling_recommended_nodes{pool=\"app\"}") != NULL);
    free(text);
    text = render(dep, CK_METRICS_OPENMETRICS);
    CHECK(strstr(text, "# EOF") != NULL);
    free(text);
    text = render(dep, CK_METRICS_JSON);
    CHECK(text[0] == '{' && strstr(text, "\"picks\":3") != NULL);
    free(text);
    text = render(dep, CK_METRICS_STATUS_JSON);
    CHECK(strstr(text, "\"p95_us\"") != NULL);
    free(text);
    text = render(dep, CK_METRICS_STATUS_HTML);
    CHECK(strstr(text, "data-pool=\"app\" data-node=\"a2\" data-health=\"healthy\"") != NULL);
    free(text);
    ck_buf *b = SENTINEL(ck_buf);
    CHECK_OK(ck_deployment_status_html(dep, "<mine>", &b));
    CHECK(b != SENTINEL(ck_buf) && strstr((const char *)ck_buf_data(b), "&lt;mine&gt;") != NULL);
    ck_buf_free(b);

    /* Bad arguments name themselves; outputs stay untouched. */
    b = SENTINEL(ck_buf);
    CHECK_INVALID(ck_deployment_metrics_render(dep, 99, &b), "format");
    CHECK(b == SENTINEL(ck_buf));
    CHECK_INVALID(ck_deployment_metrics_render(NULL, CK_METRICS_JSON, &b), "dep");
    CHECK_INVALID(ck_deployment_metrics_render(dep, CK_METRICS_JSON, NULL), "out");
    CHECK_INVALID(ck_deployment_metrics_publish(dep, NULL), "dir");
    CHECK_INVALID(ck_deployment_metrics_publish(dep, ""), "dir");
    CHECK_INVALID(ck_deployment_metrics_aggregate(dep, "/tmp", 0, CK_METRICS_JSON, &b), "max_age");
    CHECK(b == SENTINEL(ck_buf));

    /* Another process's snapshot (written here as that process would: its JSON snapshot in
     * ck-<pid>.json; real PHP-FPM workers do it in bindings/php's MonitoringTest), then one
     * aggregate adds it to this process's own. */
    char dir[] = "/tmp/ck-c-metrics-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ck_deployment *other = NULL;
    CHECK_OK(ck_deployment_new(doc, &other));
    for (int i = 0; i < 6; i++) {
        ck_pick *p = NULL;
        CHECK_OK(ck_deployment_pick(other, "app", NULL, 0, &p));
        CHECK_OK(ck_pick_success(p, 1));
    }
    char *snap = render(other, CK_METRICS_JSON);
    char path[256];
    snprintf(path, sizeof path, "%s/ck-999999991.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(snap, f);
        fclose(f);
    }
    free(snap);
    ck_deployment_free(other);
    CHECK_OK(ck_deployment_metrics_publish(dep, dir));
    b = NULL;
    CHECK_OK(ck_deployment_metrics_aggregate(dep, dir, 60000, CK_METRICS_PROMETHEUS, &b));
    if (b != NULL) {
        char *agg = strndup((const char *)ck_buf_data(b), ck_buf_len(b));
        CHECK(strstr(agg, "clusterkit_processes 2\n") != NULL);
        CHECK(strstr(agg, "clusterkit_node_picks_total{pool=\"app\",node=\"a0\"} 5\n") != NULL);
        free(agg);
        ck_buf_free(b);
    }
    remove_dir(dir);

    /* Metrics disabled: rendering is refused as unavailable. */
    ck_deployment *off = NULL;
    CHECK_OK(ck_deployment_new("[metrics]\nenabled = false\n", &off));
    b = SENTINEL(ck_buf);
    CHECK_ERR(ck_deployment_metrics_render(off, CK_METRICS_PROMETHEUS, &b), CK_UNAVAILABLE, "disabled");
    CHECK(b == SENTINEL(ck_buf));
    ck_deployment_free(off);

    /* Logs: off by default (nothing buffered), then a level, then polled as JSON. */
    CHECK_INVALID(ck_log_set_level(9), "level");
    CHECK_INVALID(ck_log_poll(10, NULL), "out");
    ck_lock *l = NULL;
    CHECK_OK(ck_lock_acquire(dep, "c-job", 5000, 0, &l));
    CHECK_OK(ck_lock_release(l));
    ck_lock_free(l);
    b = NULL;
    CHECK_OK(ck_log_poll(100, &b));
    CHECK(b != NULL && ck_buf_len(b) == 2 && memcmp(ck_buf_data(b), "[]", 2) == 0);
    ck_buf_free(b);
    CHECK_OK(ck_log_set_level(CK_LOG_DEBUG));
    l = NULL;
    CHECK_OK(ck_lock_acquire(dep, "c-job", 5000, 0, &l));
    const char *token = l != NULL ? ck_lock_token(l) : NULL;
    char *tok = token != NULL ? strdup(token) : strdup("-");
    CHECK_OK(ck_lock_release(l));
    ck_lock_free(l);
    b = NULL;
    CHECK_OK(ck_log_poll(100, &b));
    if (b != NULL) {
        char *logs = strndup((const char *)ck_buf_data(b), ck_buf_len(b));
        CHECK(strstr(logs, "\"message\":\"lock acquired\"") != NULL);
        CHECK(strstr(logs, "\"level\":\"debug\"") != NULL);
        CHECK(strstr(logs, "c-job") == NULL); /* the name's hash only */
        CHECK(strstr(logs, tok) == NULL);     /* never the token */
        free(logs);
        ck_buf_free(b);
    }
    free(tok);
    CHECK_OK(ck_log_set_level(CK_LOG_OFF));
    CHECK(ck_log_dropped() == 0);
    ck_deployment_free(dep);
}
