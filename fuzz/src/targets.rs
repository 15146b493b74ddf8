//! The fuzz targets: each takes one input and returns an outcome signature (inputs with a
//! new signature join the in-memory corpus: a cheap stand-in for coverage) or a bug.

use std::ffi::{c_char, c_void, CString};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use clusterkit::fuzzing;
use clusterkit::{Config, Error};

/// What one input did.
pub enum Outcome {
    /// No bug; inputs with a signature not seen before are kept.
    Ok(u64),
    /// A property that must hold did not (the message says which).
    Bug(String),
}

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> Outcome,
    pub dict: &'static [&'static [u8]],
    pub max_len: usize,
}

fn sig<T: Hash>(v: T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Every field name of the config document (error signatures use them, not user keys).
const FIELD_NAMES: &[&str] = &[
    "document",
    "pools",
    "cache",
    "locks",
    "sessions",
    "strategy",
    "nodes",
    "panic_mode",
    "panic_threshold",
    "bounded_load",
    "maglev_table_size",
    "health",
    "outlier",
    "slow_start",
    "discovery",
    "id",
    "host",
    "port",
    "weight",
    "zone",
    "metadata",
    "check",
    "path",
    "expected_status",
    "interval",
    "timeout",
    "rise",
    "fall",
    "jitter",
    "consecutive_failures",
    "base_ejection_time",
    "max_ejection_time",
    "max_ejected_percent",
    "redis",
    "service",
    "ttl",
    "key_prefix",
    "pool",
    "namespace",
    "replicas",
    "write_quorum",
    "on_unavailable",
    "batch_chunk",
    "max_value_bytes",
    "max_bytes",
    "auto_renew",
    "idle_timeout",
    "absolute_timeout",
    "refresh_interval",
    "lock_ttl",
    "lock_wait",
];

/// An error's signature: its kind, the last segment of its field when that is a field
/// name (not a user's map key), and the first words of its message.
fn err_sig(e: &Error) -> u64 {
    let words = |m: &str| -> String {
        m.chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == ' ')
            .take(24)
            .collect()
    };
    match e {
        Error::InvalidArgument { field, message } => {
            let last = field.rsplit('.').next().unwrap_or_default();
            let last = last.split('[').next().unwrap_or_default();
            // A user's pool or metadata key is not a field name: all of them sign alike.
            let name = if FIELD_NAMES.contains(&last) {
                last
            } else {
                "?"
            };
            sig(("invalid", name, words(message)))
        }
        other => sig((other.kind().as_str(), words(&other.to_string()))),
    }
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "config_toml",
        run: config_toml,
        dict: CONFIG_DICT,
        max_len: 4096,
    },
    Target {
        name: "config_json",
        run: config_json,
        dict: CONFIG_DICT,
        max_len: 4096,
    },
    Target {
        name: "ffi",
        run: ffi,
        dict: FFI_DICT,
        max_len: 2048,
    },
    Target {
        name: "session_id",
        run: session_id,
        dict: ID_DICT,
        max_len: 128,
    },
    Target {
        name: "session_reply",
        run: session_reply,
        dict: RESP_DICT,
        max_len: 2048,
    },
    Target {
        name: "lock_reply",
        run: lock_reply,
        dict: RESP_DICT,
        max_len: 1024,
    },
    Target {
        name: "cache_reply",
        run: cache_reply,
        dict: RESP_DICT,
        max_len: 2048,
    },
];

