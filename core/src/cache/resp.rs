//! A minimal synchronous RESP2 connection for the blocking batch read (MGET).
//!
//! redis-rs's synchronous connection decodes every reply with its generic `combine` parser
//! into a tree of [`redis::Value`]s, which the caller then converts again: for an MGET of 16
//! small values that is most of the client-side cost (issue #18: ~30k of the ~58k
//! instructions of a 16-key `get_many`). This connection reads the reply into one buffer,
//! finds where it ends with a small resumable scanner, and hands the values out as slices of
//! that one buffer (no per-value allocation, no copy). Any reply that is not an array of bulk
//! strings (a server error, an unexpected type) is decoded by redis-rs's own parser, so
//! errors keep their exact kinds (NOSCRIPT, LOADING, WRONGPASS, ...).
//!
//! Only plain TCP and Unix-socket targets over RESP2 use it (TLS targets keep redis-rs's
//! connection). Every read is bounded by the response timeout, a reply's declared sizes are
//! bounded ([`MAX_BULK`], [`MAX_COUNT`]), and a malformed reply is a `Parse` error that drops
//! the connection.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ErrorKind, ProtocolVersion, RedisError, RedisResult, Value};

/// Largest bulk string accepted (Redis's own `proto-max-bulk-len` default, 512 MiB).
pub(crate) const MAX_BULK: usize = 512 << 20;
/// Largest element count of an array accepted.
pub(crate) const MAX_COUNT: usize = 1 << 24;
/// Bytes asked of the socket per read when the reply's size is not known yet.
const READ_CHUNK: usize = 16 << 10;

/// Where and how to connect (taken from a redis-rs client's settings).
#[derive(Clone)]
pub(crate) struct RawSpec {
    addr: RawAddr,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    connect_timeout: Duration,
    response_timeout: Duration,
}

#[derive(Clone)]
enum RawAddr {
    Tcp(String, u16),
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl std::fmt::Debug for RawSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RawSpec").field("db", &self.db).finish()
    }
}

impl RawSpec {
    /// The spec for `client`'s server, or `None` when this connection cannot serve it (TLS,
    /// RESP3, an address kind it does not know).
    pub(crate) fn from_client(
        client: &redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Option<RawSpec> {
        let info = client.get_connection_info();
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            return None;
        }
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => RawAddr::Tcp(host.clone(), *port),
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => RawAddr::Unix(path.clone()),
            _ => return None,
        };
        Some(RawSpec {
            addr,
            username: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
            db: settings.db(),
            connect_timeout,
            response_timeout,
        })
    }

    /// Opens a connection: connects (within the connect timeout), authenticates and selects
    /// the database in one round trip.
    pub(crate) fn connect(&self) -> RedisResult<RawConn> {
        let stream = match &self.addr {
            RawAddr::Tcp(host, port) => {
                let mut last = None;
                let mut found = None;
                for a in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&a, self.connect_timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = match (found, last) {
                    (Some(s), _) => s,
                    (None, Some(e)) => return Err(e.into()),
                    (None, None) => {
                        return Err(RedisError::from((
                            ErrorKind::InvalidClientConfig,
                            "could not resolve to any addresses",
                        )))
                    }
                };
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(self.response_timeout))?;
                s.set_write_timeout(Some(self.response_timeout))?;
                Stream::Tcp(s)
            }
            #[cfg(unix)]
            RawAddr::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(self.response_timeout))?;
                s.set_write_timeout(Some(self.response_timeout))?;
                Stream::Unix(s)
            }
        };
        let mut conn = RawConn {
            stream,
            buf: BytesMut::new(),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            wbuf: Vec::new(),
            db: self.db,
            timeout: self.response_timeout,
        };
        let mut setup = Vec::new();
        let mut replies = 0;
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user);
            }
            auth.arg(password);
            setup.extend_from_slice(&auth.get_packed_command());
            replies += 1;
        }
        if self.db != 0 {
            setup.extend_from_slice(&redis::cmd("SELECT").arg(self.db).get_packed_command());
            replies += 1;
        }
        if replies > 0 {
            conn.send(&setup)?;
            let mut first_err = None;
            for i in 0..replies {
                let frame = conn.read_frame()?;
                if let Err(e) = generic(&frame) {
                    // A refused AUTH is an authentication failure whatever the server's
                    // wording (WRONGPASS, or ERR on old servers); no secret is in it.
                    let e = if i == 0 && self.password.is_some() {
                        RedisError::from((
                            ErrorKind::AuthenticationFailed,
                            "Password authentication failed",
                        ))
                    } else {
                        e
                    };
                    first_err.get_or_insert(e);
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(conn)
    }
}

enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Stream {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b),
            #[cfg(unix)]
            Stream::Unix(s) => s.write_all(b),
        }
    }
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(b),
        }
    }
}

