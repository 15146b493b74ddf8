/*
 * The cache (ck_cache_*) and the reader (ck_reader_*): shared suites run against every
 * backend, plus checks only the embedded backend makes cheap (huge values).
 */
#include "ck_test.h"

static uint8_t big_key[4097];

static void cache_basics(ck_deployment *dep) {
    ck_buf *buf = SENTINEL(ck_buf);
    bool existed = true;

    CHECK_ERR(ck_cache_get(dep, KEY("cs:missing"), &buf), CK_NOT_FOUND, "no such key");
    CHECK(buf == SENTINEL(ck_buf));

    /* Binary values round-trip, NUL bytes included; binary keys too. */
    const uint8_t value[] = {'a', 0, 'b', 0xff, 0};
    const uint8_t bin_key[] = {'c', 's', 0, 0xfe, 0x80};
    CHECK_OK(ck_cache_set(dep, KEY("cs:k1"), value, sizeof value, 0));
    buf = NULL;
    CHECK_OK(ck_cache_get(dep, KEY("cs:k1"), &buf));
    CHECK(buf != NULL && ck_buf_len(buf) == sizeof value);
    CHECK(buf != NULL && memcmp(ck_buf_data(buf), value, sizeof value) == 0);
    ck_buf_free(buf);
    CHECK_OK(ck_cache_set(dep, bin_key, sizeof bin_key, KEY("binary key"), 0));
    buf = NULL;
    CHECK_OK(ck_cache_get(dep, bin_key, sizeof bin_key, &buf));
    CHECK(buf_is(buf, "binary key"));
    ck_buf_free(buf);
    /* The longest key works. */
    memset(big_key, 'k', sizeof big_key);
    CHECK_OK(ck_cache_set(dep, big_key, 4096, KEY("long key"), 0));
    buf = NULL;
    CHECK_OK(ck_cache_get(dep, big_key, 4096, &buf));
    CHECK(buf_is(buf, "long key"));
    ck_buf_free(buf);
    CHECK_OK(ck_cache_delete(dep, big_key, 4096, NULL));

    /* Overwrite; an empty value (NULL, 0) is a value. */
    CHECK_OK(ck_cache_set(dep, KEY("cs:k1"), NULL, 0, 0));
    buf = NULL;
    CHECK_OK(ck_cache_get(dep, KEY("cs:k1"), &buf));
    CHECK(buf != NULL && ck_buf_len(buf) == 0);
    ck_buf_free(buf);

    /* Delete reports whether the key existed; `existed` may be NULL. */
    CHECK_OK(ck_cache_delete(dep, KEY("cs:k1"), &existed));
    CHECK(existed == true);
    CHECK_OK(ck_cache_delete(dep, KEY("cs:k1"), &existed));
    CHECK(existed == false);
    CHECK_OK(ck_cache_delete(dep, KEY("cs:k1"), NULL));
    buf = SENTINEL(ck_buf);
    CHECK_ST(ck_cache_get(dep, KEY("cs:k1"), &buf), CK_NOT_FOUND);
    CHECK(buf == SENTINEL(ck_buf));

    /* TTL in milliseconds. */
    CHECK_OK(ck_cache_set(dep, KEY("cs:short"), KEY("v"), 60));
    CHECK_OK(ck_cache_set(dep, KEY("cs:long"), KEY("v"), 60000));
    sleep_ms(200);
    CHECK_ST(ck_cache_get(dep, KEY("cs:short"), &buf), CK_NOT_FOUND);
    CHECK(buf == SENTINEL(ck_buf));
    buf = NULL;
    CHECK_OK(ck_cache_get(dep, KEY("cs:long"), &buf));
    ck_buf_free(buf);

    /* Error paths: NULL arguments name themselves, keys are 1..4096 bytes, out-parameters
     * stay untouched. */
    buf = SENTINEL(ck_buf);
    existed = true;
    CHECK_INVALID(ck_cache_get(dep, (const uint8_t *)"", 0, &buf), "key");
    CHECK_INVALID(ck_cache_get(dep, big_key, sizeof big_key, &buf), "key");
    CHECK(strstr(ck_last_error(), "4096") != NULL);
    CHECK_INVALID(ck_cache_get(NULL, KEY("k"), &buf), "dep");
    CHECK_INVALID(ck_cache_get(dep, KEY("k"), NULL), "out");
    CHECK_INVALID(ck_cache_get(dep, NULL, 3, &buf), "key");
    CHECK(buf == SENTINEL(ck_buf));
    CHECK_INVALID(ck_cache_set(dep, NULL, 0, KEY("v"), 0), "key");
    CHECK_INVALID(ck_cache_set(dep, NULL, 2, KEY("v"), 0), "key");
    CHECK_INVALID(ck_cache_set(dep, big_key, sizeof big_key, KEY("v"), 0), "key");
    CHECK_INVALID(ck_cache_set(NULL, KEY("k"), KEY("v"), 0), "dep");
    CHECK_INVALID(ck_cache_set(dep, KEY("cs:nullvalue"), NULL, 4, 0), "value");
    CHECK_ST(ck_cache_get(dep, KEY("cs:nullvalue"), &buf), CK_NOT_FOUND);
    CHECK_INVALID(ck_cache_delete(dep, (const uint8_t *)"", 0, &existed), "key");
    CHECK_INVALID(ck_cache_delete(dep, NULL, 1, &existed), "key");
    CHECK_INVALID(ck_cache_delete(dep, big_key, sizeof big_key, &existed), "key");
    CHECK_INVALID(ck_cache_delete(NULL, KEY("k"), &existed), "dep");
    CHECK(existed == true);
    CHECK(buf == SENTINEL(ck_buf));
    CHECK(ck_buf_data(NULL) == NULL);
    CHECK(ck_buf_len(NULL) == 0);
    ck_buf_free(NULL); /* a no-op */
}

