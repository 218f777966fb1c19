//! Listening sockets: accept with a per-turn bound, ask the owner to admit each connection,
//! and hand connections to pollers.
//!
//! # When accepting fails
//! A failed `accept` (other than "nothing waiting", an interrupted call or a connection
//! the peer already aborted) leaves the waiting connections in the kernel's queue, and an
//! edge-triggered poller gets no new event for them. Typical causes are running out of
//! descriptors (`EMFILE`, `ENFILE`) or kernel memory (`ENOBUFS`, `ENOMEM`). The listener
//! then retries on a poller timer, [`RETRY_FIRST`] after the failure and doubling up to
//! [`RETRY_MAX`] while it keeps failing, so waiting connections are accepted once
//! descriptors free up. The owner hears of the failure once per episode (the first
//! failure after a success), not once per retry.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mio::Registry;

use super::driver::{Accept, Policy};
use super::poller::{Entry, Poller};
use super::stream::{Accepted, StreamSock};
use super::timer::TimerKind;
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
    /// Set while accepting fails: the retry episode.
    retry: Option<Retry>,
}

/// First retry after a failed accept.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between retries while accepting keeps failing.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(1);

/// A retry episode: accepting failed and has not succeeded since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    /// Delay of the next retry timer.
    delay: Duration,
    /// A retry timer is pending.
    armed: bool,
}

/// What to do about one failed accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OnFailure {
    /// The first failure of an episode: tell the owner.
    report: bool,
    /// Arm a retry timer this far ahead (none when one is pending).
    arm: Option<Duration>,
}

impl Retry {
    /// The episode after one more failure (`None`: the first one).
    fn failed(this: Option<Retry>) -> (Retry, OnFailure) {
        match this {
            None => (
                Retry {
                    delay: RETRY_FIRST,
                    armed: true,
                },
                OnFailure {
                    report: true,
                    arm: Some(RETRY_FIRST),
                },
            ),
            Some(r) if r.armed => (r, OnFailure::default()),
            Some(r) => {
                let delay = (r.delay * 2).min(RETRY_MAX);
                let next = Retry { delay, armed: true };
                let what = OnFailure {
                    report: false,
                    arm: Some(delay),
                };
                (next, what)
            }
        }
    }
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
            retry: None,
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

    /// Accepting failed: advances the retry episode and says what to do.
    fn failed(&mut self) -> OnFailure {
        let (next, what) = Retry::failed(self.retry);
        self.retry = Some(next);
        what
    }

    /// Accepting worked: the episode (if any) is over.
    fn succeeded(&mut self) {
        if self.retry.take().is_some() {
            log::info!("accepting on {} again", self.local);
        }
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

    /// A listener's retry timer fired: try accepting again (stale timers are ignored).
    pub(crate) fn listener_timer(&mut self, slot: u32, gen: u32) {
        if !self.is_live(slot, gen) {
            return;
        }
        let Some(Entry::Listener(l)) = self.entry_mut(slot as usize) else {
            return;
        };
        if let Some(r) = &mut l.retry {
            r.armed = false;
        }
        self.listener_ready(slot as usize);
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
            Err(e) if skippable(&e) => return Some((None, None)),
            Err(e) => {
                let what = l.failed();
                let e = crate::sys::named(e, "accept on", &l.local);
                if what.report {
                    log::warn!("{e}; retrying in {RETRY_FIRST:?} (backing off to {RETRY_MAX:?})");
                    l.owner.on_error(e.into());
                }
                if let Some(after) = what.arm {
                    self.arm_timer(slot, after, TimerKind::Listener);
                }
                return None;
            }
        };
        l.succeeded();
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

/// A failed accept that concerns one connection only: skip it and accept the next.
fn skippable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_reports_once_and_backs_off_to_the_cap() {
        let (mut r, first) = Retry::failed(None);
        assert_eq!(
            first,
            OnFailure {
                report: true,
                arm: Some(RETRY_FIRST)
            }
        );
        // Failures while a timer is pending (a new connection's event) arm nothing.
        let (same, what) = Retry::failed(Some(r));
        assert_eq!((same, what), (r, OnFailure::default()));
        let mut delays = Vec::new();
        for _ in 0..8 {
            r.armed = false; // the timer fired
            let (next, what) = Retry::failed(Some(r));
            assert!(!what.report, "reported once per episode");
            delays.push(what.arm.unwrap());
            r = next;
        }
        assert_eq!(delays[0], RETRY_FIRST * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), RETRY_MAX);
    }
}