/// Targets that prove the harness catches what it claims (run only when named; the
/// harness test runs them): a panic, a broken property, a hang.
pub const SELF_TESTS: &[Target] = &[
    Target {
        name: "selftest_panic",
        run: |d| {
            if d.len() >= 3 {
                // The harness must count this as a crash.
                #[allow(clippy::panic)]
                {
                    panic!("self-test panic on {} bytes", d.len());
                }
            }
            Outcome::Ok(d.len() as u64)
        },
        dict: &[],
        max_len: 16,
    },
    Target {
        name: "selftest_bug",
        run: |d| match d.len() {
            0..=2 => Outcome::Ok(d.len() as u64),
            _ => Outcome::Bug("self-test property".into()),
        },
        dict: &[],
        max_len: 16,
    },
    Target {
        name: "selftest_hang",
        run: |d| {
            if !d.is_empty() {
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
            Outcome::Ok(0)
        },
        dict: &[],
        max_len: 16,
    },
];

// ---------------------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------------------

const CONFIG_DICT: &[&[u8]] = &[
    b"[pools.app]\n",
    b"[pools.cache]\n",
    b"[cache]\n",
    b"[locks]\n",
    b"[sessions]\n",
    b"strategy = \"maglev\"\n",
    b"strategy = \"ketama\"\n",
    b"strategy = \"weighted_round_robin\"\n",
    b"nodes = [ { id = \"a\", host = \"127.0.0.1\", port = 1 } ]\n",
    b"{ id = \"b\", host = \"::1\", port = 65535, weight = 256, zone = \"z\", metadata = { k = \"v\" } }",
    b"health = { check = \"http\", path = \"/h\", interval = \"2s\", rise = 2, fall = 3 }\n",
    b"outlier = { consecutive_failures = 5, base_ejection_time = \"30s\", max_ejected_percent = 50 }\n",
    b"discovery = { redis = \"127.0.0.1:6379\", service = \"web\", ttl = \"10s\", interval = \"1s\" }\n",
    b"maglev_table_size = ",
    b"bounded_load = ",
    b"panic_threshold = ",
    b"slow_start = \"",
    b"panic_mode = \"error\"\n",
    b"expected_status = [",
    b"jitter = ",
    b"pool = \"cache\"\n",
    b"redis = \"127.0.0.1:6379\"\n",
    b"namespace = \"",
    b"replicas = ",
    b"batch_chunk = ",
    b"max_bytes = ",
    b"max_value_bytes = ",
    b"write_quorum = \"majority\"\n",
    b"timeout = \"",
    b"key_prefix = \"",
    b"auto_renew = true\n",
    b"idle_timeout = \"",
    b"absolute_timeout = \"",
    b"refresh_interval = \"",
    b"lock_ttl = \"",
    b"lock_wait = \"",
    b"ms\"",
    b"us\"",
    b"s\"",
    b"m\"",
    b"h\"",
    b"\xc2\xb5s\"",
    b"\"",
    b" = ",
    b"\n",
    b"[[",
    b"]]",
    b"{\"pools\":{\"app\":{",
    b"\"nodes\":[{\"id\":\"a\",\"host\":\"h\",\"port\":1}]",
    b"\"health\":{\"check\":\"tcp\",",
    b"\"cache\":{",
    b"\"sessions\":{",
    b"\"locks\":{",
    b"\"port\":",
    b"\"interval\":\"",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\\u0000",
    b"\\uD800",
];

fn config_outcome(r: clusterkit::Result<Config>) -> Outcome {
    match r {
        Err(e) => {
            // Messages stay short whatever the input (path and message are bounded).
            if e.to_string().len() > 1500 {
                return Outcome::Bug(format!("error message of {} bytes", e.to_string().len()));
            }
            Outcome::Ok(err_sig(&e))
        }
        Ok(c) => {
            // A document that parses is written back and parses to the same document.
            let json = match serde_json::to_string(&c) {
                Ok(j) => j,
                Err(e) => return Outcome::Bug(format!("accepted config does not serialize: {e}")),
            };
            match Config::parse(&json) {
                Ok(again) if again == c => {}
                Ok(_) => {
                    return Outcome::Bug(format!("JSON round trip changed the config: {json}"))
                }
                Err(e) => {
                    return Outcome::Bug(format!(
                        "accepted config refused when written back: {e}: {json}"
                    ))
                }
            }
            Outcome::Ok(sig((
                "ok",
                c.pools.len(),
                c.cache.is_some(),
                c.locks.is_some(),
                c.sessions.is_some(),
                c.pools.values().map(|p| p.nodes.len()).sum::<usize>(),
            )))
        }
    }
}

fn config_toml(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    config_outcome(Config::from_toml(&text))
}

fn config_json(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    config_outcome(Config::from_json(&text))
}

// ---------------------------------------------------------------------------------------
// The C ABI, through its exported functions only (the crate's module layout is not used).
// ---------------------------------------------------------------------------------------

// Link the C ABI crate; its `ck_*` symbols are declared below like a C caller sees them.
use clusterkit_ffi as _;

type Status = i32;
const CK_OK: Status = 0;
const CK_INTERNAL: Status = 8;

extern "C" {
    fn ck_deployment_new(config: *const c_char, out: *mut *mut c_void) -> Status;
    fn ck_buf_data(buf: *const c_void) -> *const u8;
    fn ck_buf_len(buf: *const c_void) -> usize;
    fn ck_buf_free(buf: *mut c_void);
    fn ck_cache_get(
        dep: *const c_void,
        key: *const u8,
        len: usize,
        out: *mut *mut c_void,
    ) -> Status;
    fn ck_cache_set(
        dep: *const c_void,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
        ttl_ms: u64,
    ) -> Status;
    fn ck_cache_add(
        dep: *const c_void,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
        ttl_ms: u64,
        added: *mut bool,
    ) -> Status;
    fn ck_cache_has(dep: *const c_void, key: *const u8, len: usize, found: *mut bool) -> Status;
    fn ck_cache_delete(
        dep: *const c_void,
        key: *const u8,
        len: usize,
        existed: *mut bool,
    ) -> Status;
    fn ck_cache_increment(
        dep: *const c_void,
        key: *const u8,
        len: usize,
        delta: i64,
        out: *mut i64,
    ) -> Status;
    fn ck_cache_get_many(
        dep: *const c_void,
        packed: *const u8,
        len: usize,
        out: *mut *mut c_void,
    ) -> Status;
    fn ck_cache_set_many(dep: *const c_void, packed: *const u8, len: usize, ttl_ms: u64) -> Status;
    fn ck_cache_delete_many(
        dep: *const c_void,
        packed: *const u8,
        len: usize,
        deleted: *mut u64,
    ) -> Status;
    fn ck_lock_acquire(
        dep: *const c_void,
        name: *const c_char,
        ttl_ms: u64,
        wait_ms: u64,
        out: *mut *mut c_void,
    ) -> Status;
    fn ck_lock_release(l: *const c_void) -> Status;
    fn ck_lock_free(l: *mut c_void);
    fn ck_session_load(
        dep: *const c_void,
        id: *const u8,
        len: usize,
        lock: bool,
        out: *mut *mut c_void,
    ) -> Status;
    fn ck_session_set(s: *mut c_void, name: *const c_char, value: *const u8, len: usize) -> Status;
    fn ck_session_get(
        s: *const c_void,
        name: *const c_char,
        data: *mut *const u8,
        len: *mut usize,
    ) -> Status;
    fn ck_session_keys(s: *const c_void, out: *mut *mut c_void) -> Status;
    fn ck_session_free(s: *mut c_void);
    fn ck_cluster_new(
        name: *const c_char,
        strategy: *const c_char,
        out: *mut *mut c_void,
    ) -> Status;
    fn ck_cluster_add_node(
        c: *const c_void,
        id: *const c_char,
        host: *const c_char,
        port: u16,
        weight: u32,
        zone: *const c_char,
        metadata_json: *const c_char,
    ) -> Status;
    fn ck_cluster_free(c: *mut c_void);
}

const FFI_DICT: &[&[u8]] = &[
    b"\x00\x00\x00\x00",
    b"\x01\x00\x00\x00a",
    b"\x03\x00\x00\x00key",
    b"\xff\xff\xff\xff",
    b"\xfe\xff\xff\xff",
    b"\xff\xff\xff\x7f",
    b"\x00\x10\x00\x00",
    b"\x00\x00\x01\x00",
    b"\x00",
    b"{\"role\":\"web\"}",
    b"maglev",
    b"ketama",
    b"p2c",
    b"127.0.0.1",
    b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
];

/// The embedded deployment every FFI input runs against (created once, never freed).
fn deployment() -> *const c_void {
    static DEP: OnceLock<usize> = OnceLock::new();
    *DEP.get_or_init(|| {
        let cfg = c"[cache]\nmax_bytes = 4194304\n[sessions]\nlock_wait = \"0ms\"\n";
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: a valid NUL-terminated string and out-pointer.
        let st = unsafe { ck_deployment_new(cfg.as_ptr(), &mut out) };
        assert_eq!(st, CK_OK, "the embedded deployment must build");
        out as usize
    }) as *const c_void
}

/// The reference reading of a packed list: entries of a 4-byte little-endian length and
/// that many bytes; 0xFFFFFFFF is an absent value (no bytes follow).
fn unpack(mut b: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (head, rest) = b.split_first_chunk::<4>()?;
        let n = u32::from_le_bytes(*head);
        if n == u32::MAX {
            out.push(None);
            b = rest;
            continue;
        }
        let n = n as usize;
        if n > rest.len() {
            return None;
        }
        out.push(Some(&rest[..n]));
        b = &rest[n..];
    }
    Some(out)
}