/// One open connection (see the module's documentation). Not shared between threads.
pub(crate) struct RawConn {
    stream: Stream,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
    /// Where small reads land before they are appended to `buf` (zeroed once).
    scratch: Box<[u8]>,
    /// The last command written (kept for the next one up to WBUF_KEEP bytes).
    wbuf: Vec<u8>,
    db: i64,
    timeout: Duration,
}

impl RawConn {
    /// The database this connection selected.
    #[allow(dead_code)]
    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    fn send(&mut self, packed: &[u8]) -> RedisResult<()> {
        self.stream.write_all(packed).map_err(RedisError::from)
    }

    /// Reads until one whole reply is buffered and returns it (consumed from the buffer).
    fn read_frame(&mut self) -> RedisResult<Bytes> {
        let mut scan = Scanner::new();
        let started = std::time::Instant::now();
        loop {
            // Each read waits at most the response timeout (socket option); a server that
            // drips bytes is cut off once the whole reply took longer than that.
            if started.elapsed() > self.timeout {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the reply took longer than the response timeout",
                )
                .into());
            }
            match scan.advance(&self.buf)? {
                Some(n) => return Ok(self.buf.split_to(n).freeze()),
                None => {
                    let missing = scan.needed.saturating_sub(self.buf.len());
                    let k = if missing > READ_CHUNK {
                        // A large bulk: read straight into its room (zeroed once, like any
                        // allocation of its size).
                        let old = self.buf.len();
                        self.buf.resize(old + missing, 0);
                        let r = self.stream.read(&mut self.buf[old..]);
                        self.buf.truncate(old + *r.as_ref().unwrap_or(&0));
                        r
                    } else {
                        // Small reads go through the connection's scratch buffer: only the
                        // bytes read are copied, nothing is zeroed per read.
                        let r = self.stream.read(&mut self.scratch);
                        if let Ok(k) = r {
                            self.buf.extend_from_slice(&self.scratch[..k]);
                        }
                        r
                    };
                    match k {
                        Ok(0) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the server closed the connection",
                            )
                            .into());
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// `MGET keys...`: the values in order, `None` for absent keys, each a slice of one
    /// shared buffer.
    pub(crate) fn mget(&mut self, keys: &[&[u8]]) -> RedisResult<Vec<Option<Bytes>>> {
        // The command, packed into the connection's reusable write buffer.
        let mut w = std::mem::take(&mut self.wbuf);
        w.clear();
        w.push(b'*');
        crate::rng::push_decimal(&mut w, (keys.len() + 1) as u64);
        w.extend_from_slice(b"\r\n$4\r\nMGET\r\n");
        for k in keys {
            w.push(b'$');
            crate::rng::push_decimal(&mut w, k.len() as u64);
            w.extend_from_slice(b"\r\n");
            w.extend_from_slice(k);
            w.extend_from_slice(b"\r\n");
        }
        let sent = self.send(&w);
        if w.capacity() <= WBUF_KEEP {
            self.wbuf = w;
        }
        sent?;
        let frame = self.read_frame()?;
        match bulk_array(&frame) {
            Some(v) => Ok(v),
            None => {
                // An error or an unexpected shape: redis-rs decodes and converts it.
                let v = generic(&frame)?;
                let list: Vec<Option<Vec<u8>>> = redis::FromRedisValue::from_redis_value(v)
                    .map_err(|_| {
                        // Not redis-rs's message: it may quote the reply, values included.
                        RedisError::from((
                            ErrorKind::UnexpectedReturnType,
                            "MGET: the reply is not a list of values",
                        ))
                    })?;
                Ok(list.into_iter().map(|x| x.map(Bytes::from)).collect())
            }
        }
    }
}

impl redis::ConnectionLike for RawConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send(cmd)?;
        let frame = self.read_frame()?;
        value(&frame)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send(cmd)?;
        let mut out = Vec::with_capacity(count);
        let mut first_err = None;
        for i in 0..offset + count {
            let frame = self.read_frame()?;
            let v = value(&frame)?;
            if i < offset {
                if let Value::ServerError(e) = v {
                    first_err.get_or_insert(RedisError::from(e));
                }
            } else {
                out.push(v);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        true
    }
}

/// A whole reply as redis-rs would decode it (`+OK` is `Okay`, a server error is a
/// `ServerError` value): replies without errors are decoded here, others by redis-rs.
fn value(frame: &[u8]) -> RedisResult<Value> {
    let mut pos = 0;
    match fast_value(frame, &mut pos, 0) {
        Some(v) if pos == frame.len() => Ok(v),
        _ => Ok(redis::parse_redis_value(frame)?),
    }
}

/// Nesting decoded here; deeper replies go to redis-rs.
const MAX_FAST_DEPTH: u32 = 8;

fn fast_value(frame: &[u8], pos: &mut usize, depth: u32) -> Option<Value> {
    let (kind, text, next) = line(frame, *pos).ok()??;
    *pos = next;
    Some(match kind {
        b'+' if text == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(std::str::from_utf8(text).ok()?.to_string()),
        b':' => Value::Int(int(text).ok()?),
        b'$' => {
            let n = int(text).ok()?;
            if n < 0 {
                Value::Nil
            } else {
                let end = next.checked_add(n as usize)?;
                let v = frame.get(next..end)?.to_vec();
                *pos = end.checked_add(2)?;
                Value::BulkString(v)
            }
        }
        b'*' if depth < MAX_FAST_DEPTH => {
            let n = int(text).ok()?;
            if n < 0 {
                Value::Nil
            } else {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    items.push(fast_value(frame, pos, depth + 1)?);
                }
                Value::Array(items)
            }
        }
        _ => return None,
    })
}

