//! Listening sockets: accept with a per-turn bound, enforce the connection limit, and hand
//! connections to pollers.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::Registry;

use super::poller::{Entry, Poller};
use super::stream::{Accepted, StreamSock};
use super::MAX_ACCEPTS_PER_TURN;
use crate::base::{Addr, CloseReason};
use crate::server::observe::ConnState;
use crate::server::ServerShared;

/// A listening socket.
pub(crate) enum ListenSock {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

/// A listener owned by one poller.
pub(crate) struct Listener {
    pub(crate) sock: ListenSock,
    pub(crate) server: Arc<ServerShared>,
    /// Spread accepted connections over all pollers (a single listener, e.g. Unix).
    pub(crate) handoff: bool,
    rr: usize,
}

impl Listener {
    pub(crate) fn new(sock: ListenSock, server: Arc<ServerShared>, handoff: bool) -> Self {
        Listener {
            sock,
            server,
            handoff,
            rr: 0,
        }
    }

    pub(crate) fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        match &mut self.sock {
            ListenSock::Tcp(l) => reg.deregister(l),
            ListenSock::Unix(l) => reg.deregister(l),
        }
    }

    fn accept(&self) -> io::Result<Accepted> {
        let server = self.server.clone();
        match &self.sock {
            ListenSock::Tcp(l) => {
                let (s, peer) = l.accept()?;
                if server.config.nodelay {
                    let _ = s.set_nodelay(true);
                }
                let local = s
                    .local_addr()
                    .map(Addr::Inet)
                    .unwrap_or(server.local.clone());
                Ok(Accepted {
                    sock: StreamSock::Tcp(s),
                    server,
                    peer: Addr::Inet(peer),
                    local,
                    cred: None,
                })
            }
            ListenSock::Unix(l) => {
                let (s, peer) = l.accept()?;
                let cred = crate::sys::peer_cred(crate::sys::fd_of(&s));
                let peer = Addr::Unix(peer.as_pathname().map(|p| p.to_path_buf()));
                Ok(Accepted {
                    sock: StreamSock::Unix(s),
                    local: server.local.clone(),
                    server,
                    peer,
                    cred,
                })
            }
        }
    }
}

impl Poller {
    /// Accepts up to [`MAX_ACCEPTS_PER_TURN`] connections.
    pub(crate) fn listener_ready(&mut self, slot: usize) {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(Entry::Listener(l)) = self.entries.get_mut(slot) else {
                return;
            };
            let acc = match l.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    l.server.observer.on_error(None, &e.into());
                    return;
                }
            };
            let target = if l.handoff && self.siblings.len() > 1 {
                l.rr = l.rr.wrapping_add(1);
                Some(self.siblings[l.rr % self.siblings.len()].clone())
            } else {
                None
            };
            if !admit(&acc) {
                continue;
            }
            match target {
                Some(p) if p.id != self.shared.id => p.run(move |poller| poller.adopt_stream(acc)),
                _ => self.adopt_stream(acc),
            }
        }
        // Budget spent with connections possibly still waiting: come back next turn.
        let gen = self.gens[slot];
        self.again.push((slot as u32, gen));
    }
}

/// Counts the connection and applies the connection limit and draining state. A refused
/// connection is dropped (closed) here.
fn admit(acc: &Accepted) -> bool {
    let server = &acc.server;
    let stats = &server.stats;
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    if server.draining.load(Ordering::Acquire) {
        return false;
    }
    let open = stats.open.fetch_add(1, Ordering::AcqRel);
    if open < server.config.max_connections {
        return true;
    }
    stats.open.fetch_sub(1, Ordering::AcqRel);
    stats.rejected.fetch_add(1, Ordering::Relaxed);
    stats.closed.fetch_add(1, Ordering::Relaxed);
    let id = crate::ConnId(0);
    server
        .observer
        .on_conn_state(id, &acc.peer, &ConnState::Closed(CloseReason::ServerFull));
    false
}
