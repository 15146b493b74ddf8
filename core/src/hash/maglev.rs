//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! Each node has a permutation of the table slots given by `offset` and `skip` derived from
//! two hashes of its name; nodes take turns claiming their next free preferred slot until the
//! table is full. Weighted nodes take turns in proportion to their weight. A lookup is one
//! hash and one array read.

use crate::error::{Error, Result};
use crate::hash::{key_hash, reduce};

/// Default table size: a prime, 65537 (Envoy's and the paper's default).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Largest number of nodes a table can index (entries are `u16`). A table also needs 100
/// slots per node and at most [`MAX_TABLE_SIZE`] slots, so in practice a Maglev pool holds at
/// most `MAX_TABLE_SIZE / 100` (10 000) nodes.
pub const MAX_NODES: usize = u16::MAX as usize;
/// Largest table size: 1 000 003 (a prime), 2 MB of `u16` entries, room for 10 000 nodes at
/// 100 slots each. A larger configured size is refused rather than allocated.
pub const MAX_TABLE_SIZE: u32 = 1_000_003;

/// One node as the table sees it.
#[derive(Debug, Clone, Copy)]
pub struct MaglevNode<'a> {
    /// Stable name (the node id): the node's permutation depends only on it.
    pub name: &'a str,
    /// Relative weight (> 0).
    pub weight: u32,
}

/// A built Maglev lookup table.
#[derive(Debug, Clone, Default)]
pub struct MaglevTable {
    table: Vec<u16>,
}

/// `x mod m` by multiplication (Barrett reduction with a 128-bit product), exact for every
/// `x < 2^64` and `2 <= m < 2^32`.
struct Barrett {
    m: u64,
    inv: u64,
}

impl Barrett {
    fn new(m: u64) -> Barrett {
        Barrett {
            m,
            inv: u64::MAX / m,
        }
    }
    #[inline]
    fn rem(&self, x: u64) -> u64 {
        let q = ((x as u128 * self.inv as u128) >> 64) as u64;
        let mut r = x - q * self.m;
        // q underestimates the quotient by at most 2.
        while r >= self.m {
            r -= self.m;
        }
        r
    }
    /// `base^exp mod m`.
    fn pow(&self, mut base: u64, mut exp: u64) -> u64 {
        let mut r = 1u64;
        base = self.rem(base);
        while exp > 0 {
            if exp & 1 == 1 {
                r = self.rem(r * base);
            }
            base = self.rem(base * base);
            exp >>= 1;
        }
        r
    }
}

/// The clear bits below `m` of an occupancy bitset, in increasing order.
fn free_slots(taken: &[u64], m: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for (w, &word) in taken.iter().enumerate() {
        let base = w as u64 * 64;
        let mut free = !word;
        if base + 64 > m {
            free &= (1u64 << (m - base)) - 1;
        }
        while free != 0 {
            out.push(base + free.trailing_zeros() as u64);
            free &= free - 1;
        }
    }
    out
}

/// True if `n` is prime (trial division; table sizes are at most a few million).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The table size used for `nodes` nodes when none is configured: 65537, or the smallest
/// prime `>= 100 * nodes` when that is larger.
pub fn table_size_for(nodes: usize) -> u32 {
    let min = (nodes as u64 * 100).max(DEFAULT_TABLE_SIZE as u64);
    let mut m = min.min(u32::MAX as u64) as u32;
    while !is_prime(m) {
        m += 1;
    }
    m
}

/// Checks a configured table size for `nodes` nodes: it must be a prime `>= 100 * nodes`
/// and at most [`MAX_TABLE_SIZE`]. Fails with [`Error::InvalidArgument`] naming
/// `maglev_table_size`.
pub fn check_table_size(size: u32, nodes: usize) -> Result<()> {
    if size > MAX_TABLE_SIZE {
        return Err(Error::invalid(
            "maglev_table_size",
            format!("must be at most {MAX_TABLE_SIZE}, got {size}"),
        ));
    }
    if !is_prime(size) {
        return Err(Error::invalid(
            "maglev_table_size",
            format!("must be a prime number, got {size}"),
        ));
    }
    if (size as u64) < nodes as u64 * 100 {
        return Err(Error::invalid(
            "maglev_table_size",
            format!(
                "must be at least 100 x nodes = {} for {nodes} nodes, got {size}",
                nodes * 100
            ),
        ));
    }
    Ok(())
}