/// Copies a returned buffer and frees it.
///
/// # Safety
/// `buf` is a live buffer handed out by the library.
unsafe fn take_buf(buf: *mut c_void) -> Vec<u8> {
    // SAFETY: the caller's promise.
    let v = unsafe {
        let p = ck_buf_data(buf);
        let n = ck_buf_len(buf);
        if p.is_null() || n == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p, n).to_vec()
        }
    };
    // SAFETY: as above; freed once.
    unsafe { ck_buf_free(buf) };
    v
}

/// A C string of `b` up to its first NUL.
fn cstr(b: &[u8]) -> CString {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    CString::new(&b[..end]).unwrap_or_default()
}

fn ffi(data: &[u8]) -> Outcome {
    let Some((&op, rest)) = data.split_first() else {
        return Outcome::Ok(0);
    };
    let dep = deployment();
    let mut statuses: Vec<Status> = Vec::new();
    // SAFETY: every pointer below is valid for the stated length, out-pointers point at
    // locals, and handles are freed once.
    unsafe {
        match op % 8 {
            0 => {
                let mut out: *mut c_void = std::ptr::null_mut();
                let st = ck_cache_get_many(dep, rest.as_ptr(), rest.len(), &mut out);
                statuses.push(st);
                if st == CK_OK {
                    let buf = take_buf(out);
                    let (Some(keys), Some(values)) = (unpack(rest), unpack(&buf)) else {
                        return Outcome::Bug("get_many accepted a list the reference refuses or returned a malformed one".into());
                    };
                    if keys.len() != values.len() {
                        return Outcome::Bug(format!(
                            "get_many: {} keys, {} values",
                            keys.len(),
                            values.len()
                        ));
                    }
                }
            }
            1 => {
                let ttl = u64::from(rest.first().copied().unwrap_or(0)) * 1000;
                statuses.push(ck_cache_set_many(dep, rest.as_ptr(), rest.len(), ttl));
                if statuses[0] == CK_OK && unpack(rest).is_none_or(|e| e.len() % 2 != 0) {
                    return Outcome::Bug("set_many accepted a malformed or odd list".into());
                }
            }
            2 => {
                let mut n = 0u64;
                let st = ck_cache_delete_many(dep, rest.as_ptr(), rest.len(), &mut n);
                statuses.push(st);
                if st == CK_OK {
                    match unpack(rest) {
                        Some(keys) if n as usize <= keys.len() => {}
                        _ => return Outcome::Bug(format!("delete_many deleted {n}")),
                    }
                }
            }
            3 => {
                let (k, v) = (rest.as_ptr(), rest.len());
                statuses.push(ck_cache_set(dep, k, v, k, v, 60_000));
                let mut out: *mut c_void = std::ptr::null_mut();
                let st = ck_cache_get(dep, k, v, &mut out);
                statuses.push(st);
                if st == CK_OK {
                    let got = take_buf(out);
                    if statuses[0] == CK_OK && got != rest {
                        return Outcome::Bug("get did not return what set stored".into());
                    }
                }
                let mut b = false;
                statuses.push(ck_cache_has(dep, k, v, &mut b));
                statuses.push(ck_cache_add(dep, k, v, k, v, 0, &mut b));
                let mut n = 0i64;
                let delta = i64::from_le_bytes(
                    rest.get(..8)
                        .and_then(|s| s.try_into().ok())
                        .unwrap_or([1, 0, 0, 0, 0, 0, 0, 0]),
                );
                statuses.push(ck_cache_increment(dep, k, v, delta, &mut n));
                statuses.push(ck_cache_delete(dep, k, v, &mut b));
            }
            4 => {
                let name = cstr(rest);
                let ttl = u64::from(rest.first().copied().unwrap_or(1));
                let mut l: *mut c_void = std::ptr::null_mut();
                let st = ck_lock_acquire(dep, name.as_ptr(), ttl * 100, 0, &mut l);
                statuses.push(st);
                if st == CK_OK {
                    statuses.push(ck_lock_release(l));
                    ck_lock_free(l);
                }
            }
            5 => {
                let mut s: *mut c_void = std::ptr::null_mut();
                let st = ck_session_load(dep, rest.as_ptr(), rest.len(), op & 8 != 0, &mut s);
                statuses.push(st);
                if st == CK_OK && !s.is_null() {
                    let name = cstr(rest.get(1..).unwrap_or_default());
                    statuses.push(ck_session_set(s, name.as_ptr(), rest.as_ptr(), rest.len()));
                    let (mut p, mut n) = (std::ptr::null(), 0usize);
                    statuses.push(ck_session_get(s, name.as_ptr(), &mut p, &mut n));
                    let mut out: *mut c_void = std::ptr::null_mut();
                    let st = ck_session_keys(s, &mut out);
                    statuses.push(st);
                    if st == CK_OK && unpack(&take_buf(out)).is_none() {
                        return Outcome::Bug("session keys: malformed packed list".into());
                    }
                    ck_session_free(s);
                }
            }
            6 => {
                let mut parts = rest.split(|&b| b == 0);
                let mut next = || cstr(parts.next().unwrap_or_default());
                let (name, strategy, id, host, zone, meta) =
                    (next(), next(), next(), next(), next(), next());
                let mut c: *mut c_void = std::ptr::null_mut();
                let st = ck_cluster_new(name.as_ptr(), strategy.as_ptr(), &mut c);
                statuses.push(st);
                if st == CK_OK {
                    let port = u16::from(op) << 4 | u16::from(rest.len() as u8);
                    let weight = u32::from(rest.last().copied().unwrap_or(1));
                    let zone_p = if zone.is_empty() {
                        std::ptr::null()
                    } else {
                        zone.as_ptr()
                    };
                    let meta_p = if meta.is_empty() {
                        std::ptr::null()
                    } else {
                        meta.as_ptr()
                    };
                    statuses.push(ck_cluster_add_node(
                        c,
                        id.as_ptr(),
                        host.as_ptr(),
                        port,
                        weight,
                        zone_p,
                        meta_p,
                    ));
                    ck_cluster_free(c);
                }
            }
            _ => {
                // NULL and empty arguments: refused, never a crash.
                let mut out: *mut c_void = std::ptr::null_mut();
                // (NULL, 0) is an empty buffer; NULL with a length is refused.
                statuses.push(ck_cache_get_many(
                    dep,
                    std::ptr::null(),
                    rest.len().max(1),
                    &mut out,
                ));
                statuses.push(ck_cache_get(dep, std::ptr::null(), 0, &mut out));
                statuses.push(ck_cache_get(
                    std::ptr::null(),
                    rest.as_ptr(),
                    rest.len(),
                    &mut out,
                ));
                statuses.push(ck_session_load(
                    dep,
                    rest.as_ptr(),
                    rest.len(),
                    false,
                    std::ptr::null_mut(),
                ));
                if statuses.contains(&CK_OK) {
                    return Outcome::Bug(format!("a NULL argument was accepted: {statuses:?}"));
                }
            }
        }
    }
    if statuses.contains(&CK_INTERNAL) {
        return Outcome::Bug(format!(
            "CK_INTERNAL (a caught panic) from op {}: {statuses:?}",
            op % 8
        ));
    }
    Outcome::Ok(sig((op % 8, statuses)))
}

