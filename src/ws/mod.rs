//! WebSocket engine (RFC 6455 + RFC 7692), sans-IO.

mod error;
pub use error::WsError;
