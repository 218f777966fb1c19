//! WebSocket errors.

use std::fmt;

/// A WebSocket failure. (Stub: to be filled by the WebSocket engine work.)
#[derive(Debug)]
#[non_exhaustive]
pub enum WsError {
    /// The peer violated the protocol; a close frame with this code was sent.
    Protocol(u16),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Protocol(c) => write!(f, "protocol violation (close code {c})"),
        }
    }
}

impl std::error::Error for WsError {}