static void cache_get_into(ck_deployment *dep) {
    uint8_t dst[16];
    size_t len = 12345;
    ck_buf *big = SENTINEL(ck_buf);
    const char *small = "small value";
    const char *large = "a value longer than sixteen bytes";
    CHECK_OK(ck_cache_set(dep, KEY("gi:small"), KEY(small), 0));
    CHECK_OK(ck_cache_set(dep, KEY("gi:large"), KEY(large), 0));
    CHECK_OK(ck_cache_set(dep, KEY("gi:empty"), NULL, 0, 0));
    CHECK_OK(ck_cache_set(dep, KEY("gi:exact"), KEY("0123456789abcdef"), 0));

    /* Fits: copied into dst, out_big untouched. */
    memset(dst, '#', sizeof dst);
    CHECK_OK(ck_cache_get_into(dep, KEY("gi:small"), dst, sizeof dst, &len, &big));
    CHECK(len == strlen(small) && memcmp(dst, small, len) == 0);
    CHECK(dst[len] == '#'); /* nothing written past the value */
    CHECK(big == SENTINEL(ck_buf));
    /* Exactly the capacity still fits. */
    len = 0;
    CHECK_OK(ck_cache_get_into(dep, KEY("gi:exact"), dst, sizeof dst, &len, &big));
    CHECK(len == 16 && memcmp(dst, "0123456789abcdef", 16) == 0);
    CHECK(big == SENTINEL(ck_buf));

    /* Too large: dst untouched, out_big receives the value. */
    memset(dst, '#', sizeof dst);
    len = 0;
    CHECK_OK(ck_cache_get_into(dep, KEY("gi:large"), dst, sizeof dst, &len, &big));
    CHECK(len == strlen(large));
    CHECK(big != SENTINEL(ck_buf) && big != NULL);
    if (big != SENTINEL(ck_buf)) {
        CHECK(buf_is(big, large));
        ck_buf_free(big);
    }
    bool untouched = true;
    for (size_t i = 0; i < sizeof dst; i++) untouched &= dst[i] == '#';
    CHECK(untouched);

    /* dst may be NULL with capacity 0: a non-empty value goes to out_big, an empty one
     * needs no buffer. */
    big = SENTINEL(ck_buf);
    len = 999;
    CHECK_OK(ck_cache_get_into(dep, KEY("gi:small"), NULL, 0, &len, &big));
    CHECK(len == strlen(small));
    CHECK(big != SENTINEL(ck_buf) && buf_is(big, small));
    if (big != SENTINEL(ck_buf)) ck_buf_free(big);
    big = SENTINEL(ck_buf);
    len = 999;
    CHECK_OK(ck_cache_get_into(dep, KEY("gi:empty"), NULL, 0, &len, &big));
    CHECK(len == 0);
    CHECK(big == SENTINEL(ck_buf));

    /* A miss writes nothing. */
    len = 777;
    memset(dst, '#', sizeof dst);
    CHECK_ERR(ck_cache_get_into(dep, KEY("gi:missing"), dst, sizeof dst, &len, &big), CK_NOT_FOUND,
              "no such key");
    CHECK(len == 777 && big == SENTINEL(ck_buf) && dst[0] == '#');

    /* Arguments. */
    CHECK_INVALID(ck_cache_get_into(NULL, KEY("gi:small"), dst, sizeof dst, &len, &big), "dep");
    CHECK_INVALID(ck_cache_get_into(dep, KEY("gi:small"), dst, sizeof dst, NULL, &big), "out_len");
    CHECK_INVALID(ck_cache_get_into(dep, KEY("gi:small"), dst, sizeof dst, &len, NULL), "out_big");
    CHECK_INVALID(ck_cache_get_into(dep, KEY("gi:small"), NULL, 8, &len, &big), "dst");
    CHECK_INVALID(ck_cache_get_into(dep, (const uint8_t *)"", 0, dst, sizeof dst, &len, &big), "key");
    CHECK_INVALID(ck_cache_get_into(dep, NULL, 4, dst, sizeof dst, &len, &big), "key");
    CHECK_INVALID(ck_cache_get_into(dep, big_key, sizeof big_key, dst, sizeof dst, &len, &big), "key");
    CHECK(len == 777 && big == SENTINEL(ck_buf) && dst[0] == '#');
}

