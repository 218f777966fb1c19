//! Plain HTTP/1.1: request parsing and responses for the upgrade and the HTTP hook (sans-IO).
//!
//! The reactor feeds the bytes it has read to [`parse_request`](crate::proto::http) (crate-private)
//! until it reports a complete [`Request`]; a handler answers with a [`Response`], which the
//! reactor serialises. Nothing here touches a socket.

mod chunked;
mod request;
mod response;

pub use request::{HttpLimits, Request};
pub use response::Response;

#[allow(unused_imports)] // used by the reactor and the WebSocket client
pub(crate) use request::{parse_request, ParseOutcome};
pub(crate) use response::{reason_phrase, write_header, write_status_line};