/// Decodes a whole reply with redis-rs's parser; a server error becomes an `Err`.
fn generic(frame: &[u8]) -> RedisResult<Value> {
    redis::parse_redis_value(frame)?.extract_error()
}

fn parse_error(detail: String) -> RedisError {
    RedisError::from((ErrorKind::Parse, "invalid RESP reply", detail))
}

/// Finds the end of one RESP2 reply in a growing buffer. Resumable: elements already
/// scanned are not scanned again when more bytes arrive. Arrays nest without recursion: the
/// scanner counts the elements still to read (an array adds its count).
struct Scanner {
    pos: usize,
    remaining: usize,
    /// At least this many bytes are needed before the scan can go on (a bulk's end).
    needed: usize,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            pos: 0,
            remaining: 1,
            needed: 0,
        }
    }

    /// `Some(length)` once a whole reply is in `buf`, `None` if more bytes are needed.
    fn advance(&mut self, buf: &[u8]) -> RedisResult<Option<usize>> {
        while self.remaining > 0 {
            let Some((kind, value, next)) = line(buf, self.pos)? else {
                self.needed = 0;
                return Ok(None);
            };
            match kind {
                b'+' | b'-' | b':' => self.pos = next,
                b'$' => {
                    let n = int(value)?;
                    if n < 0 {
                        if n != -1 {
                            return Err(parse_error(format!("bulk length {n}")));
                        }
                        self.pos = next;
                    } else {
                        let n = n as usize;
                        if n > MAX_BULK {
                            return Err(parse_error(format!("bulk length {n} over {MAX_BULK}")));
                        }
                        let end = next + n + 2;
                        if buf.len() < end {
                            self.needed = end;
                            return Ok(None);
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err(parse_error("bulk string not followed by CRLF".into()));
                        }
                        self.pos = end;
                    }
                }
                b'*' => {
                    let n = int(value)?;
                    if n < -1 || n > MAX_COUNT as i64 {
                        return Err(parse_error(format!("array length {n}")));
                    }
                    self.remaining += n.max(0) as usize;
                    self.pos = next;
                }
                other => {
                    return Err(parse_error(format!(
                        "unexpected reply type byte 0x{other:02x}"
                    )))
                }
            }
            self.remaining -= 1;
        }
        Ok(Some(self.pos))
    }
}

/// Longest header line accepted (type byte, number or status text, CRLF).
const MAX_LINE: usize = 64 << 10;