static void cache_add_has_increment(ck_deployment *dep) {
    bool added = false, found = false;
    ck_buf *buf = NULL;

    /* add: only when absent (or expired). */
    CHECK_OK(ck_cache_delete(dep, KEY("ah:k"), NULL));
    CHECK_OK(ck_cache_add(dep, KEY("ah:k"), KEY("first"), 0, &added));
    CHECK(added == true);
    added = true;
    CHECK_OK(ck_cache_add(dep, KEY("ah:k"), KEY("second"), 0, &added));
    CHECK(added == false);
    CHECK_OK(ck_cache_get(dep, KEY("ah:k"), &buf));
    CHECK(buf_is(buf, "first"));
    ck_buf_free(buf);
    CHECK_OK(ck_cache_add(dep, KEY("ah:ttl"), KEY("x"), 60, &added));
    CHECK(added == true);
    sleep_ms(200);
    added = false;
    CHECK_OK(ck_cache_add(dep, KEY("ah:ttl"), KEY("y"), 0, &added));
    CHECK(added == true);
    added = false;
    CHECK_OK(ck_cache_add(dep, KEY("ah:empty"), NULL, 0, 0, &added));
    CHECK(added == true);
    /* NULL `added` fails before anything is stored. */
    CHECK_INVALID(ck_cache_add(dep, KEY("ah:noout"), KEY("v"), 0, NULL), "added");
    found = true;
    CHECK_OK(ck_cache_has(dep, KEY("ah:noout"), &found));
    CHECK(found == false);
    added = true;
    CHECK_INVALID(ck_cache_add(NULL, KEY("ah:x"), KEY("v"), 0, &added), "dep");
    CHECK_INVALID(ck_cache_add(dep, (const uint8_t *)"", 0, KEY("v"), 0, &added), "key");
    CHECK_INVALID(ck_cache_add(dep, NULL, 3, KEY("v"), 0, &added), "key");
    CHECK_INVALID(ck_cache_add(dep, big_key, sizeof big_key, KEY("v"), 0, &added), "key");
    CHECK_INVALID(ck_cache_add(dep, KEY("ah:x"), NULL, 3, 0, &added), "value");
    CHECK(added == true);

    /* has. */
    found = false;
    CHECK_OK(ck_cache_has(dep, KEY("ah:k"), &found));
    CHECK(found == true);
    CHECK_OK(ck_cache_has(dep, KEY("ah:absent"), &found));
    CHECK(found == false);
    CHECK_OK(ck_cache_set(dep, KEY("ah:expiring"), KEY("v"), 60));
    sleep_ms(200);
    found = true;
    CHECK_OK(ck_cache_has(dep, KEY("ah:expiring"), &found));
    CHECK(found == false);
    found = true;
    CHECK_INVALID(ck_cache_has(dep, KEY("ah:k"), NULL), "found");
    CHECK_INVALID(ck_cache_has(NULL, KEY("ah:k"), &found), "dep");
    CHECK_INVALID(ck_cache_has(dep, (const uint8_t *)"", 0, &found), "key");
    CHECK_INVALID(ck_cache_has(dep, NULL, 2, &found), "key");
    CHECK_INVALID(ck_cache_has(dep, big_key, sizeof big_key, &found), "key");
    CHECK(found == true);

    /* increment: an absent key counts as 0. */
    int64_t v = -1;
    CHECK_OK(ck_cache_delete(dep, KEY("ah:n"), NULL));
    CHECK_OK(ck_cache_increment(dep, KEY("ah:n"), 5, &v));
    CHECK(v == 5);
    CHECK_OK(ck_cache_increment(dep, KEY("ah:n"), 10, &v));
    CHECK(v == 15);
    CHECK_OK(ck_cache_increment(dep, KEY("ah:n"), -20, &v));
    CHECK(v == -5);
    CHECK_OK(ck_cache_increment(dep, KEY("ah:n"), 0, &v));
    CHECK(v == -5);
    found = false;
    CHECK_OK(ck_cache_has(dep, KEY("ah:n"), &found));
    CHECK(found == true);
    /* A value written as decimal text is an integer. */
    CHECK_OK(ck_cache_set(dep, KEY("ah:text"), KEY("41"), 0));
    CHECK_OK(ck_cache_increment(dep, KEY("ah:text"), 1, &v));
    CHECK(v == 42);
    /* Not an integer, or an overflow: CK_BACKEND, out untouched, value unchanged. */
    CHECK_OK(ck_cache_set(dep, KEY("ah:word"), KEY("forty-two"), 0));
    v = 1234;
    CHECK_ST(ck_cache_increment(dep, KEY("ah:word"), 1, &v), CK_BACKEND);
    CHECK(ck_last_error()[0] != '\0');
    CHECK(v == 1234);
    buf = NULL;
    CHECK_OK(ck_cache_get(dep, KEY("ah:word"), &buf));
    CHECK(buf_is(buf, "forty-two"));
    ck_buf_free(buf);
    CHECK_OK(ck_cache_set(dep, KEY("ah:max"), KEY("9223372036854775807"), 0));
    CHECK_ST(ck_cache_increment(dep, KEY("ah:max"), 1, &v), CK_BACKEND);
    CHECK(v == 1234);
    CHECK_OK(ck_cache_set(dep, KEY("ah:min"), KEY("-9223372036854775808"), 0));
    CHECK_ST(ck_cache_increment(dep, KEY("ah:min"), -1, &v), CK_BACKEND);
    CHECK(v == 1234);
    CHECK_INVALID(ck_cache_increment(dep, KEY("ah:n"), 1, NULL), "out_value");
    CHECK_INVALID(ck_cache_increment(NULL, KEY("ah:n"), 1, &v), "dep");
    CHECK_INVALID(ck_cache_increment(dep, (const uint8_t *)"", 0, 1, &v), "key");
    CHECK_INVALID(ck_cache_increment(dep, NULL, 4, 1, &v), "key");
    CHECK_INVALID(ck_cache_increment(dep, big_key, sizeof big_key, 1, &v), "key");
    CHECK(v == 1234);
    /* The NULL out_value call changed nothing. */
    CHECK_OK(ck_cache_increment(dep, KEY("ah:n"), 0, &v));
    CHECK(v == -5);
}

