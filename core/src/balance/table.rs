//! Strategy tables, built once per membership change over the active nodes.

use crate::balance::{BalancerOptions, Strategy};
use crate::error::Result;
use crate::hash::ketama::{KetamaRing, KetamaServer};
use crate::hash::maglev::{self, MaglevNode, MaglevTable};
use crate::hash::reduce;
use crate::hash::rendezvous::{node_seed, RendezvousNode};
use crate::node::Node;

/// The derived table of a strategy. Indexes stored in tables are positions in the snapshot's
/// active list.
#[derive(Debug)]
pub(crate) enum Table {
    /// Strategies that need no table (round robin, least connections, P2C, uniform random).
    Plain,
    /// Smooth weighted round robin schedule: one period of nginx's sequence.
    Wrr(Vec<u32>),
    /// Weighted random alias table.
    Alias(AliasTable),
    Ketama(KetamaRing),
    Maglev(MaglevTable),
    Rendezvous {
        nodes: Vec<RendezvousNode>,
        uniform: bool,
    },
}

impl Table {
    /// Builds the table of `options.strategy` over `active` (in order) with their effective
    /// `weights` (the nodes' weights, or less during slow start).
    pub(crate) fn build(
        options: &BalancerOptions,
        active: &[&Node],
        weights: &[u32],
    ) -> Result<Table> {
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        Ok(match options.strategy {
            Strategy::RoundRobin | Strategy::LeastConnections | Strategy::PowerOfTwoChoices => {
                Table::Plain
            }
            Strategy::Random if uniform => Table::Plain,
            Strategy::Random => Table::Alias(AliasTable::build(weights)),
            Strategy::WeightedRoundRobin if uniform => Table::Plain,
            Strategy::WeightedRoundRobin => Table::Wrr(smooth_wrr_schedule(weights)),
            Strategy::Ketama => {
                let servers: Vec<_> = active
                    .iter()
                    .map(|n| KetamaServer {
                        host: n.host(),
                        port: n.port(),
                        weight: n.weight(),
                    })
                    .collect();
                Table::Ketama(KetamaRing::build(&servers))
            }
            Strategy::Maglev => {
                let nodes: Vec<_> = active
                    .iter()
                    .map(|n| MaglevNode {
                        name: n.id(),
                        weight: n.weight(),
                    })
                    .collect();
                let size = match options.maglev_table_size {
                    Some(s) => s,
                    None => maglev::table_size_for(active.len()),
                };
                Table::Maglev(MaglevTable::build(&nodes, size)?)
            }
            Strategy::Rendezvous => Table::Rendezvous {
                nodes: active
                    .iter()
                    .map(|n| RendezvousNode {
                        seed: node_seed(n.id()),
                        weight: n.weight(),
                    })
                    .collect(),
                uniform,
            },
        })
    }

