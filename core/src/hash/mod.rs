//! Consistent hashing building blocks: pure functions and tables, no I/O, no locks.
//!
//! - [`ketama`]: the libmemcached-compatible ketama continuum (md5, 160 points per server at
//!   equal weight).
//! - [`maglev`]: Google's Maglev lookup table (prime size, weighted).
//! - [`rendezvous`]: highest random weight hashing, weighted.
//!
//! The hashes used for placement are fixed by specification (md5 for ketama, XXH3-64 for the
//! others), so every process and every language binding places a key on the same node.

pub mod ketama;
pub mod maglev;
pub(crate) mod md5x;
pub mod rendezvous;

/// The 64-bit key hash used by Maglev and rendezvous placement: XXH3-64 with seed 0.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A strong 64-bit mixer (the finalizer of MurmurHash3), used to combine a key hash with a
/// node's seed.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Maps `hash` uniformly onto `0..n` without a division (Lemire's multiply-shift).
#[inline]
pub fn reduce(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}