static void cache_batches(ck_deployment *dep) {
    packer pairs = {0}, keys = {0}, bad = {0};
    ck_buf *out = SENTINEL(ck_buf);
    uint64_t deleted = 999;

    /* set_many: key, value, key, value... (values may be empty or binary). */
    const uint8_t binary[] = {0, 1, 2, 0xff};
    pack_str(&pairs, "bm:a");
    pack_str(&pairs, "alpha");
    pack_str(&pairs, "bm:b");
    pack_bytes(&pairs, binary, sizeof binary);
    pack_str(&pairs, "bm:empty");
    pack_str(&pairs, "");
    for (int i = 0; i < 40; i++) {
        char k[16], val[16];
        snprintf(k, sizeof k, "bm:n%d", i);
        snprintf(val, sizeof val, "v%d", i);
        pack_str(&pairs, k);
        pack_str(&pairs, val);
    }
    CHECK_OK(ck_cache_set_many(dep, pairs.data, pairs.len, 0));

    /* get_many: the same order, absent keys marked 0xFFFFFFFF. */
    pack_str(&keys, "bm:a");
    pack_str(&keys, "bm:missing");
    pack_str(&keys, "bm:b");
    pack_str(&keys, "bm:empty");
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "bm:n%d", i);
        pack_str(&keys, k);
    }
    out = NULL;
    CHECK_OK(ck_cache_get_many(dep, keys.data, keys.len, &out));
    if (out) {
        unpacker u = {ck_buf_data(out), ck_buf_len(out), 0};
        const uint8_t *d = NULL;
        uint32_t n = 0;
        CHECK(unpack_next(&u, &d, &n) && n == 5 && memcmp(d, "alpha", 5) == 0);
        CHECK(unpack_next(&u, &d, &n) && d == NULL && n == 0xFFFFFFFFu);
        CHECK(unpack_next(&u, &d, &n) && n == sizeof binary && memcmp(d, binary, n) == 0);
        CHECK(unpack_next(&u, &d, &n) && d != NULL && n == 0);
        int good = 0;
        for (int i = 0; i < 40; i++) {
            char val[16];
            snprintf(val, sizeof val, "v%d", i);
            good += unpack_next(&u, &d, &n) && d && n == strlen(val) && memcmp(d, val, n) == 0;
        }
        CHECK(good == 40);
        CHECK(u.pos == u.len);
        ck_buf_free(out);
    }
    /* An empty list gives an empty list (the pointer may be NULL then). */
    out = NULL;
    CHECK_OK(ck_cache_get_many(dep, NULL, 0, &out));
    CHECK(out != NULL && ck_buf_len(out) == 0);
    ck_buf_free(out);
    CHECK_OK(ck_cache_set_many(dep, NULL, 0, 0));
    deleted = 999;
    CHECK_OK(ck_cache_delete_many(dep, NULL, 0, &deleted));
    CHECK(deleted == 0);

    /* set_many with a TTL. */
    packer ttl_pairs = {0};
    pack_str(&ttl_pairs, "bm:t1");
    pack_str(&ttl_pairs, "1");
    pack_str(&ttl_pairs, "bm:t2");
    pack_str(&ttl_pairs, "2");
    CHECK_OK(ck_cache_set_many(dep, ttl_pairs.data, ttl_pairs.len, 60));
    bool found = false;
    CHECK_OK(ck_cache_has(dep, KEY("bm:t2"), &found));
    CHECK(found == true);
    sleep_ms(200);
    CHECK_OK(ck_cache_has(dep, KEY("bm:t1"), &found));
    CHECK(found == false);
    pack_free(&ttl_pairs);

    /* Malformed lists: cut length, an entry longer than the rest, odd pairs, bad keys. The
     * out-parameters are untouched. */
    out = SENTINEL(ck_buf);
    deleted = 999;
    const uint8_t cut[] = {5, 0, 0};
    CHECK_INVALID(ck_cache_get_many(dep, cut, sizeof cut, &out), "packed_keys");
    CHECK(strstr(ck_last_error(), "cut short") != NULL);
    CHECK_INVALID(ck_cache_set_many(dep, cut, sizeof cut, 0), "packed_pairs");
    CHECK_INVALID(ck_cache_delete_many(dep, cut, sizeof cut, &deleted), "packed_keys");
    pack_str(&bad, "bm:a");
    pack_raw_u32(&bad, 2); /* a second entry cut after its length word... */
    bad.data[bad.len++] = 'x'; /* ...with one of its two bytes */
    CHECK_INVALID(ck_cache_get_many(dep, bad.data, bad.len, &out), "packed_keys");
    CHECK(strstr(ck_last_error(), "entry 1") != NULL);
    CHECK_INVALID(ck_cache_delete_many(dep, bad.data, bad.len, &deleted), "packed_keys");
    pack_free(&bad);
    pack_raw_u32(&bad, 0xFFFFFFF0u); /* far longer than the list */
    pack_str(&bad, "bm:a");
    CHECK_INVALID(ck_cache_get_many(dep, bad.data, bad.len, &out), "packed_keys");
    CHECK_INVALID(ck_cache_set_many(dep, bad.data, bad.len, 0), "packed_pairs");
    pack_free(&bad);
    /* Pairs cut after a key, and pairs with a trailing partial entry. */
    pack_str(&bad, "bm:odd1");
    pack_str(&bad, "v");
    pack_str(&bad, "bm:odd2");
    CHECK_INVALID(ck_cache_set_many(dep, bad.data, bad.len, 0), "packed_pairs");
    CHECK(strstr(ck_last_error(), "3 entries") != NULL);
    found = true;
    CHECK_OK(ck_cache_has(dep, KEY("bm:odd1"), &found));
    CHECK(found == false); /* nothing of a rejected list is written */
    pack_free(&bad);
    /* An empty key or an oversized key inside a list. */
    pack_str(&bad, "bm:a");
    pack_str(&bad, "");
    CHECK_INVALID(ck_cache_get_many(dep, bad.data, bad.len, &out), "key");
    CHECK_INVALID(ck_cache_delete_many(dep, bad.data, bad.len, &deleted), "key");
    pack_free(&bad);
    pack_bytes(&bad, big_key, sizeof big_key);
    pack_str(&bad, "v");
    CHECK_INVALID(ck_cache_set_many(dep, bad.data, bad.len, 0), "key");
    CHECK_INVALID(ck_cache_get_many(dep, bad.data, bad.len - 5, &out), "key");
    pack_free(&bad);
    /* NULL arguments. */
    CHECK_INVALID(ck_cache_get_many(NULL, keys.data, keys.len, &out), "dep");
    CHECK_INVALID(ck_cache_get_many(dep, keys.data, keys.len, NULL), "out");
    CHECK_INVALID(ck_cache_get_many(dep, NULL, 8, &out), "packed_keys");
    CHECK_INVALID(ck_cache_set_many(NULL, pairs.data, pairs.len, 0), "dep");
    CHECK_INVALID(ck_cache_set_many(dep, NULL, 8, 0), "packed_pairs");
    CHECK_INVALID(ck_cache_delete_many(NULL, keys.data, keys.len, &deleted), "dep");
    CHECK_INVALID(ck_cache_delete_many(dep, NULL, 8, &deleted), "packed_keys");
    CHECK(out == SENTINEL(ck_buf));
    CHECK(deleted == 999);

    /* delete_many counts the keys that existed; `deleted` may be NULL. */
    deleted = 999;
    CHECK_OK(ck_cache_delete_many(dep, keys.data, keys.len, &deleted));
    CHECK(deleted == 43); /* 44 keys, bm:missing absent */
    deleted = 999;
    CHECK_OK(ck_cache_delete_many(dep, keys.data, keys.len, &deleted));
    CHECK(deleted == 0);
    CHECK_OK(ck_cache_delete_many(dep, keys.data, keys.len, NULL));
    out = NULL;
    CHECK_OK(ck_cache_get_many(dep, keys.data, keys.len, &out));
    CHECK(out != NULL && ck_buf_len(out) == 44 * 4); /* every one absent */
    ck_buf_free(out);

    pack_free(&pairs);
    pack_free(&keys);
}