/// The line at `pos`: (type byte, its text, position after the CRLF); `None` if incomplete.
fn line(buf: &[u8], pos: usize) -> RedisResult<Option<(u8, &[u8], usize)>> {
    let Some(rest) = buf.get(pos..) else {
        return Ok(None);
    };
    let Some(&kind) = rest.first() else {
        return Ok(None);
    };
    let window = &rest[..rest.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) if i >= 1 && rest[i - 1] == b'\r' => Ok(Some((kind, &rest[1..i - 1], pos + i + 1))),
        Some(_) => Err(parse_error("line not ended by CRLF".into())),
        None if rest.len() >= MAX_LINE => Err(parse_error("header line too long".into())),
        None => Ok(None),
    }
}

fn int(text: &[u8]) -> RedisResult<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, text),
    };
    let mut v = 0i64;
    let ok = !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(|&d| {
            v = v * 10 + i64::from(d.wrapping_sub(b'0'));
            d.is_ascii_digit()
        });
    if !ok {
        // The header is not quoted: out of step, it could be part of a value.
        return Err(parse_error(format!(
            "bad length header ({} bytes)",
            text.len()
        )));
    }
    Ok(if neg { -v } else { v })
}

/// Largest write buffer kept between commands.
const WBUF_KEEP: usize = 64 << 10;