    /// Bytes of heap memory held by the table.
    pub(crate) fn memory_bytes(&self) -> usize {
        match self {
            Table::Plain => 0,
            Table::Wrr(s) => s.capacity() * 4,
            Table::Alias(a) => a.memory_bytes(),
            Table::Ketama(r) => r.memory_bytes(),
            Table::Maglev(t) => t.memory_bytes(),
            Table::Rendezvous { nodes, .. } => {
                nodes.capacity() * std::mem::size_of::<RendezvousNode>()
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Above this many steps (`period x nodes`) the nginx simulation gives way to
/// [`stride_schedule`], so a rebuild stays in milliseconds even for a thousand nodes with
/// weights up to 256.
const NGINX_WORK_LIMIT: u64 = 8_000_000;

/// One period of smooth weighted round robin over `weights`: nginx's exact sequence when it is
/// cheap to simulate, otherwise the equivalent stride schedule (same proportions, equally
/// free of bursts).
pub(crate) fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, w| gcd(g, *w)).max(1);
    let reduced: Vec<u32> = weights.iter().map(|w| w / g).collect();
    let period: u64 = reduced.iter().map(|&w| w as u64).sum();
    if period * reduced.len() as u64 <= NGINX_WORK_LIMIT {
        nginx_schedule(&reduced)
    } else {
        stride_schedule(&reduced)
    }
}

/// nginx's smooth weighted round robin (`ngx_http_upstream_get_peer`): every step each node's
/// current weight grows by its weight, the largest is chosen (first on ties) and loses the
/// total. The period is `sum(w)` picks; in any window of that length each node appears
/// exactly `w` times. Costs `sum(w) x nodes` steps.
fn nginx_schedule(w: &[u32]) -> Vec<u32> {
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

/// Stride scheduling: node `i`'s `k`-th turn of the period falls at `(2k - 1) / (2 w_i)`;
/// turns are taken in that order (ties by index) from a heap. Each node appears exactly `w`
/// times per period, evenly spread. Costs `sum(w) x log(nodes)`.
fn stride_schedule(w: &[u32]) -> Vec<u32> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;
    #[derive(PartialEq, Eq)]
    struct Turn {
        num: u64,
        den: u64,
        node: u32,
    }
    impl Ord for Turn {
        fn cmp(&self, o: &Self) -> Ordering {
            (self.num * o.den)
                .cmp(&(o.num * self.den))
                .then(self.node.cmp(&o.node))
        }
    }
    impl PartialOrd for Turn {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    let total: u64 = w.iter().map(|&x| x as u64).sum();
    let mut heap: BinaryHeap<Reverse<Turn>> = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            Reverse(Turn {
                num: 1,
                den: 2 * x as u64,
                node: i as u32,
            })
        })
        .collect();
    let mut schedule = Vec::with_capacity(total as usize);
    while let Some(Reverse(t)) = heap.pop() {
        schedule.push(t.node);
        // k-th turn is (2k - 1) / 2w: the next numerator is 2 more, until k = w.
        if t.num + 2 < t.den {
            heap.push(Reverse(Turn {
                num: t.num + 2,
                ..t
            }));
        }
    }
    schedule
}

/// Vose's alias method: O(1) weighted sampling with one 64-bit random number.
#[derive(Debug, Default)]
pub(crate) struct AliasTable {
    /// Probability (scaled to 2^32) of keeping column `i` rather than taking its alias.
    keep: Vec<u64>,
    alias: Vec<u32>,
}

impl AliasTable {
    pub(crate) fn build(weights: &[u32]) -> AliasTable {
        let n = weights.len();
        let total: u64 = weights.iter().map(|x| *x as u64).sum();
        // Scaled probabilities p_i * n, in units of 2^32.
        let one = 1u64 << 32;
        let mut scaled: Vec<u64> = weights
            .iter()
            .map(|x| *x as u64 * n as u64 * one / total.max(1))
            .collect();
        let mut keep = vec![one; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let mut small: Vec<usize> = (0..n).filter(|&i| scaled[i] < one).collect();
        let mut large: Vec<usize> = (0..n).filter(|&i| scaled[i] >= one).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] = scaled[l] + scaled[s] - one;
            if scaled[l] < one {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers (rounding) keep themselves with probability 1.
        AliasTable { keep, alias }
    }

    /// Samples an active index from one random number.
    #[inline]
    pub(crate) fn sample(&self, r: u64) -> usize {
        let col = reduce(r, self.keep.len());
        if (r & 0xffff_ffff) < self.keep[col] {
            col
        } else {
            self.alias[col] as usize
        }
    }

    fn memory_bytes(&self) -> usize {
        self.keep.capacity() * 8 + self.alias.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_example_sequence() {
        // nginx's documented example: weights 5, 1, 1 give a a b a c a a.
        assert_eq!(smooth_wrr_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn stride_schedule_is_exact_and_smooth() {
        let w = [5u32, 1, 1, 3, 256, 17];
        let s = stride_schedule(&w);
        assert_eq!(s.len(), w.iter().sum::<u32>() as usize);
        for (i, &wi) in w.iter().enumerate() {
            let idx: Vec<usize> = s
                .iter()
                .enumerate()
                .filter(|(_, &n)| n == i as u32)
                .map(|(p, _)| p)
                .collect();
            assert_eq!(idx.len(), wi as usize);
            // Evenly spread: gaps within one of period / w.
            let ideal = s.len() as f64 / wi as f64;
            for g in idx.windows(2) {
                let gap = (g[1] - g[0]) as f64;
                assert!(
                    (gap - ideal).abs() <= w.len() as f64 + 1.0,
                    "node {i}: gap {gap}, ideal {ideal}"
                );
            }
        }
        // Large pools take the stride path and stay exact.
        let big: Vec<u32> = (0..1000).map(|i| 1 + (i % 256)).collect();
        let s = smooth_wrr_schedule(&big);
        let mut counts = vec![0u32; 1000];
        for n in s {
            counts[n as usize] += 1;
        }
        assert_eq!(counts, big);
    }

    #[test]
    fn alias_is_proportional() {
        let t = AliasTable::build(&[1, 2, 7]);
        let mut c = [0u32; 3];
        for i in 0..100_000u64 {
            c[t.sample(crate::hash::mix64(i))] += 1;
        }
        for (i, w) in [1.0, 2.0, 7.0].iter().enumerate() {
            let share = c[i] as f64 / 100_000.0;
            assert!((share - w / 10.0).abs() < 0.01, "node {i}: {share}");
        }
    }
}
