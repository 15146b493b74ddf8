//! The ketama continuum exactly as libmemcached builds it with
//! `MEMCACHED_BEHAVIOR_KETAMA_COMPAT` (php-memcached's `OPT_LIBKETAMA_COMPATIBLE`), so a key
//! lands on the same server as it does for php-memcached, pylibmc or twemproxy users.
//!
//! The rules, from libmemcached's `update_continuum()` in weighted mode:
//! - each server gets `floor(weight / total_weight * 160 / 4 * live_servers + 1e-10) * 4`
//!   points (160 at equal weights), computed in single precision as the C code does;
//! - points come four per md5 digest of the name `host:port-i` (`host-i` when the port is
//!   memcached's default 11211), `i` from 0; point `k` of a digest is its bytes `4k..4k+4`
//!   read little-endian;
//! - a key hashes to the first four bytes of its md5, little-endian; it belongs to the first
//!   point whose value is `>=` that hash, wrapping to the first point.
//!
//! The test `tests/ketama_libmemcached.rs` checks this against vectors produced by
//! php-memcached itself.

use md5::{Digest, Md5};

/// Points per server at equal weights (libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`).
pub const POINTS_PER_SERVER: u32 = 160;
/// memcached's default port: libmemcached leaves it out of the point names.
pub const MEMCACHED_DEFAULT_PORT: u16 = 11211;

/// One server as the continuum sees it.
#[derive(Debug, Clone, Copy)]
pub struct KetamaServer<'a> {
    /// Host name or address, exactly as configured (it is part of the hashed point names).
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Relative weight (> 0).
    pub weight: u32,
}

/// A built continuum: sorted point values and the index of the server owning each point.
///
/// Lookups do not binary-search the whole ring: `buckets` splits the hash space into
/// `2^bits` equal ranges and holds, for each, the position of its first point, so a lookup
/// reads one bucket entry and scans the few points of its range (about two on average, the
/// bucket count being the power of two at or just below half the point count). The ring's
/// placement is unchanged; the index is only a faster way to find the same position.
#[derive(Debug, Clone, Default)]
pub struct KetamaRing {
    values: Vec<u32>,
    owners: Vec<u32>,
    /// `buckets[b]` = first position whose value is `>= b << (32 - bits)`; one extra entry
    /// at the end holds `values.len()`. Empty for an empty ring.
    buckets: Vec<u32>,
    /// log2 of the bucket count (0 for an empty ring).
    bits: u32,
    servers: u32,
}

