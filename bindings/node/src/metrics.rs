//! Metrics snapshots as JSON text (index.js parses them).

use clusterkit::{Cluster, Clusterkit};

pub(crate) fn deployment(ck: &Clusterkit) -> String {
    ck.metrics().to_string()
}

pub(crate) fn cluster(c: &Cluster) -> String {
    c.metrics().to_string()
}
