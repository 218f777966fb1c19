//! The stream connection lifecycle, sans-IO: which state a connection is in between accept
//! and removal, what each event moves it to, and when it next needs a look. The reactor
//! feeds it events with the time and carries out the [`Action`]s; nothing here touches a
//! socket.
//!
//! ```text
//! Handshake ──handshake done──► Open ──close──► Flushing ──flushed──► Lingering ──EOF──► gone
//!     │                          │                 │  (EOF seen: gone)      │
//!     └─deadline, EOF: gone      └─EOF: ask driver └─deadline: gone         └─deadline: gone
//! ```

use std::time::{Duration, Instant};

use crate::base::{deadline, CloseReason, Stamp};

/// How long a connection whose write side is shut waits for the peer's end of stream.
pub const LINGER: Duration = Duration::from_secs(1);

/// Where a connection is in its life (16 bytes: what only a closing connection needs is
/// boxed). Deadlines are kept as 8-byte stamps; `eof` says the peer's end of stream was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The TLS handshake (`None`: no deadline).
    Handshake { deadline: Option<Stamp> },
    /// The driver has the connection.
    Open { eof: bool },
    /// Flushing queued output before shutting the write side; dropped at the deadline.
    Flushing(Box<Closing>),
    /// The write side is shut; waiting for the peer's end of stream until the deadline
    /// (the box the flushing had, `eof` unused).
    Lingering(Box<Closing>),
    /// Removed (terminal).
    Gone(Box<CloseReason>),
}

/// A closing connection's reason and deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    reason: CloseReason,
    deadline: Option<Stamp>,
    eof: bool,
}

/// What the reactor must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond what it was doing.
    None,
    /// The connection just opened: hand it to the driver.
    Open,
    /// The peer finished sending on an open connection: ask the driver what to do.
    AskDriver,
    /// The graceful close began: stop input, send TLS close_notify, flush.
    StartClose,
    /// Output is flushed: shut the write side down, then read on for the peer's FIN.
    ShutWrite,
    /// Remove the connection now.
    Remove(CloseReason),
    /// The handshake timed out: report it, then remove the connection.
    TimedOut,
}

/// A connection's lifecycle machine.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: State,
}

fn stamp(t: Option<Instant>) -> Option<Stamp> {
    t.map(Stamp::of)
}

