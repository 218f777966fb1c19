//! Clusters: several nodes, each a hub with its own server, joined by a [`Bus`] (Redis with
//! the `redis` feature, or the in-process [`LocalBus`]), behaving as one server for every
//! hub operation: emits to rooms, users and everyone cross the nodes (published once,
//! framed once on each), rooms, presence and user lists are the cluster's, a node that dies
//! is noticed and skipped, and sessions resume on any node. `docs/CLUSTER.md` has the
//! design, the guarantees and how to set up a load balancer (nothing special).
//!
//! # Examples
//! ```
//! use sockloop::hub::cluster::{ClusterConfig, LocalBus};
//! use sockloop::hub::Hub;
//! let bus = LocalBus::new();
//! let a = Hub::builder().cluster(bus.handle(), ClusterConfig::new("a")).build();
//! let b = Hub::builder().cluster(bus.handle(), ClusterConfig::new("b")).build();
//! assert_eq!(a.cluster_stats().unwrap().node, "a");
//! # drop(b);
//! ```

mod bus;
mod glue;
mod local;
pub(crate) mod node;
#[cfg(feature = "redis")]
mod redis;
mod ring;

pub use bus::{tag_of, Bus, BusError, BusResult, Fanout, Inbox, LogRead};
pub use local::LocalBus;
pub use node::{ClusterConfig, ClusterStats};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisBus, RedisBusConfig};
pub use ring::Ring;