impl MaglevTable {
    /// Builds a table of `size` slots for `nodes` (index `i` of the slice is the owner id).
    ///
    /// Fails if `size` is not a prime `>= 100 * nodes.len()` or there are more than
    /// [`MAX_NODES`] nodes. An empty node list gives an empty table.
    pub fn build(nodes: &[MaglevNode<'_>], size: u32) -> Result<MaglevTable> {
        if nodes.len() > MAX_NODES {
            return Err(Error::invalid(
                "nodes",
                format!(
                    "a Maglev table indexes at most {MAX_NODES} nodes, got {}",
                    nodes.len()
                ),
            ));
        }
        if nodes.is_empty() {
            return Ok(MaglevTable::default());
        }
        check_table_size(size, nodes.len())?;
        let m = size as u64;
        let n = nodes.len();
        // Canonical turn order (by name), so processes that added the same nodes in another
        // order build the same table and place keys alike.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| nodes[a].name.cmp(nodes[b].name));
        // Per turn: current slot of the node's permutation, its skip, its weight.
        let mut pos = Vec::with_capacity(n);
        let mut skip = Vec::with_capacity(n);
        for &i in &order {
            let name = nodes[i].name.as_bytes();
            let h = key_hash(name);
            let h2 = xxhash_rust::xxh3::xxh3_64_with_seed(name, 0x9e37_79b9_7f4a_7c15);
            pos.push(h % m);
            skip.push(h2 % (m - 1) + 1);
        }
        let weights: Vec<u64> = order
            .iter()
            .map(|&i| nodes[i].weight.max(1) as u64)
            .collect();
        let max_w = weights.iter().copied().max().unwrap_or(1);
        let mut credit = vec![0u64; n];
        // Occupancy as a bitset (8 KiB at M = 65537: stays in L1 while the table fills).
        let mut taken = vec![0u64; (size as usize).div_ceil(64)];
        let mut table = vec![0u16; size as usize];
        let mut filled = 0u64;
        // The last slots cost most of the probes (about M ln M in all). Once at most `tail`
        // slots are empty, a node's next claim is found directly: the empty slot with the
        // smallest index in its permutation, ((s - pos) * skip^-1) mod M (M is prime). Same
        // table as probing, a third fewer steps.
        let tail = (m / 8).min(128);
        let barrett = Barrett::new(m);
        let mut empties: Vec<u64> = Vec::new();
        let mut inverse: Vec<u64> = Vec::new();
        'outer: loop {
            for t in 0..n {
                // Weighted turns: each round a node earns its weight; it claims one slot per
                // max_w of credit, so the heaviest node claims every round.
                credit[t] += weights[t];
                if credit[t] < max_w {
                    continue;
                }
                credit[t] -= max_w;
                let step = skip[t];
                let c = if m - filled > tail {
                    let mut c = pos[t];
                    while taken[(c >> 6) as usize] & (1 << (c & 63)) != 0 {
                        c += step;
                        if c >= m {
                            c -= m;
                        }
                    }
                    taken[(c >> 6) as usize] |= 1 << (c & 63);
                    c
                } else {
                    if empties.is_empty() {
                        empties = free_slots(&taken, m);
                        inverse = skip.iter().map(|&k| barrett.pow(k, m - 2)).collect();
                    }
                    let (p, inv) = (pos[t], inverse[t]);
                    let mut best = 0;
                    let mut best_rank = u64::MAX;
                    for (i, &e) in empties.iter().enumerate() {
                        // ((e - p) mod M) * skip^-1 mod M, without a division (issue #18).
                        let d = if e >= p { e - p } else { e + m - p };
                        let rank = barrett.rem(d * inv);
                        if rank < best_rank {
                            best_rank = rank;
                            best = i;
                        }
                    }
                    empties.swap_remove(best)
                };
                // Node indexes fit u16: nodes.len() <= MAX_NODES = u16::MAX.
                table[c as usize] = order[t] as u16;
                let next = c + step;
                pos[t] = if next >= m { next - m } else { next };
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
        }
        Ok(MaglevTable { table })
    }

    /// Number of slots (0 for an empty table).
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// The slot a 64-bit key hash falls into, or `None` for an empty table.
    #[inline]
    pub fn slot(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            None
        } else {
            Some(reduce(hash, self.table.len()))
        }
    }

