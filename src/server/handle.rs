//! Cloneable connection handles: send, close, addresses. Safe to keep after the connection
//! is gone.

use crate::base::{Addr, CloseReason, ConnId, PeerCred, SendStatus};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::base::DropPolicy;
use crate::reactor::local::{self, Kind};
use crate::reactor::{Command, PollerShared};
use crate::server::ServerShared;

pub(crate) const STATE_OPEN: u8 = 0;
pub(crate) const STATE_CLOSING: u8 = 1;
pub(crate) const STATE_CLOSED: u8 = 2;

pub(crate) struct ConnShared {
    pub(crate) id: ConnId,
    pub(crate) poller: Arc<PollerShared>,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) queued: AtomicUsize,
    pub(crate) state: AtomicU8,
    pub(crate) peer: Addr,
    /// The local address when it differs from the server's (wildcard binds).
    pub(crate) local: Option<Box<Addr>>,
    pub(crate) cred: Option<Box<PeerCred>>,
    /// Inbound bytes handed to a handler thread and not yet handled.
    pub(crate) inbound: AtomicUsize,
    /// The poller stopped reading until the handler thread catches up.
    pub(crate) paused: AtomicBool,
    /// Set by the WebSocket authenticator at upgrade.
    pub(crate) identity: std::sync::OnceLock<Box<crate::server::websocket::Identity>>,
}

/// Adjusts a connection's queued-byte count (and its server's) by `delta`.
pub(crate) fn account(sh: &ConnShared, delta: isize) {
    if delta >= 0 {
        sh.queued.fetch_add(delta as usize, Ordering::AcqRel);
        sh.server.stats.add_queued(delta as usize);
    } else {
        sh.queued.fetch_sub(delta.unsigned_abs(), Ordering::AcqRel);
        sh.server.stats.sub_queued(delta.unsigned_abs());
    }
}

/// A cloneable, `Send + Sync` handle to one stream connection.
///
/// Handles are cheap to clone and may outlive the connection: on a closed connection `send`
/// returns [`SendStatus::Closed`] and `close` does nothing.
#[derive(Clone)]
pub struct Conn {
    pub(crate) inner: Arc<ConnShared>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl Conn {
    /// The connection's process-unique id.
    pub fn id(&self) -> ConnId {
        self.inner.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.inner.peer
    }

    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> &Addr {
        self.inner
            .local
            .as_deref()
            .unwrap_or(&self.inner.server.local)
    }

    /// Peer credentials, for Unix stream connections.
    pub fn peer_cred(&self) -> Option<PeerCred> {
        self.inner.cred.as_deref().copied()
    }

    /// Whether the connection is still open (not closing or closed).
    pub fn is_open(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == STATE_OPEN
    }

    /// Bytes queued for this connection and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Queues `data` for the connection, applying the server's bound and drop policy.
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(conn: &sockloop::Conn) {
    /// match conn.send(b"hello\n") {
    ///     sockloop::SendStatus::Queued => {}
    ///     other => eprintln!("not sent: {other:?}"),
    /// }
    /// # }
    /// ```
    pub fn send(&self, data: &[u8]) -> SendStatus {
        self.send_op(Kind::Raw, data)
    }

    /// Admits and queues raw bytes or a WebSocket message (framed on the poller).
    pub(crate) fn send_op(&self, kind: Kind, data: &[u8]) -> SendStatus {
        match self.admit(data.len()) {
            SendStatus::Queued => {}
            other => return other,
        }
        if !local::try_send_local(&self.inner, kind, data) {
            let conn = self.inner.clone();
            self.inner.poller.command(match kind {
                Kind::Raw => Command::Send {
                    conn,
                    data: crate::reactor::Payload::Owned(data.to_vec()),
                },
                Kind::Ws(op) => Command::WsSend {
                    conn,
                    op,
                    data: data.to_vec(),
                },
            });
        }
        SendStatus::Queued
    }

    /// Queues a message framed once for many recipients (a broadcast).
    pub(crate) fn send_frames(&self, frames: &crate::proto::ws::SharedFrames) -> SendStatus {
        match self.admit(frames.plain.len()) {
            SendStatus::Queued => {}
            other => return other,
        }
        self.inner.poller.command(Command::SendFrames {
            conn: self.inner.clone(),
            frames: frames.clone(),
        });
        SendStatus::Queued
    }

    /// Moves the connection from open to closing; true for the caller that did it.
    pub(crate) fn begin_closing(&self) -> bool {
        self.inner
            .state
            .compare_exchange(
                STATE_OPEN,
                STATE_CLOSING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Queues an owned buffer without copying it (same semantics as [`send`](Self::send)).
    pub fn send_vec(&self, data: Vec<u8>) -> SendStatus {
        match self.admit(data.len()) {
            SendStatus::Queued => {}
            other => return other,
        }
        self.inner.poller.command(Command::Send {
            conn: self.inner.clone(),
            data: crate::reactor::Payload::Owned(data),
        });
        SendStatus::Queued
    }

    /// Queues shared bytes (a broadcast frame encoded once) without copying them.
    pub fn send_shared(&self, data: Arc<[u8]>) -> SendStatus {
        match self.admit(data.len()) {
            SendStatus::Queued => {}
            other => return other,
        }
        self.inner.poller.command(Command::Send {
            conn: self.inner.clone(),
            data: crate::reactor::Payload::Shared(data),
        });
        SendStatus::Queued
    }

    /// Closes the connection gracefully: queued output is flushed (within the server's close
    /// timeout), then the socket is shut down. Harmless on a closed connection.
    pub fn close(&self) {
        self.close_with(CloseReason::Local);
    }

    pub(crate) fn close_with(&self, reason: CloseReason) {
        if self.begin_closing() {
            self.inner.poller.command(Command::Close {
                conn: self.inner.clone(),
                reason,
            });
        }
    }

    /// Accounts `len` bytes against the queue bound; decides the status.
    fn admit(&self, len: usize) -> SendStatus {
        let inner = &self.inner;
        if inner.state.load(Ordering::Acquire) != STATE_OPEN {
            return SendStatus::Closed;
        }
        let limit = inner.server.config.max_queued_bytes;
        let before = inner.queued.fetch_add(len, Ordering::AcqRel);
        if before + len <= limit || before == 0 {
            inner.server.stats.add_queued(len);
            return SendStatus::Queued;
        }
        match inner.server.config.drop_policy {
            DropPolicy::DropOldest => {
                inner.server.stats.add_queued(len);
                SendStatus::Queued
            }
            DropPolicy::DropNewest => {
                inner.queued.fetch_sub(len, Ordering::AcqRel);
                inner.server.stats.dropped(1);
                SendStatus::Dropped
            }
            DropPolicy::Disconnect => {
                inner.queued.fetch_sub(len, Ordering::AcqRel);
                inner.server.stats.dropped(1);
                self.close_with(CloseReason::QueueOverflow);
                SendStatus::Dropped
            }
        }
    }
}