impl Lifecycle {
    /// A connection that starts with a TLS handshake bounded by `timeout` (`Duration::MAX`:
    /// none), or open at once.
    pub fn new(now: Instant, handshake: Option<Duration>) -> Self {
        let state = match handshake {
            Some(t) => State::Handshake {
                deadline: stamp(deadline(now, t)),
            },
            None => State::Open { eof: false },
        };
        Lifecycle { state }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the driver gets input (only while open).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether the socket is still read (until end of stream: while closing, input is read
    /// and discarded so that a close never turns into a reset that loses queued output).
    pub fn reads(&self) -> bool {
        match self.state {
            State::Handshake { .. } | State::Lingering(_) => true,
            State::Open { eof } => !eof,
            State::Flushing(ref c) => !c.eof,
            State::Gone(_) => false,
        }
    }

    /// Whether output may still be written (not after the write side was shut).
    pub fn writes(&self) -> bool {
        matches!(
            self.state,
            State::Handshake { .. } | State::Open { .. } | State::Flushing(_)
        )
    }

    /// Whether the graceful close has begun.
    pub fn closing(&self) -> bool {
        matches!(
            self.state,
            State::Flushing(_) | State::Lingering(_) | State::Gone(_)
        )
    }

    /// The lifecycle's own next deadline (the driver has its own while open).
    pub fn poll_at(&self) -> Option<Instant> {
        match &self.state {
            State::Handshake { deadline } => deadline.map(Stamp::at),
            State::Flushing(c) | State::Lingering(c) => c.deadline.map(Stamp::at),
            State::Open { .. } | State::Gone(_) => None,
        }
    }

    fn go(&mut self, next: State) {
        self.state = next;
    }

    fn remove(&mut self, reason: CloseReason) -> Action {
        self.go(State::Gone(Box::new(reason.clone())));
        Action::Remove(reason)
    }

    /// The TLS handshake completed.
    pub fn handshake_done(&mut self) -> Action {
        match self.state {
            State::Handshake { .. } => {
                self.go(State::Open { eof: false });
                Action::Open
            }
            _ => Action::None,
        }
    }

    /// The peer finished sending.
    pub fn eof(&mut self) -> Action {
        match &mut self.state {
            State::Handshake { .. } => self.remove(CloseReason::PeerClosed),
            State::Open { eof } => {
                *eof = true;
                Action::AskDriver
            }
            State::Flushing(c) => {
                c.eof = true;
                Action::None
            }
            State::Lingering(c) => {
                let r = c.reason.clone();
                self.remove(r)
            }
            State::Gone(_) => Action::None,
        }
    }

    /// A graceful close was asked for: flush within `timeout`, then shut down.
    #[cfg(test)]
    pub fn close(&mut self, now: Instant, reason: CloseReason, timeout: Duration) -> Action {
        self.close_by(reason, deadline(now, timeout))
    }

    /// A graceful close that must be flushed by `deadline` (`None`: no limit).
    pub fn close_by(&mut self, reason: CloseReason, by: Option<Instant>) -> Action {
        match self.state {
            State::Handshake { .. } => self.remove(reason),
            State::Open { eof } => {
                self.go(State::Flushing(Box::new(Closing {
                    reason,
                    deadline: stamp(by),
                    eof,
                })));
                Action::StartClose
            }
            _ => Action::None,
        }
    }

    /// The output queue is empty (and TLS has nothing to write).
    pub fn flushed(&mut self, now: Instant) -> Action {
        let State::Flushing(c) = &mut self.state else {
            return Action::None;
        };
        if c.eof {
            let r = c.reason.clone();
            return self.remove(r);
        }
        c.deadline = stamp(deadline(now, LINGER));
        // The same box goes on into lingering.
        if let State::Flushing(c) = std::mem::replace(&mut self.state, State::Open { eof: true }) {
            self.go(State::Lingering(c));
        }
        Action::ShutWrite
    }

    /// A timer fired at `now`.
    pub fn timer(&mut self, now: Instant) -> Action {
        let due = self.poll_at().is_some_and(|t| now >= t);
        if !due {
            return Action::None;
        }
        match &self.state {
            State::Handshake { .. } => {
                self.go(State::Gone(Box::new(CloseReason::HandshakeTimeout)));
                Action::TimedOut
            }
            State::Flushing(c) | State::Lingering(c) => {
                let r = c.reason.clone();
                self.remove(r)
            }
            State::Open { .. } | State::Gone(_) => Action::None,
        }
    }

    /// A fatal error: the connection goes at once.
    pub fn fail(&mut self, reason: CloseReason) -> Action {
        self.remove(reason)
    }

    /// The reason the connection is closing with, if it is.
    #[cfg(test)]
    pub fn reason(&self) -> Option<&CloseReason> {
        match &self.state {
            State::Flushing(c) | State::Lingering(c) => Some(&c.reason),
            State::Gone(reason) => Some(&**reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn open(now: Instant) -> Lifecycle {
        Lifecycle::new(now, None)
    }

    mod handshake {
        use super::*;

        #[test]
        fn completes_into_open() {
            let now = Instant::now();
            let mut l = Lifecycle::new(now, Some(SEC));
            assert!(!l.is_open() && l.reads() && l.writes());
            assert_eq!(l.poll_at(), Some(now + SEC));
            assert_eq!(l.handshake_done(), Action::Open);
            assert!(l.is_open());
            assert_eq!(std::mem::size_of::<Lifecycle>(), 16);
            assert_eq!(l.poll_at(), None);
            assert_eq!(l.handshake_done(), Action::None);
        }

        #[test]
        fn times_out_at_its_deadline_only() {
            let now = Instant::now();
            let mut l = Lifecycle::new(now, Some(SEC));
            assert_eq!(l.timer(now + SEC / 2), Action::None);
            assert_eq!(l.timer(now + SEC), Action::TimedOut);
            assert_eq!(
                l.state(),
                &State::Gone(Box::new(CloseReason::HandshakeTimeout))
            );
        }

        #[test]
        fn duration_max_is_no_deadline() {
            let now = Instant::now();
            let mut l = Lifecycle::new(now, Some(Duration::MAX));
            assert_eq!(l.poll_at(), None);
            assert_eq!(l.timer(now + 1000 * SEC), Action::None);
        }

        #[test]
        fn eof_or_close_removes() {
            let now = Instant::now();
            let mut l = Lifecycle::new(now, Some(SEC));
            assert_eq!(l.eof(), Action::Remove(CloseReason::PeerClosed));
            let mut l = Lifecycle::new(now, Some(SEC));
            assert_eq!(
                l.close(now, CloseReason::Shutdown, SEC),
                Action::Remove(CloseReason::Shutdown)
            );
        }
    }

    mod open {
        use super::*;

        #[test]
        fn eof_asks_the_driver_and_stops_reading() {
            let mut l = open(Instant::now());
            assert_eq!(l.eof(), Action::AskDriver);
            assert!(!l.reads() && l.writes() && l.is_open());
        }

        #[test]
        fn timers_are_the_drivers() {
            let now = Instant::now();
            let mut l = open(now);
            assert_eq!(l.timer(now + 1000 * SEC), Action::None);
            assert!(l.is_open());
        }

        #[test]
        fn close_starts_flushing_once() {
            let now = Instant::now();
            let mut l = open(now);
            assert_eq!(l.close(now, CloseReason::Local, SEC), Action::StartClose);
            assert!(l.closing() && !l.is_open() && l.writes() && l.reads());
            assert_eq!(l.poll_at(), Some(now + SEC));
            assert_eq!(l.close(now, CloseReason::Shutdown, SEC), Action::None);
            assert_eq!(l.reason(), Some(&CloseReason::Local));
        }
    }

    mod flushing {
        use super::*;

        fn flushing(now: Instant) -> Lifecycle {
            let mut l = open(now);
            let _ = l.close(now, CloseReason::Local, 5 * SEC);
            l
        }

        #[test]
        fn flushed_shuts_write_and_lingers() {
            let now = Instant::now();
            let mut l = flushing(now);
            assert_eq!(l.flushed(now + SEC), Action::ShutWrite);
            assert!(!l.writes() && l.reads());
            assert_eq!(l.poll_at(), Some(now + SEC + LINGER));
            assert_eq!(l.eof(), Action::Remove(CloseReason::Local));
        }

        #[test]
        fn flushed_after_eof_removes_at_once() {
            let now = Instant::now();
            let mut l = flushing(now);
            assert_eq!(l.eof(), Action::None);
            assert_eq!(l.flushed(now), Action::Remove(CloseReason::Local));
        }

        #[test]
        fn close_deadline_drops_what_is_left() {
            let now = Instant::now();
            let mut l = flushing(now);
            assert_eq!(l.timer(now + 4 * SEC), Action::None);
            assert_eq!(l.timer(now + 5 * SEC), Action::Remove(CloseReason::Local));
        }

        #[test]
        fn never_with_duration_max() {
            let now = Instant::now();
            let mut l = open(now);
            let _ = l.close(now, CloseReason::Local, Duration::MAX);
            assert_eq!(l.poll_at(), None);
            assert_eq!(l.timer(now + 1000 * SEC), Action::None);
            assert_eq!(l.flushed(now), Action::ShutWrite);
        }
    }

    mod lingering {
        use super::*;

        #[test]
        fn linger_deadline_removes() {
            let now = Instant::now();
            let mut l = open(now);
            let _ = l.close(now, CloseReason::IdleTimeout, SEC);
            let _ = l.flushed(now);
            assert_eq!(l.timer(now + LINGER / 2), Action::None);
            assert_eq!(
                l.timer(now + LINGER),
                Action::Remove(CloseReason::IdleTimeout)
            );
            assert!(!l.reads() && !l.writes());
        }

        #[test]
        fn fail_removes_from_any_state() {
            let now = Instant::now();
            for mut l in [Lifecycle::new(now, Some(SEC)), open(now)] {
                let r = CloseReason::Reset("x".into());
                assert_eq!(l.fail(r.clone()), Action::Remove(r));
            }
        }
    }
}