static void cache_clear(ck_deployment *dep) {
    uint64_t deleted = 0;
    CHECK_OK(ck_cache_clear(dep, NULL));
    CHECK_OK(ck_cache_set(dep, KEY("cl:1"), KEY("1"), 0));
    CHECK_OK(ck_cache_set(dep, KEY("cl:2"), KEY("2"), 0));
    CHECK_OK(ck_cache_set(dep, KEY("cl:3"), KEY("3"), 60000));
    CHECK_OK(ck_cache_clear(dep, &deleted));
    CHECK(deleted == 3);
    bool found = true;
    CHECK_OK(ck_cache_has(dep, KEY("cl:2"), &found));
    CHECK(found == false);
    deleted = 99;
    CHECK_OK(ck_cache_clear(dep, &deleted));
    CHECK(deleted == 0);
    deleted = 99;
    CHECK_INVALID(ck_cache_clear(NULL, &deleted), "dep");
    CHECK(deleted == 99);
}

/* TTLs: 0 is "no expiry", CK_MAX_CACHE_TTL_MS (100 years) is the longest; more (for
 * example a negative number of a caller converted to uint64_t) is refused with a message
 * naming ttl_ms, on every call that takes a TTL, and nothing is written. */
static void cache_ttl_bounds(ck_deployment *dep) {
    bool added = true;
    CHECK_OK(ck_cache_set(dep, KEY("tb:max"), KEY("v"), CK_MAX_CACHE_TTL_MS));
    ck_buf *buf = NULL;
    CHECK_OK(ck_cache_get(dep, KEY("tb:max"), &buf));
    CHECK(buf_is(buf, "v"));
    ck_buf_free(buf);
    const uint64_t too_long[] = {CK_MAX_CACHE_TTL_MS + 1, (uint64_t)-1000, UINT64_MAX};
    for (size_t i = 0; i < sizeof too_long / sizeof too_long[0]; i++) {
        CHECK_INVALID(ck_cache_set(dep, KEY("tb:over"), KEY("v"), too_long[i]), "ttl_ms");
        CHECK(strstr(ck_last_error(), "3153600000000") != NULL);
        CHECK_INVALID(ck_cache_add(dep, KEY("tb:over"), KEY("v"), too_long[i], &added), "ttl_ms");
        CHECK(added == true); /* untouched */
        packer pairs = {0};
        pack_str(&pairs, "tb:over");
        pack_str(&pairs, "v");
        CHECK_INVALID(ck_cache_set_many(dep, pairs.data, pairs.len, too_long[i]), "ttl_ms");
        pack_free(&pairs);
    }
    bool has = true;
    CHECK_OK(ck_cache_has(dep, KEY("tb:over"), &has));
    CHECK(!has);
    CHECK_OK(ck_cache_delete(dep, KEY("tb:max"), NULL));
}

