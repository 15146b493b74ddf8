/*
 * Sessions (ck_session_*): one suite run against the embedded store and against Redis.
 * `other` is a second deployment handle on the same store (for Redis: another deployment
 * built from the same config, as another process would).
 */
#include "ck_test.h"

static bool is_session_id(const char *id) {
    if (id == NULL || strlen(id) != 32) return false;
    for (int i = 0; i < 32; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
    }
    return true;
}

#define ID(s) (const uint8_t *)(s), strlen(s)

/* Field `name` of `s` equals the string `want`. */
static bool field_is(const ck_session *s, const char *name, const char *want) {
    const uint8_t *data = NULL;
    size_t len = 0;
    if (ck_session_get(s, name, &data, &len) != CK_OK) return false;
    return len == strlen(want) && (len == 0 || memcmp(data, want, len) == 0);
}

static ck_session *load(ck_deployment *dep, const char *id, bool lock) {
    ck_session *s = NULL;
    CHECK_OK(ck_session_load(dep, ID(id), lock, &s));
    return s;
}

static void sessions_basics(ck_deployment *dep, ck_deployment *other) {
    ck_session *s = SENTINEL(ck_session);
    CHECK_INVALID(ck_session_create(NULL, &s), "dep");
    CHECK_INVALID(ck_session_create(dep, NULL), "out");
    CHECK(s == SENTINEL(ck_session));

    /* A new session: a fresh 32-character id, nothing stored until saved. */
    s = NULL;
    CHECK_OK(ck_session_create(dep, &s));
    if (s == NULL) return;
    ck_session *s2 = NULL;
    CHECK_OK(ck_session_create(dep, &s2));
    CHECK(is_session_id(ck_session_id(s)));
    CHECK(s2 && strcmp(ck_session_id(s), ck_session_id(s2)) != 0);
    ck_session_free(s2);
    CHECK(ck_session_is_new(s));
    char id[33];
    snprintf(id, sizeof id, "%s", ck_session_id(s));
    ck_session *l = SENTINEL(ck_session);
    CHECK_ERR(ck_session_load(dep, ID(id), false, &l), CK_NOT_FOUND, "no such session");
    CHECK(l == SENTINEL(ck_session));

    /* Fields: set, get, remove, keys (a sorted packed list). */
    const uint8_t cart[] = {'c', 0, 'a', 0xff};
    CHECK_OK(ck_session_set(s, "user", KEY("alice")));
    CHECK_OK(ck_session_set(s, "cart", cart, sizeof cart));
    CHECK_OK(ck_session_set(s, "empty", NULL, 0));
    CHECK_OK(ck_session_set(s, "temp", KEY("x")));
    CHECK_OK(ck_session_set(s, "user", KEY("alice2"))); /* overwrite */
    CHECK_OK(ck_session_remove(s, "temp"));
    CHECK_OK(ck_session_remove(s, "never-set"));
    const uint8_t *data = NULL;
    size_t len = 0;
    CHECK_OK(ck_session_get(s, "cart", &data, &len));
    CHECK(len == sizeof cart && data && memcmp(data, cart, len) == 0);
    CHECK(field_is(s, "user", "alice2"));
    CHECK(field_is(s, "empty", ""));
    data = SENTINEL(const uint8_t);
    len = 4242;
    CHECK_ERR(ck_session_get(s, "temp", &data, &len), CK_NOT_FOUND, "temp");
    CHECK(data == SENTINEL(const uint8_t) && len == 4242);
    ck_buf *keys = NULL;
    CHECK_OK(ck_session_keys(s, &keys));
    if (keys) {
        unpacker u = {ck_buf_data(keys), ck_buf_len(keys), 0};
        const uint8_t *k = NULL;
        uint32_t n = 0;
        CHECK(unpack_next(&u, &k, &n) && n == 4 && memcmp(k, "cart", 4) == 0);
        CHECK(unpack_next(&u, &k, &n) && n == 5 && memcmp(k, "empty", 5) == 0);
        CHECK(unpack_next(&u, &k, &n) && n == 4 && memcmp(k, "user", 4) == 0);
        CHECK(u.pos == u.len);
        ck_buf_free(keys);
    }

    /* Field arguments. */
    CHECK_INVALID(ck_session_get(NULL, "user", &data, &len), "session");
    CHECK_INVALID(ck_session_get(s, NULL, &data, &len), "name");
    CHECK_INVALID(ck_session_get(s, "user", NULL, &len), "data");
    CHECK_INVALID(ck_session_get(s, "user", &data, NULL), "len");
    CHECK_INVALID(ck_session_get(s, "us\xffr", &data, &len), "name");
    CHECK(data == SENTINEL(const uint8_t) && len == 4242);
    CHECK_INVALID(ck_session_set(NULL, "user", KEY("v")), "session");
    CHECK_INVALID(ck_session_set(s, NULL, KEY("v")), "name");
    CHECK_INVALID(ck_session_set(s, "user", NULL, 3), "value");
    CHECK_INVALID(ck_session_set(s, "\xc3\x28", KEY("v")), "name");
    CHECK_INVALID(ck_session_remove(NULL, "user"), "session");
    CHECK_INVALID(ck_session_remove(s, NULL), "name");
    CHECK_INVALID(ck_session_remove(s, "\xff"), "name");
    keys = SENTINEL(ck_buf);
    CHECK_INVALID(ck_session_keys(NULL, &keys), "session");
    CHECK_INVALID(ck_session_keys(s, NULL), "out");
    CHECK(keys == SENTINEL(ck_buf));
    CHECK(field_is(s, "user", "alice2")); /* the failed calls changed nothing */

    /* Save, then load from another handle. */
    CHECK_INVALID(ck_session_save(NULL, s), "dep");
    CHECK_INVALID(ck_session_save(dep, NULL), "session");
    CHECK(ck_session_is_new(s));
    CHECK_OK(ck_session_save(dep, s));
    CHECK(!ck_session_is_new(s));
    CHECK(strcmp(ck_session_id(s), id) == 0);
    l = load(other, id, false);
    if (l) {
        CHECK(!ck_session_is_new(l));
        CHECK(strcmp(ck_session_id(l), id) == 0);
        CHECK(field_is(l, "user", "alice2"));
        CHECK(field_is(l, "empty", ""));
        CHECK_OK(ck_session_get(l, "cart", &data, &len));
        CHECK(len == sizeof cart && memcmp(data, cart, len) == 0);
        CHECK_ST(ck_session_get(l, "temp", &data, &len), CK_NOT_FOUND);
        ck_session_free(l);
    }

    /* Delta saves: two requests changing different fields do not overwrite each other. */
    ck_session *r1 = load(dep, id, false), *r2 = load(other, id, false);
    if (r1 && r2) {
        CHECK_OK(ck_session_set(r1, "from-r1", KEY("1")));
        CHECK_OK(ck_session_set(r2, "from-r2", KEY("2")));
        CHECK_OK(ck_session_remove(r2, "empty"));
        CHECK_OK(ck_session_save(dep, r1));
        CHECK_OK(ck_session_save(other, r2));
        l = load(dep, id, false);
        CHECK(l && field_is(l, "from-r1", "1") && field_is(l, "from-r2", "2"));
        CHECK(l && field_is(l, "user", "alice2"));
        CHECK(l && ck_session_get(l, "empty", &data, &len) == CK_NOT_FOUND);
        ck_session_free(l);
    }
    ck_session_free(r1);
    ck_session_free(r2);

    /* Touch. */
    bool found = false;
    CHECK_OK(ck_session_touch(dep, ID(id), &found));
    CHECK(found == true);
    CHECK_OK(ck_session_touch(dep, ID(id), NULL));
    found = true;
    CHECK_OK(ck_session_touch(dep, ID("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), &found));
    CHECK(found == false);
    found = true;
    CHECK_OK(ck_session_touch(dep, ID("not an id"), &found));
    CHECK(found == false);
    found = true;
    CHECK_INVALID(ck_session_touch(NULL, ID(id), &found), "dep");
    CHECK_INVALID(ck_session_touch(dep, NULL, 32, &found), "id");
    CHECK(found == true);

    /* Regenerate: a new id with the same data (unsaved changes saved first); the old id
     * stops working at once. */
    CHECK_OK(ck_session_set(s, "role", KEY("admin")));
    CHECK_INVALID(ck_session_regenerate(NULL, s), "dep");
    CHECK_INVALID(ck_session_regenerate(dep, NULL), "session");
    CHECK_OK(ck_session_regenerate(dep, s));
    char new_id[33];
    snprintf(new_id, sizeof new_id, "%s", ck_session_id(s));
    CHECK(is_session_id(new_id));
    CHECK(strcmp(new_id, id) != 0);
    l = SENTINEL(ck_session);
    CHECK_ST(ck_session_load(other, ID(id), false, &l), CK_NOT_FOUND);
    CHECK(l == SENTINEL(ck_session));
    found = true;
    CHECK_OK(ck_session_touch(other, ID(id), &found));
    CHECK(found == false);
    l = load(other, new_id, false);
    CHECK(l && field_is(l, "role", "admin") && field_is(l, "user", "alice2"));
    ck_session_free(l);
    /* Regenerating an unsaved session just changes its id. */
    ck_session *fresh = NULL;
    CHECK_OK(ck_session_create(dep, &fresh));
    if (fresh) {
        char fresh_id[33];
        snprintf(fresh_id, sizeof fresh_id, "%s", ck_session_id(fresh));
        CHECK_OK(ck_session_regenerate(dep, fresh));
        CHECK(is_session_id(ck_session_id(fresh)) && strcmp(ck_session_id(fresh), fresh_id) != 0);
        CHECK(ck_session_is_new(fresh));
        ck_session_free(fresh);
    }

    /* Destroy. */
    bool existed = false;
    CHECK_OK(ck_session_destroy(dep, ID(new_id), &existed));
    CHECK(existed == true);
    CHECK_ST(ck_session_load(other, ID(new_id), false, &l), CK_NOT_FOUND);
    CHECK_OK(ck_session_destroy(dep, ID(new_id), &existed));
    CHECK(existed == false);
    CHECK_OK(ck_session_destroy(dep, ID(new_id), NULL));
    existed = true;
    CHECK_OK(ck_session_destroy(dep, ID("../../etc/passwd"), &existed));
    CHECK(existed == false);
    existed = true;
    CHECK_OK(ck_session_destroy(dep, NULL, 0, &existed));
    CHECK(existed == false);
    existed = true;
    CHECK_INVALID(ck_session_destroy(NULL, ID(new_id), &existed), "dep");
    CHECK_INVALID(ck_session_destroy(dep, NULL, 32, &existed), "id");
    CHECK(existed == true);
    /* A destroyed session is not resurrected by a save. */
    CHECK_OK(ck_session_set(s, "late", KEY("write")));
    CHECK_ST(ck_session_save(dep, s), CK_NOT_FOUND);
    CHECK_ST(ck_session_load(other, ID(new_id), false, &l), CK_NOT_FOUND);
    CHECK_ST(ck_session_regenerate(dep, s), CK_NOT_FOUND);
    ck_session_free(s);

    /* Malformed ids are simply unknown (never a lookup of an arbitrary key). */
    l = SENTINEL(ck_session);
    const uint8_t not_utf8[32] = {0xff, 0xfe};
    CHECK_ST(ck_session_load(dep, ID("short"), false, &l), CK_NOT_FOUND);
    CHECK_ST(ck_session_load(dep, ID("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!"), false, &l), CK_NOT_FOUND);
    CHECK_ST(ck_session_load(dep, ID("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), true, &l), CK_NOT_FOUND);
    CHECK_ST(ck_session_load(dep, not_utf8, sizeof not_utf8, false, &l), CK_NOT_FOUND);
    CHECK_ST(ck_session_load(dep, NULL, 0, false, &l), CK_NOT_FOUND);
    CHECK_INVALID(ck_session_load(NULL, ID(id), false, &l), "dep");
    CHECK_INVALID(ck_session_load(dep, NULL, 32, false, &l), "id");
    CHECK_INVALID(ck_session_load(dep, ID(id), false, NULL), "out");
    CHECK(l == SENTINEL(ck_session));

    /* NULL accessors and free. */
    CHECK(ck_session_id(NULL) == NULL);
    CHECK(!ck_session_is_new(NULL));
    ck_session_free(NULL); /* a no-op */
}

static void sessions_locking(ck_deployment *dep, ck_deployment *other) {
    ck_session *s = NULL;
    CHECK_OK(ck_session_create(dep, &s));
    if (s == NULL) return;
    CHECK_OK(ck_session_set(s, "n", KEY("0")));
    CHECK_OK(ck_session_save(dep, s));
    char id[33];
    snprintf(id, sizeof id, "%s", ck_session_id(s));
    ck_session_free(s);

    /* One request holds the lock: another locked load times out within lock_wait
     * (200ms in the test configs), leaving its out-parameter alone. */
    ck_session *first = load(dep, id, true);
    if (first == NULL) return;
    CHECK(field_is(first, "n", "0"));
    ck_session *l = SENTINEL(ck_session);
    uint64_t t0 = now_ms();
    CHECK_ERR(ck_session_load(other, ID(id), true, &l), CK_TIMEOUT, "locked");
    uint64_t waited = now_ms() - t0;
    CHECK(waited >= 180 && waited < 5000); /* not the default 10s */
    CHECK(l == SENTINEL(ck_session));
    /* An unlocked load still reads it. */
    ck_session *reader = load(other, id, false);
    CHECK(reader && field_is(reader, "n", "0"));
    ck_session_free(reader);

    /* Save writes and releases the lock in one go. */
    CHECK_OK(ck_session_set(first, "n", KEY("1")));
    CHECK_OK(ck_session_save(dep, first));
    ck_session_free(first);
    ck_session *second = load(other, id, true);
    if (second == NULL) return;
    CHECK(field_is(second, "n", "1"));

    /* Unlock releases without writing; unsaved changes stay in the handle. */
    CHECK_OK(ck_session_set(second, "n", KEY("unsaved")));
    CHECK_INVALID(ck_session_unlock(NULL, second), "dep");
    CHECK_INVALID(ck_session_unlock(other, NULL), "session");
    CHECK_OK(ck_session_unlock(other, second));
    CHECK(field_is(second, "n", "unsaved"));
    CHECK_OK(ck_session_unlock(other, second)); /* holds no lock now: nothing happens */
    ck_session *third = load(dep, id, true);
    CHECK(third && field_is(third, "n", "1"));
    ck_session_free(second);

    /* Freeing a session that holds the lock releases it in the background (without
     * writing): a locked load succeeds again soon. */
    if (third) CHECK_OK(ck_session_set(third, "n", KEY("dropped")));
    ck_session_free(third);
    ck_session *fourth = NULL;
    ck_status st = CK_TIMEOUT;
    for (int i = 0; i < 20 && st == CK_TIMEOUT; i++) st = ck_session_load(other, ID(id), true, &fourth);
    CHECK_OK(st);
    CHECK(fourth && field_is(fourth, "n", "1"));
    /* An unlocked session's save does not need the lock; a locked one's does. */
    if (fourth) {
        ck_session *plain = load(dep, id, false);
        if (plain) {
            CHECK_OK(ck_session_set(plain, "other-field", KEY("x")));
            CHECK_OK(ck_session_save(dep, plain));
            ck_session_free(plain);
        }
        CHECK_OK(ck_session_set(fourth, "n", KEY("4")));
        CHECK_OK(ck_session_save(other, fourth));
        ck_session_free(fourth);
    }
    ck_session *last = load(dep, id, true);
    CHECK(last && field_is(last, "n", "4") && field_is(last, "other-field", "x"));
    /* Destroying a locked session: the holder's save then reports it gone. */
    bool existed = false;
    CHECK_OK(ck_session_destroy(other, ID(id), &existed));
    CHECK(existed);
    if (last) CHECK_ST(ck_session_save(dep, last), CK_NOT_FOUND);
    ck_session_free(last);
}

/* `dep` is configured with a short session lock_ttl (150ms): a holder that outlives it has
 * lost the lock, and its save reports CK_CONFLICT instead of overwriting the next holder. */
void session_lock_lost_suite(ck_deployment *dep) {
    ck_session *s = NULL;
    CHECK_OK(ck_session_create(dep, &s));
    if (s == NULL) return;
    CHECK_OK(ck_session_set(s, "n", KEY("0")));
    CHECK_OK(ck_session_save(dep, s));
    char id[33];
    snprintf(id, sizeof id, "%s", ck_session_id(s));
    ck_session_free(s);

    ck_session *slow = load(dep, id, true);
    sleep_ms(400); /* past the lock TTL */
    ck_session *next = load(dep, id, true);
    CHECK(next != NULL);
    if (slow) {
        CHECK_OK(ck_session_set(slow, "n", KEY("stale")));
        CHECK_ST(ck_session_save(dep, slow), CK_CONFLICT);
        ck_session_free(slow);
    }
    if (next) {
        CHECK_OK(ck_session_set(next, "n", KEY("fresh")));
        CHECK_OK(ck_session_save(dep, next));
        ck_session_free(next);
    }
    ck_session *check = load(dep, id, false);
    CHECK(check && field_is(check, "n", "fresh"));
    ck_session_free(check);
    CHECK_OK(ck_session_destroy(dep, ID(id), NULL));
}

void session_suite(ck_deployment *dep, ck_deployment *other) {
    sessions_basics(dep, other);
    sessions_locking(dep, other);
}
