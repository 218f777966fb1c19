//! Shared helpers for the integration tests.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use sockloop::{Addr, ConnId, ConnState, Error, Lifecycle, Observer};

/// Generous wait used with `recv_timeout`: never a sleep that hopes.
pub const WAIT: Duration = Duration::from_secs(10);

/// An observer that forwards everything to channels.
#[derive(Clone)]
pub struct Recorder {
    pub states: Sender<(ConnId, ConnState)>,
    pub errors: Sender<String>,
    pub lifecycle: Sender<String>,
}

pub struct Records {
    pub states: Receiver<(ConnId, ConnState)>,
    pub errors: Receiver<String>,
    pub lifecycle: Receiver<String>,
}

pub fn recorder() -> (Recorder, Records) {
    let (a, b) = crossbeam_channel::unbounded();
    let (c, d) = crossbeam_channel::unbounded();
    let (e, f) = crossbeam_channel::unbounded();
    (
        Recorder {
            states: a,
            errors: c,
            lifecycle: e,
        },
        Records {
            states: b,
            errors: d,
            lifecycle: f,
        },
    )
}

impl Observer for Recorder {
    fn on_error(&self, _conn: Option<ConnId>, error: &Error) {
        let _ = self.errors.send(error.to_string());
    }
    fn on_conn_state(&self, conn: ConnId, _peer: &Addr, state: &ConnState) {
        let _ = self.states.send((conn, state.clone()));
    }
    fn on_lifecycle(&self, step: &Lifecycle) {
        let _ = self.lifecycle.send(format!("{step:?}"));
    }
}

impl Records {
    /// Waits for a `Closed` state and returns its reason.
    pub fn next_closed(&self) -> sockloop::CloseReason {
        loop {
            let (_, s) = self.states.recv_timeout(WAIT).expect("a closed state");
            if let ConnState::Closed(r) = s {
                return r;
            }
        }
    }
}

/// A temp dir that lives as long as the returned guard.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}
