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
/// Largest number of nodes a table can index (entries are `u16`).
pub const MAX_NODES: usize = u16::MAX as usize;

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

/// Checks a configured table size for `nodes` nodes: it must be a prime `>= 100 * nodes`.
pub fn check_table_size(size: u32, nodes: usize) -> Result<()> {
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
        // Per node: current slot of its permutation and its skip.
        let mut pos = Vec::with_capacity(n);
        let mut skip = Vec::with_capacity(n);
        for node in nodes {
            let h = key_hash(node.name.as_bytes());
            let h2 =
                xxhash_rust::xxh3::xxh3_64_with_seed(node.name.as_bytes(), 0x9e37_79b9_7f4a_7c15);
            pos.push(h % m);
            skip.push(h2 % (m - 1) + 1);
        }
        let max_w = nodes.iter().map(|n| n.weight).max().unwrap_or(1).max(1) as u64;
        let mut credit = vec![0u64; n];
        const EMPTY: u16 = u16::MAX;
        // u16::MAX is never a node index because nodes.len() <= MAX_NODES = u16::MAX, so
        // indexes stop at MAX_NODES - 1.
        let mut table = vec![EMPTY; size as usize];
        let mut filled = 0u64;
        'outer: loop {
            for i in 0..n {
                // Weighted turns: each round a node earns its weight; it claims one slot per
                // max_w of credit, so the heaviest node claims every round.
                credit[i] += nodes[i].weight as u64;
                if credit[i] < max_w {
                    continue;
                }
                credit[i] -= max_w;
                let mut c = pos[i];
                while table[c as usize] != EMPTY {
                    c += skip[i];
                    if c >= m {
                        c -= m;
                    }
                }
                table[c as usize] = i as u16;
                c += skip[i];
                if c >= m {
                    c -= m;
                }
                pos[i] = c;
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

    #[test]
    fn primes_and_sizes() {
        assert!(is_prime(65537));
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
}
