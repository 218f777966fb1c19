//! Cloneable connection handles: send, close, addresses. Safe to keep after the connection
//! is gone.

use crate::base::{Addr, CloseReason, ConnId, PeerCred, SendStatus};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::reactor::local::{self, Kind};
use crate::reactor::{Admit, ConnCmd, Link, LinkExt, Payload, Policy, STATE_OPEN};
use crate::server::ServerShared;
use crate::sys::OnceBox;

/// What the server keeps about each connection, beside the reactor's [`Link`].
pub(crate) struct ConnInfo {
    pub(crate) id: ConnId,
    /// Feature `tracing`: the connection's span (`()` without it, never read).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) span: crate::server::trace::ConnSpan,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) peer: crate::base::PeerAddr,
    /// What few connections have, in one allocation made only when used (an idle plain
    /// connection of a server bound to one address keeps none).
    cold: OnceBox<Cold>,
}

/// The rarely present part of [`ConnInfo`].
#[derive(Default)]
pub(crate) struct Cold {
    /// The local address when it differs from the server's (wildcard binds).
    local: Option<Addr>,
    /// Unix stream connections: the peer's credentials.
    cred: Option<PeerCred>,
    /// Set by the WebSocket authenticator at upgrade.
    pub(crate) identity: OnceLock<crate::server::websocket::Identity>,
    /// TLS connections: what the handshake negotiated, set when it completed.
    tls: OnceLock<crate::tls::TlsInfo>,
}

impl ConnInfo {
    /// A connection's info; `local` only when it differs from the server's address.
    pub(crate) fn new(
        id: ConnId,
        span: crate::server::trace::ConnSpan,
        server: Arc<ServerShared>,
        peer: Addr,
        local: Option<Addr>,
        cred: Option<PeerCred>,
    ) -> Self {
        let cold = if local.is_some() || cred.is_some() {
            OnceBox::from(Cold {
                local,
                cred,
                ..Cold::default()
            })
        } else {
            OnceBox::new()
        };
        ConnInfo {
            id,
            span,
            server,
            peer: crate::base::PeerAddr::new(peer),
            cold,
        }
    }

    /// The rare part, if any of it was set.
    pub(crate) fn cold(&self) -> Option<&Cold> {
        self.cold.get()
    }

    /// The rare part, made on first use (setting an identity or the TLS details).
    pub(crate) fn cold_mut(&self) -> &Cold {
        self.cold.get_or_init(Cold::default)
    }
}

impl LinkExt for ConnInfo {
    /// The server's policy: the one `Arc` all its connections share (its counters).
    #[inline]
    fn policy(&self) -> &Arc<Policy> {
        &self.server.policy
    }
}

/// A connection as every thread sees it: the reactor's link with the server's info.
pub(crate) type ConnShared = Link<ConnInfo>;

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
            .field("id", &self.inner.ext.id)
            .field("peer", &self.inner.ext.peer)
            .finish()
    }
}

impl Conn {
    /// The connection's process-unique id.
    pub fn id(&self) -> ConnId {
        self.inner.ext.id
    }

    /// The peer's address (kept compactly by the connection, so returned by value).
    pub fn peer_addr(&self) -> Addr {
        self.inner.ext.peer.get()
    }

    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> &Addr {
        self.inner
            .ext
            .cold()
            .and_then(|c| c.local.as_ref())
            .unwrap_or(&self.inner.ext.server.local)
    }

    /// Peer credentials, for Unix stream connections.
    pub fn peer_cred(&self) -> Option<PeerCred> {
        self.inner.ext.cold().and_then(|c| c.cred)
    }

    /// What the TLS handshake negotiated (ALPN protocol, SNI name, client certificates,
    /// version); `None` for plain connections. Set before the handler's `on_open` runs.
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(conn: &sockloop::Conn) {
    /// if let Some(tls) = conn.tls() {
    ///     let h2 = tls.alpn_protocol() == Some(&b"h2"[..]);
    ///     let name = tls.server_name().unwrap_or("(no SNI)");
    ///     let has_client_cert = !tls.peer_certificates().is_empty();
    ///     # let _ = (h2, name, has_client_cert);
    /// }
    /// # }
    /// ```
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.inner.ext.cold().and_then(|c| c.tls.get())
    }

