//! Why a process exited, what a handler asks for next, and the DOWN notification.

use std::fmt;

use super::{MonitorRef, Pid};

/// The error type a handler may return; any `std::error::Error` converts with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every handler method returns: `Ok(Control)` to go on or stop, `Err` to exit with
/// [`ExitReason::Error`] (an abnormal exit).
pub type Handled = Result<Control, BoxError>;

/// What a handler asks the process to do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Keep running and take the next message.
    Continue,
    /// Exit with [`ExitReason::Normal`].
    Stop,
    /// Exit with the given reason.
    Exit(ExitReason),
}

/// Why a process exited.
///
/// Two notions of "abnormal" apply, as in Erlang/OTP:
/// - a link propagates every reason except [`Normal`](ExitReason::Normal)
///   ([`is_normal`](ExitReason::is_normal));
/// - a transient child is restarted on every reason except `Normal` and
///   [`Shutdown`](ExitReason::Shutdown) ([`is_abnormal`](ExitReason::is_abnormal)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// The handler returned [`Control::Stop`].
    Normal,
    /// The process was asked to stop (by its supervisor or [`Node::stop`](super::Node::stop)).
    Shutdown,
    /// A handler returned `Err`; the error's text.
    Error(String),
    /// A handler panicked; the panic message. The panic was caught and the thread ended
    /// cleanly.
    Panic(String),
    /// The process did not exist (a monitor or link to a dead `Pid`).
    NoProc,
    /// The process did not stop within its shutdown timeout: its thread was left running,
    /// disconnected from the node (mailbox closed, links and monitors fired).
    Detached,
    /// A supervisor exceeded its restart intensity and gave up (escalation to its parent).
    IntensityExceeded,
}

impl ExitReason {
    /// `true` only for [`ExitReason::Normal`]; every other reason travels along links.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }

    /// `true` for reasons that restart a transient child: all but `Normal` and `Shutdown`.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Error(e) => write!(f, "error: {e}"),
            ExitReason::Panic(m) => write!(f, "panic: {m}"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::Detached => f.write_str("detached"),
            ExitReason::IntensityExceeded => f.write_str("restart intensity exceeded"),
        }
    }
}

/// The one notification a monitor produces when its target exits (or did not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The monitor that fired.
    pub mref: MonitorRef,
    /// The monitored process.
    pub pid: Pid,
    /// Why it exited; [`ExitReason::NoProc`] if it was already dead when monitored.
    pub reason: ExitReason,
}
