//! Rendezvous (highest random weight) hashing, weighted.
//!
//! Each node has a 64-bit seed (the XXH3 hash of its name). A key's score on a node is
//! `mix64(key_hash ^ seed)`; with weights the score becomes `-weight / ln(u)` where `u` is that
//! mixed value mapped into (0, 1) (the logarithmic method of Schindelhauer and Schomaker), so a
//! node's share is proportional to its weight. The key goes to the highest score.

use crate::hash::{key_hash, mix64};

/// One node as rendezvous hashing sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RendezvousNode {
    /// The node's seed: [`node_seed`] of its name.
    pub seed: u64,
    /// Relative weight (> 0).
    pub weight: u32,
}

/// The seed of a node name.
pub fn node_seed(name: &str) -> u64 {
    key_hash(name.as_bytes()) ^ 0x5851_f42d_4c95_7f2d
}

/// Rank of `key_hash` on a node; the highest rank wins. At equal weights (`uniform`) it is the
/// mixed hash itself; otherwise the bits of the positive score `-weight / ln(u)`, which order
/// like the scores. Integers, so every caller breaks ties the same way.
#[inline]
pub fn rank(key_hash: u64, node: &RendezvousNode, uniform: bool) -> u64 {
    let h = mix64(key_hash ^ node.seed);
    if uniform {
        return h;
    }
    // u in (0, 1): 53 random bits, offset by half a step so it is never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (-(node.weight as f64) / u.ln()).to_bits()
}

/// Index of the node with the highest rank for `key_hash` (the first on a tie), or `None`
/// when `nodes` is empty.
#[inline]
pub fn pick(key_hash: u64, nodes: &[RendezvousNode], uniform: bool) -> Option<usize> {
    let mut best = None;
    let mut best_rank = 0u64;
    for (i, n) in nodes.iter().enumerate() {
        let r = rank(key_hash, n, uniform);
        if best.is_none() || r > best_rank {
            best_rank = r;
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_proportional() {
        let nodes = [
            RendezvousNode {
                seed: node_seed("a"),
                weight: 1,
            },
            RendezvousNode {
                seed: node_seed("b"),
                weight: 3,
            },
        ];
        let mut c = [0u32; 2];
        for k in 0..40_000u64 {
            c[pick(mix64(k), &nodes, false).unwrap()] += 1;
        }
        let share = c[1] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "share {share}");
    }

    #[test]
    fn empty_has_no_pick() {
        assert_eq!(pick(1, &[], true), None);
    }
}