/// A whole reply that is an array of bulk strings (or nils) → slices of `frame`; `None` for
/// any other shape (the caller falls back to redis-rs's decoder).
fn bulk_array(frame: &Bytes) -> Option<Vec<Option<Bytes>>> {
    let (kind, text, mut pos) = line(frame, 0).ok()??;
    if kind != b'*' {
        return None;
    }
    let n = int(text).ok()?;
    if n < 0 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (kind, text, next) = line(frame, pos).ok()??;
        if kind != b'$' {
            return None;
        }
        let len = int(text).ok()?;
        if len < 0 {
            out.push(None);
            pos = next;
        } else {
            let end = next.checked_add(len as usize)?;
            if end.checked_add(2)? > frame.len() {
                return None;
            }
            out.push(Some(frame.slice(next..end)));
            pos = end + 2;
        }
    }
    (pos == frame.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(buf: &[u8]) -> RedisResult<Option<usize>> {
        Scanner::new().advance(buf)
    }

    #[test]
    fn the_scanner_finds_the_end_of_every_reply_kind() {
        for (reply, len) in [
            (&b"+OK\r\n"[..], 5),
            (b"-ERR no\r\n", 9),
            (b":42\r\n", 5),
            (b"$-1\r\n", 5),
            (b"$0\r\n\r\n", 6),
            (b"$3\r\nabc\r\n", 9),
            (b"*0\r\n", 4),
            (b"*-1\r\n", 5),
            (b"*2\r\n$1\r\na\r\n$-1\r\n", 16),
            (b"*2\r\n*1\r\n:1\r\n$2\r\nab\r\n", 20),
        ] {
            assert_eq!(scan_all(reply).unwrap(), Some(len), "{reply:?}");
            // Trailing bytes of the next reply are not part of this one.
            let mut more = reply.to_vec();
            more.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(scan_all(&more).unwrap(), Some(len), "{reply:?}");
            // Every strict prefix is incomplete, never an error.
            for cut in 0..len {
                assert_eq!(
                    scan_all(&reply[..cut]).unwrap(),
                    None,
                    "{reply:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn the_scanner_resumes_byte_by_byte() {
        let reply = b"*3\r\n$5\r\nhello\r\n$-1\r\n*2\r\n:7\r\n+x\r\n";
        let mut s = Scanner::new();
        for cut in 0..reply.len() {
            assert_eq!(s.advance(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(s.advance(reply).unwrap(), Some(reply.len()));
    }

    #[test]
    fn malformed_or_oversized_replies_are_parse_errors() {
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcXY",
            b"*-5\r\n",
            b"*99999999999\r\n",
            b"$999999999999\r\n",
            b":1\n",
            b"$\r\n",
            b"%1\r\n",
        ] {
            let e = scan_all(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Parse, "{bad:?}: {e}");
        }
        // A bulk over the bound is refused before its bytes arrive.
        let e = scan_all(format!("${}\r\n", MAX_BULK + 1).as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Parse);
        // An endless header line is refused once it passes MAX_LINE.
        let long = vec![b'+'; MAX_LINE + 2];
        assert!(scan_all(&long).is_err());
    }

    #[test]
    fn bulk_arrays_become_slices_and_other_shapes_fall_back() {
        let f = Bytes::from_static(b"*4\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n$6\r\nab\r\ncd\r\n");
        let v = bulk_array(&f).unwrap();
        assert_eq!(
            v,
            vec![
                Some(Bytes::from_static(b"a")),
                None,
                Some(Bytes::new()),
                Some(Bytes::from_static(b"ab\r\ncd")),
            ]
        );
        assert!(bulk_array(&Bytes::from_static(b"-ERR x\r\n")).is_none());
        assert!(bulk_array(&Bytes::from_static(b"*1\r\n:1\r\n")).is_none());
        assert!(bulk_array(&Bytes::from_static(b"*-1\r\n")).is_none());
        // Server errors keep redis-rs's kinds (NOSCRIPT, WRONGTYPE, ...).
        let e = generic(b"-WRONGTYPE Operation against a key\r\n").unwrap_err();
        assert_eq!(e.code(), Some("WRONGTYPE"));
    }

    #[test]
    fn decimals_and_lengths() {
        for n in [0usize, 7, 10, 99, 12345, usize::MAX] {
            let mut v = Vec::new();
            crate::rng::push_decimal(&mut v, n as u64);
            assert_eq!(v, n.to_string().into_bytes());
        }
        assert_eq!(int(b"-1").unwrap(), -1);
        assert_eq!(int(b"123456789012345678").unwrap(), 123456789012345678);
        for bad in [&b""[..], b"-", b"1x", b"+1", b"1234567890123456789", b" 1"] {
            assert!(int(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_decode_like_redis_rs() {
        for reply in [
            &b"+OK\r\n"[..],
            b"+PONG\r\n",
            b":-42\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$4\r\na\r\nb\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n:1\r\n*2\r\n$1\r\nk\r\n$1\r\nv\r\n$-1\r\n",
            b"-NOSCRIPT No matching script\r\n",
            b"*2\r\n:1\r\n-ERR inside\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:5\r\n",
        ] {
            assert_eq!(
                value(reply).unwrap(),
                redis::parse_redis_value(reply).unwrap(),
                "{reply:?}"
            );
        }
        let e = value(b"-NOSCRIPT No matching script\r\n")
            .unwrap()
            .extract_error()
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
    }

    #[test]
    fn random_replies_split_anywhere_scan_like_whole_ones() {
        // Fuzz-like: random well-formed replies, fed in random pieces, must end exactly where
        // they end; random garbage must end in an error or "incomplete", never a panic.
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        fn gen(out: &mut Vec<u8>, depth: u32, rnd: &mut dyn FnMut(u64) -> u64) {
            match rnd(if depth > 3 { 5 } else { 6 }) {
                0 => out.extend_from_slice(b"+OK\r\n"),
                1 => out.extend_from_slice(format!(":{}\r\n", rnd(1000) as i64 - 500).as_bytes()),
                2 => out.extend_from_slice(b"$-1\r\n"),
                3 | 4 => {
                    let n = rnd(300) as usize;
                    out.extend_from_slice(format!("${n}\r\n").as_bytes());
                    out.extend((0..n).map(|i| if i % 7 == 0 { b'\r' } else { b'x' }));
                    out.extend_from_slice(b"\r\n");
                }
                _ => {
                    let n = rnd(6);
                    out.extend_from_slice(format!("*{n}\r\n").as_bytes());
                    for _ in 0..n {
                        gen(out, depth + 1, rnd);
                    }
                }
            }
        }
        for _ in 0..2000 {
            let mut reply = Vec::new();
            gen(&mut reply, 0, &mut rnd);
            let mut s = Scanner::new();
            let mut have = 0;
            let got = loop {
                have = (have + 1 + rnd(64) as usize).min(reply.len());
                if let Some(n) = s.advance(&reply[..have]).unwrap() {
                    break n;
                }
                assert!(
                    have < reply.len(),
                    "complete reply not recognised: {reply:?}"
                );
            };
            assert_eq!(got, reply.len());
            assert_eq!(
                value(&reply).unwrap(),
                redis::parse_redis_value(&reply).unwrap()
            );
            // Garbage: flip one byte; the scanner errs, waits or ends early, never panics.
            let i = rnd(reply.len() as u64) as usize;
            reply[i] = rnd(256) as u8;
            let _ = scan_all(&reply);
        }
    }
}
