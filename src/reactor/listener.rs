//! Listening sockets: accept with a per-turn bound, ask the owner to admit each connection,
//! and hand connections to pollers.

use std::io;
use std::sync::Arc;

use mio::Registry;

use super::driver::{Accept, Policy};
use super::poller::{Entry, Poller};
use super::stream::{Accepted, StreamSock};
use super::MAX_ACCEPTS_PER_TURN;
use crate::base::Addr;

/// A listening socket.
pub(crate) enum ListenSock {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

/// A listener owned by one poller.
pub(crate) struct Listener {
    sock: ListenSock,
    owner: Arc<dyn Accept>,
    /// Spread accepted connections over all pollers (a single listener, e.g. Unix).
    handoff: bool,
    /// Set TCP_NODELAY on accepted sockets.
    nodelay: bool,
    /// The listener's own address (for connections whose local address is unknown).
    local: Addr,
    rr: usize,
}

impl Listener {
    /// A TCP listener (from a bound, non-blocking std listener).
    pub(crate) fn tcp(
        l: std::net::TcpListener,
        owner: Arc<dyn Accept>,
        handoff: bool,
        nodelay: bool,
        local: Addr,
    ) -> Box<Self> {
        Self::new(
            ListenSock::Tcp(mio::net::TcpListener::from_std(l)),
            owner,
            handoff,
            nodelay,
            local,
        )
    }

    /// A Unix stream listener (from a bound, non-blocking std listener).
    pub(crate) fn unix(
        l: std::os::unix::net::UnixListener,
        owner: Arc<dyn Accept>,
        handoff: bool,
        local: Addr,
    ) -> Box<Self> {
        Self::new(
            ListenSock::Unix(mio::net::UnixListener::from_std(l)),
            owner,
            handoff,
            false,
            local,
        )
    }

    fn new(
        sock: ListenSock,
        owner: Arc<dyn Accept>,
        handoff: bool,
        nodelay: bool,
        local: Addr,
    ) -> Box<Self> {
        Box::new(Listener {
            sock,
            owner,
            handoff,
            nodelay,
            local,
            rr: 0,
        })
    }

    pub(crate) fn is_of(&self, owner: &Arc<Policy>) -> bool {
        Arc::ptr_eq(self.owner.policy(), owner)
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match &mut self.sock {
            ListenSock::Tcp(l) => l,
            ListenSock::Unix(l) => l,
        }
    }

    pub(crate) fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        reg.deregister(self.source())
    }

    fn accept(&self) -> io::Result<Accepted> {
        let owner = self.owner.clone();
        match &self.sock {
            ListenSock::Tcp(l) => {
                let (s, peer) = l.accept()?;
                if self.nodelay {
                    let _ = s.set_nodelay(true);
                }
                // Bound to one address, every connection's local address is the listener's;
                // only a wildcard listener asks the kernel (`getsockname`) per connection.
                let local = match &self.local {
                    Addr::Inet(a) if !a.ip().is_unspecified() => self.local.clone(),
                    _ => s
                        .local_addr()
                        .map(Addr::Inet)
                        .unwrap_or_else(|_| self.local.clone()),
                };
                Ok(Accepted {
                    owner,
                    sock: StreamSock::Tcp(s),
                    peer: Addr::Inet(peer),
                    local,
                    cred: None,
                    place: None,
                })
            }
            ListenSock::Unix(l) => {
                let (s, peer) = l.accept()?;
                let cred = crate::sys::peer_cred(crate::sys::fd_of(&s));
                let peer = Addr::Unix(peer.as_pathname().map(|p| p.to_path_buf()));
                Ok(Accepted {
                    owner,
                    sock: StreamSock::Unix(s),
                    local: self.local.clone(),
                    peer,
                    cred,
                    place: None,
                })
            }
        }
    }
}

impl Poller {
    /// Accepts up to [`MAX_ACCEPTS_PER_TURN`] connections.
    pub(crate) fn listener_ready(&mut self, slot: usize) {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some((acc, target)) = self.accept_one(slot) else {
                return;
            };
            if let Some(acc) = acc {
                self.place_accepted(target, acc);
            }
        }
        // Budget spent with connections possibly still waiting: come back next turn.
        self.again_listener(slot);
    }
}

impl Poller {
    /// One accept: `None` when there is nothing more (or the listener is gone);
    /// `Some((None, _))` for a refused or failed one.
    fn accept_one(
        &mut self,
        slot: usize,
    ) -> Option<(Option<Accepted>, Option<Arc<super::PollerShared>>)> {
        let n = self.siblings().len();
        let Some(Entry::Listener(l)) = self.entry_mut(slot) else {
            return None;
        };
        let acc = match l.accept() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Some((None, None)),
            Err(e) => {
                log::warn!("accept failed: {e}");
                l.owner.on_error(e.into());
                return None;
            }
        };
        let target = (l.handoff && n > 1).then(|| {
            l.rr = l.rr.wrapping_add(1);
            l.rr % n
        });
        if !l.owner.admit(&acc.peer) {
            return Some((None, None));
        }
        let target = target.map(|i| self.siblings()[i].clone());
        Some((Some(acc), target))
    }
}
