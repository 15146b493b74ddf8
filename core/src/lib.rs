//! # clusterkit
//!
//! Cluster membership, health-aware load balancing and (in later modules) a distributed
//! cache, distributed locks and sessions, from one native core used by Rust, C, PHP, Python
//! and Node.js.
//!
//! ```
//! use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
//!
//! let pool = Cluster::with_nodes(
//!     "app",
//!     BalancerOptions::new(Strategy::WeightedRoundRobin),
//!     [
//!         Node::new("web-1", "127.0.0.1", 8081)?.with_weight(2)?,
//!         Node::new("web-2", "127.0.0.1", 8082)?,
//!     ],
//! )?;
//! let lb = pool.balancer();
//! let pick = lb.pick()?;            // a guard: the node's in-flight count is held
//! println!("send to {}", pick.address());
//! pick.success(std::time::Duration::from_millis(3));
//! # Ok::<(), clusterkit::Error>(())
//! ```
#![deny(missing_docs)]

pub mod balance;
pub mod blocking;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod deployment;
pub mod deployment_metrics;
pub mod discovery;
pub mod error;
pub mod etcd;
pub mod fork;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod node;
pub mod queue;
mod rng;
pub mod scaling;
pub mod session;
pub mod status;

pub use balance::{BalancerOptions, LoadBalancer, PanicMode, Pick, Strategy};
pub use cluster::health::{CheckKind, CheckOptions, HealthMetrics, HealthOptions, OutlierOptions};
pub use cluster::{Cluster, ClusterEvent, NodeStatus, WeakCluster};
pub use config::{CacheConfig, Config, NodeConfig, PoolConfig};
pub use connection::{ConnectionSettings, Secret, TlsOptions};
pub use deployment::Clusterkit;
pub use deployment_metrics::MetricsFormat;
pub use discovery::{Discovery, DiscoveryHandle, RedisRegistry, RegistryOptions, StaticDiscovery};
pub use error::{Error, ErrorKind, Result};
pub use node::{Health, Node, NodeStats};

/// The library version (`CARGO_PKG_VERSION`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
