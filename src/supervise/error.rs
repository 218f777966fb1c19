//! Errors of sends, spawns, name registration and supervisor calls.

use std::fmt;

use super::ExitReason;

/// A message could not be delivered; the message is handed back.
#[non_exhaustive]
pub enum SendError<M> {
    /// The bounded mailbox is full (the receiver is slower than its senders). Nothing was
    /// queued; retry later, drop, or use [`send_timeout`](super::ProcessRef::send_timeout).
    /// A [`SystemEvent::MailboxFull`](super::SystemEvent::MailboxFull) was reported.
    MailboxFull(M),
    /// The mailbox stayed full for the whole timeout of a `send_timeout`.
    Timeout(M),
    /// The process is dead, stopping, detached, or the name is not registered.
    NoProcess(M),
    /// The process exists but its mailbox takes another message type.
    WrongType(M),
}

impl<M> SendError<M> {
    /// The undelivered message.
    pub fn into_inner(self) -> M {
        match self {
            SendError::MailboxFull(m)
            | SendError::Timeout(m)
            | SendError::NoProcess(m)
            | SendError::WrongType(m) => m,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            SendError::MailboxFull(_) => "mailbox full",
            SendError::Timeout(_) => "mailbox full until the timeout",
            SendError::NoProcess(_) => "no such process",
            SendError::WrongType(_) => "mailbox takes another message type",
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({})", self.label())
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A process could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// The requested registered name is already taken; nothing was started.
    NameTaken(String),
    /// `init` returned `Err` or panicked; the process exited with this reason.
    Init(ExitReason),
    /// The operating system refused to create the thread (the error's text).
    Thread(String),
    /// A supervisor spec cannot work (the reason's text): a zero intensity period or two
    /// children with one id. Nothing was started.
    InvalidSpec(String),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NameTaken(n) => write!(f, "name {n:?} is already registered"),
            SpawnError::Init(r) => write!(f, "init failed: {r}"),
            SpawnError::Thread(e) => write!(f, "cannot create thread: {e}"),
            SpawnError::InvalidSpec(e) => write!(f, "invalid supervisor spec: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// A name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another process holds the name.
    NameTaken(String),
    /// The process already has a name (one name per process).
    AlreadyNamed(String),
    /// The process is not alive.
    NoProcess,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::NameTaken(n) => write!(f, "name {n:?} is already registered"),
            RegisterError::AlreadyNamed(n) => write!(f, "process is already named {n:?}"),
            RegisterError::NoProcess => f.write_str("no such process"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// A supervisor call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The supervisor is not running (or exited during the call).
    NoProcess,
    /// A child with this id already exists; nothing was started.
    AlreadyExists(String),
    /// No child has this id.
    NotFound(String),
    /// The child is running; terminate it first.
    Running(String),
    /// The child could not be started; its spec was kept (for `start_child`: not added).
    Start(SpawnError),
    /// The supervisor did not answer within the call timeout
    /// ([`SupervisorRef::with_timeout`](super::SupervisorRef::with_timeout)); the request
    /// may still be carried out.
    Timeout,
    /// The call was made where the supervisor can never answer it: on its own thread (a
    /// node hook or a factory it runs), from a child's `init`, or from a child it is
    /// stopping. Nothing was asked.
    Deadlock,
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::NoProcess => f.write_str("supervisor is not running"),
            SupervisorError::AlreadyExists(id) => write!(f, "child {id:?} already exists"),
            SupervisorError::NotFound(id) => write!(f, "no child {id:?}"),
            SupervisorError::Running(id) => write!(f, "child {id:?} is running"),
            SupervisorError::Start(e) => write!(f, "child failed to start: {e}"),
            SupervisorError::Timeout => f.write_str("supervisor call timed out"),
            SupervisorError::Deadlock => f.write_str("supervisor call would deadlock"),
        }
    }
}

impl std::error::Error for SupervisorError {}
