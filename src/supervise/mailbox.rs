//! Mailboxes: the typed, cloneable sender of a process and the internal signal channel.
//!
//! A process reads two channels: a **bounded** crossbeam channel of user messages `M` and an
//! **unbounded** channel of system [`Signal`]s (exit signals, DOWN notifications, shutdown).
//! Signals never block a sender and never compete with user messages for capacity, and the
//! node can deliver them without knowing `M`. Signals are taken before user messages;
//! there is no ordering between the two channels.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};

use super::node::NodeInner;
use super::{Down, ExitReason, Pid, SendError, SystemEvent};

/// A system message, delivered to a process outside its user mailbox.
#[derive(Debug)]
pub(crate) enum Signal {
    /// A linked process exited.
    Exit { from: Pid, reason: ExitReason },
    /// A monitored process exited.
    Down(Down),
    /// Stop now (supervisor shutdown or `Node::stop`).
    Shutdown,
}

/// State shared by every sender of one process and the process itself.
pub(crate) struct ProcShared {
    pub(crate) pid: Pid,
    /// Set when the mailbox no longer accepts messages (stopping, exited, detached).
    pub(crate) closed: AtomicBool,
    /// Set when the process was asked to stop; `Context::shutting_down` reads it.
    pub(crate) stopping: AtomicBool,
    pub(crate) node: Weak<NodeInner>,
}

impl ProcShared {
    pub(crate) fn new(pid: Pid, node: Weak<NodeInner>) -> Self {
        ProcShared {
            pid,
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            node,
        }
    }

    fn report_full(&self) {
        if let Some(node) = self.node.upgrade() {
            node.emit(&SystemEvent::MailboxFull { pid: self.pid });
        }
    }
}

/// A cloneable `Send + Sync` sender to one process's mailbox, typed by its message `M`.
///
/// The mailbox is a bounded channel (capacity from [`NodeConfig::mailbox_capacity`] or
/// [`SpawnOptions::mailbox_capacity`]). On overflow [`send`](Self::send) does not block: it
/// returns [`SendError::MailboxFull`] with the message and reports
/// [`SystemEvent::MailboxFull`]; [`send_timeout`](Self::send_timeout) waits for room.
/// A `ProcessRef` names one incarnation: after a restart, look the new one up by name.
///
/// # Examples
///
/// ```
/// use sockloop::supervise::{from_fn, Control, Node, SendError, SpawnOptions};
///
/// let node = Node::new();
/// let (gate_tx, gate) = crossbeam_channel::bounded::<()>(0);
/// let (busy_tx, busy) = crossbeam_channel::bounded(1);
/// let slow = node
///     .spawn_with(
///         from_fn(move |_ctx, _n: u32| {
///             busy_tx.send(())?;
///             gate.recv()?;
///             Ok(Control::Continue)
///         }),
///         SpawnOptions::default().mailbox_capacity(1),
///     )
///     .unwrap();
/// slow.send(1).unwrap(); // taken: the handler waits at the gate
/// busy.recv().unwrap();
/// slow.send(2).unwrap(); // queued: the mailbox is now full
/// match slow.send(3) {
///     Err(SendError::MailboxFull(m)) => assert_eq!(m, 3), // handed back
///     other => panic!("{other:?}"),
/// }
/// drop(gate_tx); // the handler's gate closes: it returns `Err` and the process exits
/// ```
///
/// [`NodeConfig::mailbox_capacity`]: super::NodeConfig::mailbox_capacity
/// [`SpawnOptions::mailbox_capacity`]: super::SpawnOptions::mailbox_capacity
pub struct ProcessRef<M> {
    tx: Sender<M>,
    shared: Arc<ProcShared>,
}

impl<M> Clone for ProcessRef<M> {
    fn clone(&self) -> Self {
        ProcessRef {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M> fmt::Debug for ProcessRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessRef({})", self.shared.pid)
    }
}

impl<M: Send> ProcessRef<M> {
    pub(crate) fn new(tx: Sender<M>, shared: Arc<ProcShared>) -> Self {
        ProcessRef { tx, shared }
    }

    pub(crate) fn shared(&self) -> &Arc<ProcShared> {
        &self.shared
    }

    /// The process's identifier.
    pub fn pid(&self) -> Pid {
        self.shared.pid
    }

    /// `true` while the process accepts messages (it may still exit at any moment).
    pub fn is_alive(&self) -> bool {
        !self.shared.closed.load(Ordering::Relaxed)
    }

    /// Queues `msg` without blocking.
    ///
    /// # Errors
    ///
    /// [`SendError::MailboxFull`] if the mailbox is full (also reported to the hook),
    /// [`SendError::NoProcess`] if the process exited, is stopping or was detached. Either
    /// way the message is handed back.
    pub fn send(&self, msg: M) -> Result<(), SendError<M>> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(SendError::NoProcess(msg));
        }
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m)) => {
                self.shared.report_full();
                Err(SendError::MailboxFull(m))
            }
            Err(TrySendError::Disconnected(m)) => Err(SendError::NoProcess(m)),
        }
    }

    /// Queues `msg`, waiting up to `timeout` for room if the mailbox is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] if the mailbox stayed full (reported to the hook as
    /// `MailboxFull`), [`SendError::NoProcess`] if the process is gone.
    pub fn send_timeout(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        let msg = match self.send_quiet(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(m)) => m,
            Err(TrySendError::Disconnected(m)) => return Err(SendError::NoProcess(m)),
        };
        match self.tx.send_timeout(msg, timeout) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(m)) => {
                self.shared.report_full();
                Err(SendError::Timeout(m))
            }
            Err(SendTimeoutError::Disconnected(m)) => Err(SendError::NoProcess(m)),
        }
    }

    fn send_quiet(&self, msg: M) -> Result<(), TrySendError<M>> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(TrySendError::Disconnected(msg));
        }
        self.tx.try_send(msg)
    }
}
