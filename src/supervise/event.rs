//! System events for the node-wide monitor hook (metrics, logs).

use std::sync::Arc;
use std::time::Duration;

use super::{ExitReason, Pid};

/// Something the node or a supervisor did, reported to the hook set with
/// [`Node::set_hook`](super::Node::set_hook) and logged through the `log` crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemEvent {
    /// A process finished `init` and takes messages.
    Started {
        /// The new process.
        pid: Pid,
        /// Its registered name, if any.
        name: Option<String>,
    },
    /// A process exited (reported once per process, including detached ones).
    Exited {
        /// The process.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A supervisor started a fresh instance of a child.
    Restarted {
        /// The supervisor.
        supervisor: Pid,
        /// The child's spec id.
        child: String,
        /// The instance that exited or was stopped.
        old: Pid,
        /// The new instance.
        new: Pid,
    },
    /// A supervisor exceeded its restart intensity: it stopped its children and exits with
    /// [`ExitReason::IntensityExceeded`].
    SupervisorEscalated {
        /// The supervisor.
        supervisor: Pid,
        /// Its configured maximum restarts...
        max_restarts: u32,
        /// ...within this period.
        period: Duration,
    },
    /// A send found the mailbox full (reported per failed send).
    MailboxFull {
        /// The receiver.
        pid: Pid,
    },
    /// One message took longer than the node's per-message budget (reported once per
    /// overrunning message, after it was handled).
    OverBudget {
        /// The slow process.
        pid: Pid,
        /// How long the message took.
        elapsed: Duration,
        /// The configured budget.
        budget: Duration,
    },
    /// A child did not stop within its shutdown timeout and was detached.
    ChildDetached {
        /// The supervisor.
        supervisor: Pid,
        /// The child's spec id.
        child: String,
        /// The detached instance (its thread may still be running).
        pid: Pid,
    },
}

/// The hook's shape.
pub(crate) type Hook = Arc<dyn Fn(&SystemEvent) + Send + Sync>;

/// Logs an event at a level that matches its gravity.
pub(crate) fn log_event(e: &SystemEvent) {
    match e {
        SystemEvent::Started { .. } | SystemEvent::MailboxFull { .. } => {
            log::debug!("supervise: {e:?}")
        }
        SystemEvent::Exited { reason, .. } if !reason.is_abnormal() => {
            log::debug!("supervise: {e:?}")
        }
        SystemEvent::Restarted { .. } => log::info!("supervise: {e:?}"),
        _ => log::warn!("supervise: {e:?}"),
    }
}
