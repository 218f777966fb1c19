//! Observers (errors, connection states, server lifecycle) and statistics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::reactor::Counters;

use crate::base::{Addr, CloseReason, ConnId};
use crate::Error;

/// A connection's state change, as reported to [`Observer::on_conn_state`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnState {
    /// A connection was accepted (before any handshake).
    Accepted,
    /// The connection started closing; queued output is being flushed.
    Closing,
    /// The connection is closed and its resources are released.
    Closed(CloseReason),
}

/// A server's lifecycle step.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Lifecycle {
    /// Listening on this address.
    Listening(Addr),
    /// Shutdown started: no more accepts; connections drain.
    Draining,
    /// Every connection is closed and the listener is gone.
    Stopped,
}

/// Receives a server's errors, connection state changes and lifecycle steps.
///
/// Called from poller threads: implementations must be quick and must not block.
/// Every method has an empty default.
pub trait Observer: Send + Sync + 'static {
    /// An error, with the connection it concerns (if any). The library already acted on it
    /// (the error's documentation says how).
    fn on_error(&self, conn: Option<ConnId>, error: &Error) {
        let _ = (conn, error);
    }
    /// A connection changed state.
    fn on_conn_state(&self, conn: ConnId, peer: &Addr, state: &ConnState) {
        let _ = (conn, peer, state);
    }
    /// The server moved to a new lifecycle step.
    fn on_lifecycle(&self, step: &Lifecycle) {
        let _ = step;
    }
}

/// The observer used when none is given: logs through the `log` facade.
#[derive(Debug, Default)]
pub struct LogObserver;

impl Observer for LogObserver {
    fn on_error(&self, conn: Option<ConnId>, error: &Error) {
        match conn {
            Some(c) => log::debug!("conn={c} error: {error}"),
            None => log::warn!("server error: {error}"),
        }
    }
    fn on_lifecycle(&self, step: &Lifecycle) {
        log::info!("server {step:?}");
    }
}

/// A snapshot of a server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted (including rejected ones).
    pub accepted: u64,
    /// Connections closed at once because the server was at `max_connections`.
    pub rejected: u64,
    /// Connections closed.
    pub closed: u64,
    /// Bytes read from sockets (with TLS: the records, handshakes included).
    pub bytes_in: u64,
    /// Bytes written to sockets (with TLS: the records).
    pub bytes_out: u64,
    /// Application bytes received: after TLS decryption (equal to `bytes_in` without TLS).
    pub plain_bytes_in: u64,
    /// Application bytes sent: before TLS encryption (equal to `bytes_out` without TLS,
    /// once written).
    pub plain_bytes_out: u64,
    /// Messages dropped by the drop policy (refused sends, evicted messages, messages larger
    /// than the whole queue bound).
    pub dropped: u64,
    /// Of `dropped`: older messages thrown out of queues to make room by
    /// [`DropPolicy::DropOldest`](crate::DropPolicy::DropOldest).
    pub evicted: u64,
    /// Bytes queued for peers right now.
    pub queued_bytes: u64,
    /// Datagrams received (datagram servers).
    pub datagrams_in: u64,
    /// Datagrams sent (datagram servers).
    pub datagrams_out: u64,
    /// Queued output bytes thrown away because their connection closed first (a reset, a
    /// close deadline, a forced shutdown).
    pub discarded_bytes: u64,
}

impl ServerStats {
    /// A snapshot of a server's counters.
    pub(crate) fn of(c: &Counters) -> ServerStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            accepted: g(&c.accepted),
            rejected: g(&c.rejected),
            closed: g(&c.closed),
            bytes_in: g(&c.bytes_in),
            bytes_out: g(&c.bytes_out),
            plain_bytes_in: g(&c.plain_in),
            plain_bytes_out: g(&c.plain_out),
            dropped: g(&c.dropped),
            evicted: g(&c.evicted),
            queued_bytes: c.queued.load(Ordering::Relaxed) as u64,
            datagrams_in: g(&c.datagrams_in),
            datagrams_out: g(&c.datagrams_out),
            discarded_bytes: g(&c.discarded),
        }
    }
}
