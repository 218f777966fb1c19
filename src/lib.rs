//! sockloop: a synchronous event loop for TCP, TLS, UDP, Unix and WebSocket servers.
//!
//! See the README for the architecture and getting started.
#![deny(missing_docs)]

pub mod client;
pub mod error;
pub mod http;
pub mod supervise;
pub mod tls;
pub mod ws;

pub use error::{Error, Result};