void cache_suite(ck_deployment *dep) {
    cache_basics(dep);
    cache_ttl_bounds(dep);
    cache_get_into(dep);
    cache_add_has_increment(dep);
    cache_batches(dep);
    cache_clear(dep);
}

void reader_suite(ck_deployment *dep) {
    ck_reader *r = SENTINEL(ck_reader);
    CHECK_INVALID(ck_reader_new(NULL, 64, &r), "dep");
    CHECK_INVALID(ck_reader_new(dep, 64, NULL), "out");
    CHECK_INVALID(ck_reader_new(dep, 0, &r), "capacity");
    CHECK_INVALID(ck_reader_new(dep, ((size_t)16 << 20) + 1, &r), "capacity");
    CHECK_INVALID(ck_reader_new(dep, SIZE_MAX, &r), "capacity");
    CHECK(r == SENTINEL(ck_reader));

    r = NULL;
    CHECK_OK(ck_reader_new(dep, 8, &r));
    if (r == NULL) return;
    const uint8_t *data = ck_reader_data(r);
    CHECK(data != NULL);
    CHECK(ck_reader_value(r) == NULL); /* before the first hit */

    const uint8_t bin[] = {'x', 0, 'y'};
    CHECK_OK(ck_cache_set(dep, KEY("rd:small"), bin, sizeof bin, 0));
    CHECK_OK(ck_cache_set(dep, KEY("rd:exact"), KEY("12345678"), 0));
    CHECK_OK(ck_cache_set(dep, KEY("rd:large"), KEY("larger than eight bytes"), 0));
    CHECK_OK(ck_cache_set(dep, KEY("rd:empty"), NULL, 0, 0));
    CHECK_OK(ck_cache_delete(dep, KEY("rd:missing"), NULL));

    /* Fits: the value is at the start of the fixed buffer, and ck_reader_value points at
     * it too. */
    CHECK(ck_reader_get(r, KEY("rd:small")) == (int64_t)sizeof bin);
    CHECK(memcmp(data, bin, sizeof bin) == 0);
    CHECK(ck_reader_value(r) != NULL && memcmp(ck_reader_value(r), bin, sizeof bin) == 0);
    CHECK(ck_reader_data(r) == data); /* fixed for the reader's life */
    CHECK(ck_reader_get(r, KEY("rd:exact")) == 8);
    CHECK(memcmp(data, "12345678", 8) == 0);
    /* Larger than the capacity: held by the reader, at ck_reader_value. */
    int64_t n = ck_reader_get(r, KEY("rd:large"));
    CHECK(n == (int64_t)strlen("larger than eight bytes"));
    CHECK(ck_reader_value(r) != NULL && ck_reader_value(r) != data);
    CHECK(n > 0 && ck_reader_value(r) != NULL &&
          memcmp(ck_reader_value(r), "larger than eight bytes", (size_t)n) == 0);
    CHECK(ck_reader_data(r) == data);
    CHECK(ck_reader_get(r, KEY("rd:empty")) == 0);
    /* A miss is -CK_NOT_FOUND and leaves the last error as it was (an ordinary outcome);
     * failures are minus the status, with the message. */
    CHECK(ck_cache_get(dep, KEY("rd:missing"), &(ck_buf *){NULL}) == CK_NOT_FOUND);
    CHECK(ck_reader_get(r, KEY("rd:missing")) == -(int64_t)CK_NOT_FOUND);
    CHECK(strstr(ck_last_error(), "no such key") != NULL);
    CHECK(ck_reader_get(r, (const uint8_t *)"", 0) == -(int64_t)CK_INVALID_ARGUMENT);
    CHECK(strstr(ck_last_error(), "key") != NULL);
    CHECK(ck_reader_get(r, NULL, 3) == -(int64_t)CK_INVALID_ARGUMENT);
    CHECK(strstr(ck_last_error(), "key") != NULL);
    CHECK(ck_reader_get(r, big_key, sizeof big_key) == -(int64_t)CK_INVALID_ARGUMENT);
    CHECK(strstr(ck_last_error(), "key") != NULL);
    CHECK(ck_reader_get(NULL, KEY("rd:small")) == -(int64_t)CK_INVALID_ARGUMENT);
    CHECK(strstr(ck_last_error(), "reader") != NULL);
    /* Still works after failures. */
    CHECK(ck_reader_get(r, KEY("rd:small")) == (int64_t)sizeof bin);
    CHECK(memcmp(data, bin, sizeof bin) == 0);
    ck_reader_free(r);
    ck_reader_free(NULL); /* a no-op */
    CHECK(ck_reader_data(NULL) == NULL);
    CHECK(ck_reader_value(NULL) == NULL);
}

