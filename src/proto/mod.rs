//! Layer 1: sans-IO protocol engines. They take bytes and the time and return bytes and
//! actions; no socket is ever touched here.

pub mod conn;
pub mod http;
pub(crate) mod session;
pub mod ws;