    /// Owner of `slot` (taken modulo the table size). Panics never: callers pass slots from
    /// [`MaglevTable::slot`] on a non-empty table.
    #[inline]
    pub fn owner_at(&self, slot: usize) -> u32 {
        self.table[slot % self.table.len()] as u32
    }

    /// The owner index of a 64-bit key hash, or `None` for an empty table.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        self.slot(hash).map(|s| self.table[s] as u32)
    }

    /// Number of slots owned by each node index (for balance checks and metrics).
    pub fn slot_counts(&self, nodes: usize) -> Vec<usize> {
        let mut c = vec![0usize; nodes];
        for &o in &self.table {
            if let Some(x) = c.get_mut(o as usize) {
                *x += 1;
            }
        }
        c
    }

    /// Bytes of heap memory held by the table.
    pub fn memory_bytes(&self) -> usize {
        self.table.capacity() * std::mem::size_of::<u16>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `base^exp mod m` (m < 2^32).
    fn mod_pow(mut base: u64, mut exp: u64, m: u64) -> u64 {
        let mut r = 1u64;
        base %= m;
        while exp > 0 {
            if exp & 1 == 1 {
                r = r * base % m;
            }
            base = base * base % m;
            exp >>= 1;
        }
        r
    }

    #[test]
    fn barrett_pow_equals_mod_pow() {
        for m in [3u64, 65537, 100_003, 1_000_003] {
            let b = Barrett::new(m);
            for k in [1u64, 2, 12345 % m, m - 1, m / 3]
                .into_iter()
                .filter(|k| k % m != 0)
            {
                assert_eq!(b.pow(k, m - 2), mod_pow(k, m - 2, m));
                assert_eq!(b.rem(b.pow(k, m - 2) * k), 1);
            }
        }
    }

    #[test]
    fn barrett_equals_modulo() {
        for m in [2u64, 3, 65537, 100_003, 1_000_003, u32::MAX as u64] {
            let b = Barrett::new(m);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..10_000 {
                x = crate::hash::mix64(x);
                assert_eq!(b.rem(x), x % m);
                assert_eq!(b.rem(x % (m * m)), (x % (m * m)) % m);
            }
            assert_eq!(b.rem(u64::MAX), u64::MAX % m);
            assert_eq!(b.rem(0), 0);
        }
    }

    #[test]
    fn primes_and_sizes() {
        assert!(is_prime(65537));
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(check_table_size(MAX_TABLE_SIZE, 10_000).is_ok());
        let e = check_table_size(2_147_483_647, 1).unwrap_err();
        assert!(e.to_string().contains("at most 1000003"), "{e}");
        assert!(!is_prime(65535));
        assert_eq!(table_size_for(10), 65537);
        let m = table_size_for(1000);
        assert!(m >= 100_000 && is_prime(m));
        assert!(check_table_size(65536, 10).is_err());
        assert!(check_table_size(101, 10).is_err());
        assert!(check_table_size(1009, 10).is_ok());
    }

    #[test]
    fn table_is_full_and_balanced() {
        let names: Vec<String> = (0..100).map(|i| format!("node-{i}")).collect();
        let nodes: Vec<_> = names
            .iter()
            .map(|n| MaglevNode { name: n, weight: 1 })
            .collect();
        let t = MaglevTable::build(&nodes, DEFAULT_TABLE_SIZE).unwrap();
        let counts = t.slot_counts(100);
        assert_eq!(counts.iter().sum::<usize>(), DEFAULT_TABLE_SIZE as usize);
        let max = *counts.iter().max().unwrap() as f64;
        let mean = DEFAULT_TABLE_SIZE as f64 / 100.0;
        assert!(max / mean <= 1.03, "max/mean = {}", max / mean);
    }

    /// The plain Maglev fill: every claim probes the node's permutation.
    fn reference(nodes: &[MaglevNode<'_>], size: u32) -> Vec<u16> {
        let m = size as u64;
        let n = nodes.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| nodes[a].name.cmp(nodes[b].name));
        let mut pos: Vec<u64> = order
            .iter()
            .map(|&i| key_hash(nodes[i].name.as_bytes()) % m)
            .collect();
        let skip: Vec<u64> = order
            .iter()
            .map(|&i| {
                xxhash_rust::xxh3::xxh3_64_with_seed(
                    nodes[i].name.as_bytes(),
                    0x9e37_79b9_7f4a_7c15,
                ) % (m - 1)
                    + 1
            })
            .collect();
        let max_w = nodes.iter().map(|x| x.weight).max().unwrap() as u64;
        let mut credit = vec![0u64; n];
        let mut table = vec![u16::MAX; size as usize];
        let mut filled = 0;
        while filled < m {
            for t in 0..n {
                credit[t] += nodes[order[t]].weight as u64;
                if credit[t] < max_w {
                    continue;
                }
                credit[t] -= max_w;
                while table[pos[t] as usize] != u16::MAX {
                    pos[t] = (pos[t] + skip[t]) % m;
                }
                table[pos[t] as usize] = order[t] as u16;
                pos[t] = (pos[t] + skip[t]) % m;
                filled += 1;
                if filled == m {
                    break;
                }
            }
        }
        table
    }

    #[test]
    fn direct_tail_claims_equal_plain_probing() {
        for (n, size, weighted) in [
            (1, 101, false),
            (3, 307, true),
            (10, 1009, false),
            (37, 4099, true),
            (100, 65537, false),
        ] {
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let nodes: Vec<_> = names
                .iter()
                .enumerate()
                .map(|(i, x)| MaglevNode {
                    name: x,
                    weight: if weighted { 1 + (i as u32 % 5) } else { 1 },
                })
                .collect();
            let t = MaglevTable::build(&nodes, size).unwrap();
            assert_eq!(t.table, reference(&nodes, size), "n={n} size={size}");
        }
    }

    #[test]
    fn table_does_not_depend_on_node_order() {
        let names: Vec<String> = (0..20).map(|i| format!("node-{i}")).collect();
        let fwd: Vec<_> = names
            .iter()
            .map(|n| MaglevNode { name: n, weight: 1 })
            .collect();
        let rev: Vec<_> = fwd.iter().rev().copied().collect();
        let a = MaglevTable::build(&fwd, 4099).unwrap();
        let b = MaglevTable::build(&rev, 4099).unwrap();
        for slot in 0..4099 {
            assert_eq!(
                fwd[a.owner_at(slot) as usize].name,
                rev[b.owner_at(slot) as usize].name
            );
        }
    }

    #[test]
    fn weights_are_proportional() {
        let nodes = [
            MaglevNode {
                name: "a",
                weight: 1,
            },
            MaglevNode {
                name: "b",
                weight: 3,
            },
        ];
        let t = MaglevTable::build(&nodes, 1009).unwrap();
        let c = t.slot_counts(2);
        let share = c[1] as f64 / 1009.0;
        assert!((share - 0.75).abs() < 0.01, "share {share}");
    }

    /// Pins the placement itself (not just the algorithm): digests of whole tables for fixed
    /// members, recorded from the plain-probing build before the issue #18 rewrite. A change
    /// here moves keys between nodes for every deployment and must be deliberate.
    #[test]
    fn tables_for_fixed_members_are_pinned() {
        let mut got = Vec::new();
        for (n, size, weighted) in [
            (1usize, 101u32, false),
            (7, 1009, true),
            (100, 65537, false),
            (100, 65537, true),
            (1000, 100_003, false),
        ] {
            let names: Vec<String> = (0..n)
                .map(|i| format!("10.0.{}.{}:11211", i / 256, i % 256))
                .collect();
            let nodes: Vec<_> = names
                .iter()
                .enumerate()
                .map(|(i, x)| MaglevNode {
                    name: x,
                    weight: if weighted { 1 + (i as u32 * 7 % 5) } else { 1 },
                })
                .collect();
            let digest = |t: &[u16]| {
                let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
                xxhash_rust::xxh3::xxh3_64(&bytes)
            };
            let t = MaglevTable::build(&nodes, size).unwrap();
            assert_eq!(digest(&t.table), digest(&reference(&nodes, size)));
            got.push(digest(&t.table));
        }
        assert_eq!(got, PINNED, "{got:#x?}");
    }

    const PINNED: [u64; 5] = [
        10561720096717686305,
        15270274582195088096,
        3583833782276349322,
        5848097067365395519,
        13799762106975944505,
    ];
}