/* The embedded deployment: the shared suites plus what only the embedded backend makes
 * cheap to check. */
void test_embedded_backends(void) {
    ck_deployment *dep = NULL;
    CHECK_OK(ck_deployment_new(EMBEDDED_CONFIG, &dep));
    if (dep == NULL) return;
    ck_context = "embedded cache";
    cache_suite(dep);
    ck_context = "embedded reader";
    reader_suite(dep);

    ck_context = "embedded values";
    /* Values are limited to 16 MiB by default; a large value that fits round-trips. */
    size_t huge_len = ((size_t)16 << 20) + 1;
    uint8_t *huge = calloc(huge_len, 1);
    CHECK(huge != NULL);
    if (huge) {
        CHECK_INVALID(ck_cache_set(dep, KEY("huge"), huge, huge_len, 0), "value");
        bool added = false;
        CHECK_INVALID(ck_cache_add(dep, KEY("huge"), huge, huge_len, 0, &added), "value");
        huge[0] = 7;
        huge[(1 << 20) - 1] = 9;
        CHECK_OK(ck_cache_set(dep, KEY("huge"), huge, 1 << 20, 0));
        ck_buf *buf = NULL;
        CHECK_OK(ck_cache_get(dep, KEY("huge"), &buf));
        CHECK(buf != NULL && ck_buf_len(buf) == 1 << 20);
        CHECK(buf != NULL && ck_buf_data(buf)[0] == 7 && ck_buf_data(buf)[(1 << 20) - 1] == 9);
        ck_buf_free(buf);
        /* A reader with the largest capacity holds it in its buffer. */
        ck_reader *r = NULL;
        CHECK_OK(ck_reader_new(dep, (size_t)16 << 20, &r));
        CHECK(ck_reader_get(r, KEY("huge")) == 1 << 20);
        CHECK(r && ck_reader_data(r)[0] == 7 && ck_reader_data(r)[(1 << 20) - 1] == 9);
        ck_reader_free(r);
        CHECK_OK(ck_cache_delete(dep, KEY("huge"), NULL));
        free(huge);
    }
    /* A deployment with a smaller value limit. */
    ck_deployment *small = NULL;
    CHECK_OK(ck_deployment_new("[cache]\nmax_value_bytes = 8\n", &small));
    if (small) {
        CHECK_OK(ck_cache_set(small, KEY("k"), KEY("12345678"), 0));
        CHECK_INVALID(ck_cache_set(small, KEY("k"), KEY("123456789"), 0), "value");
        packer pairs = {0};
        pack_str(&pairs, "k");
        pack_str(&pairs, "too long a value");
        CHECK_INVALID(ck_cache_set_many(small, pairs.data, pairs.len, 0), "value");
        pack_free(&pairs);
        ck_deployment_free(small);
    }
    /* A reader keeps its deployment alive after the handle is freed. */
    ck_deployment *tmp = NULL;
    CHECK_OK(ck_deployment_new("", &tmp));
    ck_reader *r = NULL;
    if (tmp) {
        CHECK_OK(ck_cache_set(tmp, KEY("kept"), KEY("alive"), 0));
        CHECK_OK(ck_reader_new(tmp, 16, &r));
        ck_deployment_free(tmp);
        CHECK(ck_reader_get(r, KEY("kept")) == 5);
        CHECK(r && memcmp(ck_reader_data(r), "alive", 5) == 0);
        ck_reader_free(r);
    }

    ck_context = "embedded locks";
    lock_suite(dep);
    ck_context = "embedded sessions";
    ck_deployment *again = NULL;
    /* Embedded sessions live in the deployment: a second handle must be on the same one. */
    CHECK_OK(ck_deployment_shared(EMBEDDED_CONFIG, &again));
    session_suite(dep, dep);
    if (again) {
        /* Shared handles of one deployment see one session store. */
        ck_deployment *again2 = NULL;
        CHECK_OK(ck_deployment_shared(EMBEDDED_CONFIG, &again2));
        ck_session *s = NULL;
        CHECK_OK(ck_session_create(again, &s));
        CHECK_OK(ck_session_set(s, "k", KEY("v")));
        CHECK_OK(ck_session_save(again, s));
        ck_session *t = NULL;
        CHECK_OK(ck_session_load(again2, (const uint8_t *)ck_session_id(s), 32, false, &t));
        ck_session_free(t);
        /* ...and another deployment does not. */
        t = SENTINEL(ck_session);
        CHECK_ST(ck_session_load(dep, (const uint8_t *)ck_session_id(s), 32, false, &t), CK_NOT_FOUND);
        CHECK(t == SENTINEL(ck_session));
        ck_session_free(s);
        ck_deployment_free(again2);
        ck_deployment_free(again);
    }
    ck_deployment *short_lock = NULL;
    CHECK_OK(ck_deployment_new("[sessions]\nlock_ttl = \"150ms\"\nlock_wait = \"100ms\"\n", &short_lock));
    if (short_lock) {
        session_lock_lost_suite(short_lock);
        ck_deployment_free(short_lock);
    }
    ck_deployment_free(dep);
}