    /// Records what the TLS handshake negotiated (once, on the poller).
    pub(crate) fn set_tls(&self, info: crate::tls::TlsInfo) {
        let _ = self.inner.ext.cold_mut().tls.set(info);
    }

    /// Whether the connection is still open (not closing or closed).
    pub fn is_open(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == STATE_OPEN
    }

    /// Bytes queued for this connection and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Queues a copy of `data` (anything that is bytes: `&str`, `String`, `&[u8]`,
    /// `Vec<u8>`, `[u8; N]`…) for the connection, applying the server's bound and drop
    /// policy. To hand over an owned buffer without a copy, use [`send_vec`](Self::send_vec).
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(conn: &sockloop::Conn) {
    /// match conn.send("hello\n") {
    ///     sockloop::SendStatus::Queued => {}
    ///     other => eprintln!("not sent: {other:?}"),
    /// }
    /// let _ = conn.send(b"bytes");
    /// let _ = conn.send(format!("{} connections\n", 3));
    /// # }
    /// ```
    pub fn send(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send_op(Kind::Raw, data.as_ref())
    }

    /// Admits and queues raw bytes or a WebSocket message (framed on the poller).
    pub(crate) fn send_op(&self, kind: Kind, data: &[u8]) -> SendStatus {
        match self.admit(data.len()) {
            SendStatus::Queued => {}
            other => return other,
        }
        let sh = &self.inner;
        if !local::try_send_local(sh.poller.id, sh.slot, sh.gen, kind, data) {
            self.inner.command(match kind {
                Kind::Raw => ConnCmd::Send(Payload::Owned(data.to_vec())),
                Kind::Ws(op) => ConnCmd::Message(op, data.to_vec()),
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
        self.inner.command(ConnCmd::Frames(frames.clone()));
        SendStatus::Queued
    }

    /// Moves the connection from open to closing; true for the caller that did it.
    pub(crate) fn begin_closing(&self) -> bool {
        self.inner.begin_closing()
    }

    /// Queues an owned buffer without copying it (same semantics as [`send`](Self::send)).
    pub fn send_vec(&self, data: Vec<u8>) -> SendStatus {
        match self.admit(data.len()) {
            SendStatus::Queued => {}
            other => return other,
        }
        self.inner.command(ConnCmd::Send(Payload::Owned(data)));
        SendStatus::Queued
    }

    /// Queues shared bytes (a broadcast frame encoded once) without copying them.
    pub fn send_shared(&self, data: Arc<[u8]>) -> SendStatus {
        match self.admit(data.len()) {
            SendStatus::Queued => {}
            other => return other,
        }
        self.inner.command(ConnCmd::Send(Payload::Shared(data)));
        SendStatus::Queued
    }

    /// Closes the connection gracefully: queued output is flushed (within the server's close
    /// timeout), then the socket is shut down. Harmless on a closed connection.
    pub fn close(&self) {
        self.close_with(CloseReason::Local);
    }

    pub(crate) fn close_with(&self, reason: CloseReason) {
        if self.begin_closing() {
            self.inner.command(ConnCmd::Close(reason));
        }
    }

    /// The server this connection belongs to.
    pub(crate) fn server(&self) -> &Arc<ServerShared> {
        &self.inner.ext.server
    }

    /// Accounts `len` bytes against the queue bound (the one queue policy,
    /// [`crate::reactor::admit`]); decides the status.
    fn admit(&self, len: usize) -> SendStatus {
        if self.inner.state.load(Ordering::Acquire) != STATE_OPEN {
            return SendStatus::Closed;
        }
        match crate::reactor::admit(&self.inner, len) {
            Admit::Queued => SendStatus::Queued,
            Admit::Dropped => SendStatus::Dropped,
            Admit::TooLarge => SendStatus::TooLarge,
            Admit::OverBudget => {
                self.close_with(CloseReason::OverBudget);
                SendStatus::Dropped
            }
            Admit::Overflow => {
                self.close_with(CloseReason::QueueOverflow);
                SendStatus::Dropped
            }
        }
    }
}
