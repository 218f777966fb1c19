//! Clusters: several nodes, each a hub with its own server, joined by a [`Bus`] (Redis, or
//! in-process), behaving as one server for every hub operation.

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