// ---------------------------------------------------------------------------------------
// session ids
// ---------------------------------------------------------------------------------------

const ID_DICT: &[&[u8]] = &[
    b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    b"0123456789abcdefABCDEF-_",
    b"-",
    b"_",
    b"\xc3\xa9",
    b"\x00",
    b"{",
    b"}",
    b":",
    b"*",
];

fn session_id(data: &[u8]) -> Outcome {
    match fuzzing::session_id(data) {
        None => Outcome::Ok(sig(("miss", data.len().min(40)))),
        Some(id) => {
            let ok_char = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
            if id.as_bytes() != data || id.len() != 32 || !id.bytes().all(ok_char) {
                return Outcome::Bug(format!("accepted session id {id:?}"));
            }
            Outcome::Ok(sig("id"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reply decoders (inputs are RESP, parsed by redis-rs as the connection does)
// ---------------------------------------------------------------------------------------

const RESP_DICT: &[&[u8]] = &[
    b"*2\r\n",
    b"*3\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b":1\r\n",
    b":0\r\n",
    b":-1\r\n",
    b":-2\r\n",
    b":9223372036854775807\r\n",
    b":-9223372036854775808\r\n",
    b":65536\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$5\r\nhello\r\n",
    b"$11\r\n_ck:created\r\n",
    b"$13\r\n1700000000000\r\n",
    b"$3\r\nf:a\r\n",
    b"$9\r\n127.0.0.1\r\n",
    b"$1\r\n?\r\n",
    b"$0\r\n\r\n",
    b"+OK\r\n",
    b"-ERR no\r\n",
    b"_\r\n",
    b"%1\r\n",
    b"~2\r\n",
    b",1.5\r\n",
    b"#t\r\n",
    b"(12345678901234567890\r\n",
    b"=8\r\ntxt:abcd\r\n",
    b"CKX1",
    b"\r\n",
];

/// RESP bytes → a reply value. Inputs nest at most 64 aggregates deep (the parser recurses,
/// and no Redis reply the library reads nests deeper than three).
fn resp(data: &[u8]) -> Option<redis::Value> {
    let aggregates = data
        .iter()
        .filter(|&&b| matches!(b, b'*' | b'%' | b'~' | b'>' | b'|'))
        .count();
    if aggregates > 64 {
        return None;
    }
    redis::parse_redis_value(data).ok()
}

fn session_reply(data: &[u8]) -> Outcome {
    let Some((&mode, rest)) = data.split_first() else {
        return Outcome::Ok(0);
    };
    if mode % 2 == 0 {
        let Some(v) = resp(rest) else {
            return Outcome::Ok(1);
        };
        match fuzzing::session_lock_reply(v) {
            Err(e) => Outcome::Ok(err_sig(&e)),
            Ok(fuzzing::SessionLockReply::Busy(w)) => Outcome::Ok(sig(("busy", w.is_some()))),
            Ok(fuzzing::SessionLockReply::Missing) => Outcome::Ok(sig("missing")),
            Ok(fuzzing::SessionLockReply::Loaded(flat)) => {
                let n = flat.len();
                let decoded = fuzzing::session_hash(flat);
                Outcome::Ok(sig((
                    "loaded",
                    n.min(8),
                    decoded.map(|(f, _)| f.len().min(8)),
                )))
            }
        }
    } else {
        // A flat HGETALL list: entries of a 1-byte length and that many bytes.
        let mut flat = Vec::new();
        let mut b = rest;
        while let Some((&n, tail)) = b.split_first() {
            let n = (n as usize).min(tail.len());
            flat.push(tail[..n].to_vec());
            b = &tail[n..];
        }
        let n = flat.len();
        match fuzzing::session_hash(flat) {
            None => Outcome::Ok(sig(("none", n.min(8)))),
            Some((fields, _created)) => {
                if fields.len() * 2 > n {
                    return Outcome::Bug(format!("{} fields from {n} entries", fields.len()));
                }
                Outcome::Ok(sig(("some", fields.len().min(8))))
            }
        }
    }
}

fn lock_reply(data: &[u8]) -> Outcome {
    let Some(v) = resp(data) else {
        return Outcome::Ok(0);
    };
    match fuzzing::lock_acquire_reply(v) {
        Ok((ok, value)) => Outcome::Ok(sig(("ok", ok.clamp(-1, 2), value.signum()))),
        Err(e) => Outcome::Ok(err_sig(&e)),
    }
}

fn cache_reply(data: &[u8]) -> Outcome {
    let Some((&mode, rest)) = data.split_first() else {
        return Outcome::Ok(0);
    };
    match mode % 3 {
        0 => match fuzzing::cache_envelope(rest) {
            None => Outcome::Ok(1),
            Some((delta, expiry, payload)) => {
                if payload.len() + 16 != rest.len() {
                    return Outcome::Bug("envelope payload length".into());
                }
                let beta = f64::from(mode) / 16.0;
                let now = expiry.wrapping_add(u64::from(delta) ^ u64::from(mode));
                let early = fuzzing::cache_refresh_early(delta, expiry, beta, now);
                Outcome::Ok(sig(("env", early)))
            }
        },
        1 => {
            let ms = i64::from_le_bytes(
                rest.get(..8)
                    .and_then(|s| s.try_into().ok())
                    .unwrap_or_default(),
            );
            Outcome::Ok(sig(format!("{:?}", fuzzing::cache_pttl(ms)).len()))
        }
        _ => {
            let Some(v) = resp(rest) else {
                return Outcome::Ok(2);
            };
            let masters = fuzzing::cluster_slots(v, "127.0.0.1");
            if masters.iter().any(|(h, _)| h == "?" || h.is_empty()) {
                return Outcome::Bug(format!("unusable master in {masters:?}"));
            }
            Outcome::Ok(sig(("slots", masters.len().min(8))))
        }
    }
}
