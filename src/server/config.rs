//! Server configuration: limits, queue bounds, drop policies and where handlers run.

use crate::base::DropPolicy;
use std::time::Duration;

/// Where a server's handler code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// On the runtime's handler threads (the default): a handler that blocks or panics never
    /// stops I/O for other connections, and a handler that blocks delays only its own
    /// connection. Each connection's events are handled in order by one thread at a time;
    /// any idle thread takes the next connection with work, and the pool grows while every
    /// thread is busy (see [`RuntimeBuilder::max_handler_threads`](crate::RuntimeBuilder::max_handler_threads)).
    #[default]
    Threads,
    /// Directly on the poller thread that owns the connection: the fast path, for handlers
    /// that never block (echo servers, relays). A panic still closes only its connection.
    Inline,
}

/// Limits and policies of one server. Every default is listed on its setter and in the README.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_read_per_turn: usize,
    pub(crate) max_queued_bytes: usize,
    /// `None`: the transport's default (see [`ServerConfig::drop_policy`]).
    pub(crate) drop_policy: Option<DropPolicy>,
    pub(crate) dispatch: Dispatch,
    pub(crate) max_inbound_pending: usize,
    pub(crate) max_datagram_size: usize,
    pub(crate) backlog: i32,
    pub(crate) nodelay: bool,
    pub(crate) reuse_port: bool,
    pub(crate) close_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 100_000,
            idle_timeout: None,
            max_read_per_turn: 256 << 10,
            max_queued_bytes: 4 << 20,
            drop_policy: None,
            dispatch: Dispatch::Threads,
            max_inbound_pending: 1 << 20,
            max_datagram_size: 64 << 10,
            backlog: 1024,
            nodelay: true,
            reuse_port: false,
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl ServerConfig {
    /// A configuration with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maximum open connections (default 100,000). Connections past it are accepted, closed
    /// at once and counted in [`ServerStats::rejected`](crate::ServerStats::rejected).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Close a connection with no inbound bytes for this long (default: no idle timeout).
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Bytes read from one connection per readiness event before the poller moves on to
    /// others (default 256 KiB). The rest is read on the next loop turn.
    pub fn max_read_per_turn(mut self, n: usize) -> Self {
        self.max_read_per_turn = n.max(1);
        self
    }

    /// Bound of each connection's outbound queue in bytes (default 4 MiB).
    pub fn max_queued_bytes(mut self, n: usize) -> Self {
        self.max_queued_bytes = n;
        self
    }

    /// What happens when the outbound queue is full. Default: [`DropPolicy::Backpressure`]
    /// for TCP, TLS and Unix stream servers (a byte stream never loses bytes from its
    /// middle), [`DropPolicy::DropNewest`] for WebSocket and datagram servers.
    pub fn drop_policy(mut self, p: DropPolicy) -> Self {
        self.drop_policy = Some(p);
        self
    }

    /// The drop policy in effect for a server of this kind.
    pub(crate) fn policy_for(&self, byte_stream: bool) -> DropPolicy {
        self.drop_policy.unwrap_or(match byte_stream {
            true => DropPolicy::Backpressure,
            false => DropPolicy::DropNewest,
        })
    }

    /// Where handlers run (default [`Dispatch::Threads`]).
    pub fn dispatch(mut self, d: Dispatch) -> Self {
        self.dispatch = d;
        self
    }

    /// With [`Dispatch::Threads`]: inbound bytes handed to the handler thread but not yet
    /// handled, per connection, above which the poller stops reading that connection until
    /// the handler catches up (default 1 MiB). Bounds memory against a fast sender. Each
    /// message counts its job's overhead too, so a flood of tiny messages is bounded in
    /// count as well. For datagram servers it bounds the datagrams waiting for the handler
    /// threads: past it the newest are dropped and counted in
    /// [`ServerStats::dropped`](crate::ServerStats::dropped).
    pub fn max_inbound_pending(mut self, n: usize) -> Self {
        self.max_inbound_pending = n.max(1);
        self
    }

    /// Largest datagram accepted (default 64 KiB). A larger one is dropped and reported as
    /// [`Error::DatagramTooLarge`](crate::Error::DatagramTooLarge); the server keeps serving.
    pub fn max_datagram_size(mut self, n: usize) -> Self {
        self.max_datagram_size = n.clamp(1, 1 << 20);
        self
    }

    /// Listen backlog (default 1024).
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }

    /// `SO_REUSEPORT` on TCP and UDP sockets (default false). With it, each poller gets
    /// its own listening socket and the kernel spreads connections; it also lets another
    /// process bind the same port and take a share of the connections, so it is only for
    /// multi-process setups that want exactly that. Without it, binding a port in use fails
    /// (`bind 127.0.0.1:7000: address in use`) and one listening socket hands connections
    /// to the pollers in turn.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// TCP_NODELAY on accepted TCP connections (default true).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// How long a closing connection may take to flush its queued output before it is
    /// force-closed (default 5 s).
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }
}

/// HTTP long-polling on a WebSocket server's port and path (docs/PROTOCOL.md,
/// "Long-polling transport"), enabled by
/// [`WsServerConfig::polling`](crate::WsServerConfig::polling). Every default is listed on
/// its setter.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use sockloop::{PollingConfig, WsServerConfig};
/// let ws = WsServerConfig::new().polling(Some(
///     PollingConfig::new().poll_interval(Duration::from_secs(10)).max_body(64 << 10),
/// ));
/// # let _ = ws;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollingConfig {
    pub(crate) poll_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) max_batch: usize,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            poll_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_body: 1 << 20,
            max_batch: 1 << 20,
        }
    }
}

impl PollingConfig {
    /// A configuration with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a GET is held when there is nothing to send; then it is answered with an
    /// empty batch, the heartbeat (default 25 s).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// A session with no GET for this long after the last one was answered closes
    /// (`on_close` sees 1001 "ping timeout"; the observer [`CloseReason::PongTimeout`](crate::CloseReason::PongTimeout))
    /// (default 20 s).
    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.ping_timeout = d;
        self
    }

    /// Largest POST body in bytes; a larger one is answered with 413 (default 1 MiB).
    pub fn max_body(mut self, n: usize) -> Self {
        self.max_body = n.max(1);
        self
    }

    /// Payload bytes one GET response carries at most; the rest waits for the next GET
    /// (default 1 MiB; one record is always sent, however large).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}
