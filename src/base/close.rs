//! Why a connection closed.

use std::fmt;

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Closed by this side (`close()` or the handler).
    Local,
    /// The peer closed its side (end of stream) after everything queued was flushed.
    PeerClosed,
    /// The peer reset the connection or an I/O error occurred (the message says which).
    Reset(String),
    /// No inbound bytes within the idle timeout.
    IdleTimeout,
    /// The TLS (or WebSocket) handshake did not finish within its timeout.
    HandshakeTimeout,
    /// A WebSocket peer did not answer a ping within the pong timeout.
    PongTimeout,
    /// A TLS handshake or protocol failure (the message says which).
    Protocol(String),
    /// The outbound queue overflowed under [`DropPolicy::Disconnect`](crate::DropPolicy::Disconnect).
    QueueOverflow,
    /// The server is at its connection limit; the connection was closed on accept.
    ServerFull,
    /// The runtime's memory budget was spent and the connection's drop policy is
    /// [`DropPolicy::Disconnect`](crate::DropPolicy::Disconnect) (a WebSocket peer gets
    /// close code 1013, "try again later").
    OverBudget,
    /// The server shut down.
    Shutdown,
    /// The handler panicked (with the panic message); only this connection was closed.
    HandlerPanic(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Reset(m) => write!(f, "reset: {m}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::HandshakeTimeout => f.write_str("handshake timeout"),
            CloseReason::PongTimeout => f.write_str("pong timeout"),
            CloseReason::Protocol(m) => write!(f, "protocol error: {m}"),
            CloseReason::QueueOverflow => f.write_str("outbound queue overflow"),
            CloseReason::ServerFull => f.write_str("server full"),
            CloseReason::OverBudget => f.write_str("server over its memory budget"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::HandlerPanic(m) => write!(f, "handler panicked: {m}"),
        }
    }
}