/// The ketama hash of a key: the first four bytes of its md5, little-endian.
#[inline]
pub fn hash_key(key: &[u8]) -> u32 {
    let d = Md5::digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Number of points libmemcached gives a server of `weight` among `live` servers whose
/// weights sum to `total`.
pub fn points_for(weight: u32, total: u64, live: u32) -> u32 {
    // Mirrors the C expression, including its float (f32) intermediate steps:
    // floor((float)(pct * 160 / 4 * (float)live + 0.0000000001)) * 4
    let pct = weight as f32 / total as f32;
    let v = pct * POINTS_PER_SERVER as f32 / 4.0 * live as f32;
    let v = (v as f64 + 0.000_000_000_1) as f32;
    (v.floor() as u32) * 4
}

/// Sorts by the upper 32 bits (the point value), stable: equal values keep their order, which
/// is the servers' order, as an ordinary sort of `(value, index)` would give. LSD radix, four
/// byte-wide passes.
fn radix_sort_by_high_word(points: &mut Vec<u64>) {
    let mut buf = vec![0u64; points.len()];
    for pass in 0..4 {
        let shift = 32 + pass * 8;
        let mut count = [0usize; 257];
        for &p in points.iter() {
            count[((p >> shift) & 0xff) as usize + 1] += 1;
        }
        for i in 0..256 {
            count[i + 1] += count[i];
        }
        for &p in points.iter() {
            let b = ((p >> shift) & 0xff) as usize;
            buf[count[b]] = p;
            count[b] += 1;
        }
        std::mem::swap(points, &mut buf);
    }
}

/// The bucket index of sorted `values` (see [`KetamaRing`]): `2^bits` buckets, `bits` the
/// largest with `2^bits <= len / 2` (at least one bucket), and one closing entry.
fn bucket_index(values: &[u32]) -> (Vec<u32>, u32) {
    if values.is_empty() {
        return (Vec::new(), 0);
    }
    let half = (values.len() / 2).max(1);
    let bits = (usize::BITS - 1 - half.leading_zeros()).min(24);
    let count = 1usize << bits;
    let mut buckets = Vec::with_capacity(count + 1);
    let mut pos = 0usize;
    for b in 0..count {
        let start = if bits == 0 {
            0u64
        } else {
            (b as u64) << (32 - bits)
        };
        while pos < values.len() && (values[pos] as u64) < start {
            pos += 1;
        }
        buckets.push(pos as u32);
    }
    buckets.push(values.len() as u32);
    (buckets, bits)
}

impl KetamaRing {
    /// Builds the continuum for `servers` (index `i` of the slice is the owner id returned by
    /// lookups). An empty slice gives an empty ring.
    pub fn build(servers: &[KetamaServer<'_>]) -> KetamaRing {
        let total: u64 = servers.iter().map(|s| s.weight as u64).sum();
        let live = servers.len() as u32;
        let mut points: Vec<u64> = Vec::with_capacity(servers.len() * POINTS_PER_SERVER as usize);
        // Every point name first (one buffer), then their digests LANES at a time.
        let mut names: Vec<u8> = Vec::with_capacity(servers.len() * 40 * 24);
        let mut spans: Vec<(usize, usize, u32)> = Vec::with_capacity(servers.len() * 40);
        for (idx, s) in servers.iter().enumerate() {
            let count = if total == 0 {
                0
            } else {
                points_for(s.weight, total, live)
            };
            // "host-" for memcached's default port, "host:port-" otherwise; then the index.
            let mut prefix: Vec<u8> = Vec::with_capacity(s.host.len() + 8);
            prefix.extend_from_slice(s.host.as_bytes());
            if s.port != MEMCACHED_DEFAULT_PORT {
                prefix.push(b':');
                crate::rng::push_decimal(&mut prefix, u64::from(s.port));
            }
            prefix.push(b'-');
            for i in 0..count / 4 {
                let start = names.len();
                names.extend_from_slice(&prefix);
                crate::rng::push_decimal(&mut names, u64::from(i));
                spans.push((start, names.len(), idx as u32));
            }
        }
        let msgs: Vec<&[u8]> = spans.iter().map(|&(a, b, _)| &names[a..b]).collect();
        let mut digests = Vec::new();
        crate::hash::md5x::digest_words(&msgs, &mut digests);
        for (d, &(_, _, idx)) in digests.iter().zip(&spans) {
            for v in d {
                points.push(((*v as u64) << 32) | idx as u64);
            }
        }
        radix_sort_by_high_word(&mut points);
        let values: Vec<u32> = points.iter().map(|p| (p >> 32) as u32).collect();
        let (buckets, bits) = bucket_index(&values);
        KetamaRing {
            values,
            owners: points.iter().map(|p| *p as u32).collect(),
            buckets,
            bits,
            servers: live,
        }
    }

    /// Number of points on the ring.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the ring has no points.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Position (index into the points) of the first point `>= hash`, wrapping to 0.
    /// Returns `None` for an empty ring.
    #[inline]
    pub fn position(&self, hash: u32) -> Option<usize> {
        if self.values.is_empty() {
            return None;
        }
        // Bucket `b` covers hashes [b << shift, (b + 1) << shift): the answer lies between
        // its first position and the next bucket's (inclusive), as values are sorted.
        let b = if self.bits == 0 {
            0
        } else {
            (hash >> (32 - self.bits)) as usize
        };
        let (lo, hi) = match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.values.len()),
        };
        let span = self.values.get(lo..hi).unwrap_or(&[]);
        let pos = lo + span.partition_point(|&v| v < hash);
        Some(if pos == self.values.len() { 0 } else { pos })
    }

    /// Owner of the point at `pos` (as returned by [`KetamaRing::position`], modulo the length).
    #[inline]
    pub fn owner_at(&self, pos: usize) -> u32 {
        self.owners[pos % self.owners.len()]
    }

    /// The server index owning `hash`, or `None` for an empty ring.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<u32> {
        self.position(hash).map(|p| self.owners[p])
    }

    /// Calls `f` with the distinct owners met walking clockwise from `hash`, in ring order,
    /// until `f` returns `false` or every server was met. Allocates nothing.
    pub fn walk(&self, hash: u32, mut f: impl FnMut(u32) -> bool) {
        let Some(start) = self.position(hash) else {
            return;
        };
        let n = self.owners.len();
        let mut seen_count = 0u32;
        // Distinct-owner detection without allocation: an owner is new if it does not appear
        // earlier in the walk; servers are few relative to points, so scan back over at most
        // the walked prefix only when the owner changes.
        let mut prev = u32::MAX;
        for step in 0..n {
            let o = self.owners[(start + step) % n];
            if o == prev {
                continue;
            }
            prev = o;
            let mut dup = false;
            for back in 0..step {
                if self.owners[(start + back) % n] == o {
                    dup = true;
                    break;
                }
            }
            if dup {
                continue;
            }
            seen_count += 1;
            if !f(o) || seen_count >= self.servers {
                return;
            }
        }
    }

    /// Bytes of heap memory held by the ring (points, owners and the bucket index).
    pub fn memory_bytes(&self) -> usize {
        (self.values.capacity() + self.owners.capacity() + self.buckets.capacity())
            * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket index finds exactly the position a binary search over the whole ring finds,
    /// for every point value, its neighbours, the ends of the hash space and random hashes.
    #[test]
    fn bucket_index_agrees_with_a_full_binary_search() {
        let hosts: Vec<String> = (0..300)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        for n in [1usize, 2, 3, 7, 100, 300] {
            let servers: Vec<KetamaServer<'_>> = hosts[..n]
                .iter()
                .enumerate()
                .map(|(i, h)| KetamaServer {
                    host: h,
                    port: 11211 + (i % 3) as u16,
                    weight: 1 + (i % 5) as u32,
                })
                .collect();
            let ring = KetamaRing::build(&servers);
            assert!(ring.bits == 0 || (1usize << ring.bits) <= ring.len() / 2);
            let reference = |h: u32| {
                let p = ring.values.partition_point(|&v| v < h);
                if p == ring.values.len() {
                    0
                } else {
                    p
                }
            };
            let mut hashes = vec![0u32, 1, u32::MAX, u32::MAX - 1, 1 << 31];
            for &v in &ring.values {
                hashes.extend([v, v.wrapping_sub(1), v.wrapping_add(1)]);
            }
            hashes.extend((0..20_000u64).map(|i| crate::hash::mix64(i ^ n as u64) as u32));
            for h in hashes {
                assert_eq!(ring.position(h), Some(reference(h)), "n = {n}, hash {h:#x}");
            }
        }
        assert_eq!(KetamaRing::build(&[]).position(7), None);
        assert_eq!(KetamaRing::default().position(7), None);
    }

    #[test]
    fn equal_weights_give_160_points() {
        assert_eq!(points_for(1, 3, 3), 160);
        assert_eq!(points_for(5, 50, 10), 160);
        let s = [
            KetamaServer {
                host: "a",
                port: 1,
                weight: 1,
            },
            KetamaServer {
                host: "b",
                port: 2,
                weight: 1,
            },
        ];
        let r = KetamaRing::build(&s);
        assert_eq!(r.len(), 320);
    }

    #[test]
    fn helpers() {
        let mut v = b"x-".to_vec();
        crate::rng::push_decimal(&mut v, 0);
        crate::rng::push_decimal(&mut v, 4_294_967_295);
        assert_eq!(v, b"x-04294967295");
        let mut p: Vec<u64> = (0..5000u64)
            .map(|i| (crate::hash::mix64(i) & 0xffff_ffff_0000_0000) | (i % 7))
            .collect();
        let mut want = p.clone();
        want.sort();
        radix_sort_by_high_word(&mut p);
        assert_eq!(p, want);
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let r = KetamaRing::build(&[]);
        assert!(r.lookup(42).is_none());
        let mut called = false;
        r.walk(1, |_| {
            called = true;
            true
        });
        assert!(!called);
    }

    #[test]
    fn walk_yields_each_server_once() {
        let s: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|h| KetamaServer {
                host: h,
                port: 7000,
                weight: 1,
            })
            .collect();
        let r = KetamaRing::build(&s);
        let mut seen = vec![];
        r.walk(hash_key(b"k"), |o| {
            seen.push(o);
            true
        });
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], r.lookup(hash_key(b"k")).unwrap());
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4);
    }
}
