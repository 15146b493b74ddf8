//! The blocking batch read over clusterkit's own RESP connection (core/src/cache/resp.rs):
//! what the C, PHP and Python layers' `get_many` use on the caller's thread. Real servers:
//! absent keys, empty and multi-megabyte values, batches over the chunk size, a password and
//! a database, a wrong password, a server that goes away and comes back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use clusterkit::blocking::block_on;
use clusterkit::cache::{Cache, RedisOptions};
use clusterkit::{ConnectionSettings, ErrorKind, Secret};

mod support;
use support::RedisServer;

fn get_many(c: &Cache, keys: &[Vec<u8>]) -> clusterkit::error::Result<Vec<Option<Vec<u8>>>> {
    block_on(c.get_many(keys))
        .unwrap()
        .map(|v| v.into_iter().map(|x| x.map(|b| b.to_vec())).collect())
}

/// The clients of `server` that last ran MGET without redis-rs's CLIENT SETINFO name: the
/// RESP connections of the batch read.
fn resp_mget_clients(server: &RedisServer) -> usize {
    let list = support::bulk_reply(server.port(), &["CLIENT", "LIST"], Duration::from_secs(2))
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| l.contains(" cmd=mget") && !l.contains("lib-name=redis-rs"))
        .count()
}

#[test]
fn batch_reads_over_the_resp_connection_match_what_was_stored() {
    let server = RedisServer::start();
    let c = Cache::redis(
        &server.addr(),
        "app",
        RedisOptions::default().with_batch_chunk(100),
    )
    .unwrap();
    let mut keys = Vec::new();
    let mut want = Vec::new();
    for i in 0..257usize {
        let k = format!("k{i}").into_bytes();
        let v: Option<Vec<u8>> = match i % 5 {
            0 => None,                                     // absent
            1 => Some(Vec::new()),                         // empty value
            2 => Some(b"a\r\nb\r\n$3\r\n*1\r\n".to_vec()), // protocol bytes inside a value
            3 => Some((0..=255u8).cycle().take(i * 37).collect()),
            _ => Some(format!("{i}").into_bytes()),
        };
        if let Some(v) = &v {
            block_on(c.set(&k, v.clone(), None)).unwrap().unwrap();
        }
        keys.push(k);
        want.push(v);
    }
    // 257 keys, chunk 100: three MGETs on one connection.
    assert_eq!(get_many(&c, &keys).unwrap(), want);
    assert!(
        resp_mget_clients(&server) >= 1,
        "the batch read did not use its RESP connection"
    );
    // Values larger than any read buffer (4 MiB, several reads each), mixed with misses.
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    block_on(c.set(b"big1", big.clone(), None))
        .unwrap()
        .unwrap();
    block_on(c.set(b"big2", big[..1 << 20].to_vec(), None))
        .unwrap()
        .unwrap();
    let ks = vec![b"big1".to_vec(), b"nope".to_vec(), b"big2".to_vec()];
    assert_eq!(
        get_many(&c, &ks).unwrap(),
        vec![Some(big.clone()), None, Some(big[..1 << 20].to_vec())]
    );
    // A key holding another type: MGET answers nil for it (Redis's rule), not an error.
    server.cmd(&["RPUSH", "app:list", "x"]);
    assert_eq!(
        get_many(&c, &[b"list".to_vec(), b"k4".to_vec()]).unwrap(),
        vec![None, Some(b"4".to_vec())]
    );
    // From several threads at once: every thread gets its own connection.
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (c, keys, want) = (&c, &keys, &want);
            s.spawn(move || {
                for _ in 0..20 {
                    assert_eq!(&get_many(c, keys).unwrap(), want);
                }
            });
        }
    });
}

/// Removes the test password again (AUTH, then CONFIG SET requirepass "").
struct Reset(u16);

impl Drop for Reset {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.0)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(
                b"*2\r\n$4\r\nAUTH\r\n$9\r\ns3cret-pw\r\n*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$0\r\n\r\n",
            );
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
    }
}

#[test]
fn batch_reads_authenticate_and_select_the_database() {
    let server = RedisServer::start();
    // The password is set after the start (the harness waits for an unauthenticated PING) and
    // removed at the end (its audit connects without one).
    assert_eq!(
        server.cmd(&["CONFIG", "SET", "requirepass", "s3cret-pw"]),
        "+OK"
    );
    let _reset = Reset(server.port());
    let settings = ConnectionSettings::default()
        .with_password(Secret::new("s3cret-pw"))
        .with_db(3);
    let c = Cache::redis(
        &server.addr(),
        "app",
        RedisOptions::default().with_connection(settings),
    )
    .unwrap();
    block_on(c.set(b"a", "1", None)).unwrap().unwrap();
    assert_eq!(
        get_many(&c, &[b"a".to_vec(), b"b".to_vec()]).unwrap(),
        vec![Some(b"1".to_vec()), None]
    );
    // The value is in database 3, not 0: the RESP connection selected it too.
    let wrong_db = Cache::redis(
        &server.addr(),
        "app",
        RedisOptions::default()
            .with_connection(ConnectionSettings::default().with_password(Secret::new("s3cret-pw"))),
    )
    .unwrap();
    assert_eq!(get_many(&wrong_db, &[b"a".to_vec()]).unwrap(), vec![None]);
    // A wrong password: unavailable, "authentication failed", and the password is not in it.
    let bad = Cache::redis(
        &server.addr(),
        "app",
        RedisOptions::default()
            .with_connection(ConnectionSettings::default().with_password(Secret::new("wrong-pw"))),
    )
    .unwrap();
    let e = get_many(&bad, &[b"a".to_vec()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(
        !e.to_string().contains("wrong-pw") && !e.to_string().contains("s3cret"),
        "{e}"
    );
}

#[test]
fn batch_reads_fail_fast_while_the_server_is_down_and_recover() {
    let mut server = RedisServer::start();
    let c = Cache::redis(
        &server.addr(),
        "app",
        RedisOptions::default()
            .with_timeouts(Duration::from_millis(300), Duration::from_millis(300)),
    )
    .unwrap();
    block_on(c.set(b"a", "1", None)).unwrap().unwrap();
    assert_eq!(
        get_many(&c, &[b"a".to_vec()]).unwrap(),
        vec![Some(b"1".to_vec())]
    );
    server.kill();
    let started = std::time::Instant::now();
    let e = get_many(&c, &[b"a".to_vec()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.restart();
    // The dead idle connection was dropped: the next batch reconnects.
    let ok = support::wait_until(Duration::from_secs(5), || {
        get_many(&c, &[b"a".to_vec()]).is_ok_and(|v| v == vec![None])
    });
    assert!(ok, "no recovery after the restart");
    // A server that stops answering: timeout within about the response timeout.
    block_on(c.set(b"a", "2", None)).unwrap().unwrap();
    server.pause();
    let started = std::time::Instant::now();
    let e = get_many(&c, &[b"a".to_vec()]).unwrap_err();
    server.resume();
    assert!(
        matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let ok = support::wait_until(Duration::from_secs(5), || {
        get_many(&c, &[b"a".to_vec()]).is_ok_and(|v| v == vec![Some(b"2".to_vec())])
    });
    assert!(ok, "no recovery after the pause");
}
