//! Node-wide and per-spawn configuration.

use std::time::Duration;

use super::Pid;

/// Node-wide settings. Every field has a documented default and a chainable setter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sockloop::supervise::{Node, NodeConfig};
///
/// let node = Node::with_config(
///     NodeConfig::default()
///         .mailbox_capacity(1 << 10)
///         .message_budget(Some(Duration::from_millis(50))),
/// );
/// # drop(node);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub(crate) mailbox_capacity: usize,
    pub(crate) message_budget: Option<Duration>,
    pub(crate) stack_size: Option<usize>,
    pub(crate) thread_name: String,
    pub(crate) quiet_panics: bool,
}

impl Default for NodeConfig {
    /// Mailboxes of up to `4 << 10` messages, no per-message budget, the standard
    /// library's thread stack size (2 MiB, or `RUST_MIN_STACK`), threads named
    /// `sl-proc-<pid>`, panics printed by Rust's panic hook as usual.
    fn default() -> Self {
        NodeConfig {
            mailbox_capacity: 4 << 10,
            message_budget: None,
            stack_size: None,
            thread_name: "sl-proc".to_owned(),
            quiet_panics: false,
        }
    }
}

impl NodeConfig {
    /// Capacity of each process's user mailbox (default `4 << 10`; at least 1). A full
    /// mailbox makes `send` fail with `MailboxFull`; system signals are not counted. The
    /// memory is taken as messages arrive (blocks of 31), not reserved up front.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n.max(1);
        self
    }

    /// Per-message time budget (default `None`): when set, every user message is timed and
    /// each one that takes longer is reported once as `SystemEvent::OverBudget`. Timing
    /// costs two clock reads per message.
    pub fn message_budget(mut self, budget: Option<Duration>) -> Self {
        self.message_budget = budget;
        self
    }

    /// Stack size of process threads in bytes (default `None`: the standard library's).
    pub fn stack_size(mut self, bytes: Option<usize>) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Keeps Rust's default panic message (`thread '…' panicked at …`) of this node's
    /// process threads off stderr (default `false`). A caught panic is still reported: as
    /// the [`ExitReason::Panic`](super::ExitReason::Panic) of a `SystemEvent::Exited` to
    /// the node's hook, and through the `log` crate. Panics on other threads are printed as
    /// before: the first quiet node installs, once per program, a panic hook that stays
    /// silent on quiet process threads and calls the previous hook everywhere else.
    pub fn quiet_panics(mut self, quiet: bool) -> Self {
        self.quiet_panics = quiet;
        self
    }

    /// Prefix of process thread names, which are `<prefix>-<pid>` (default `sl-proc`).
    /// Linux shows the first 15 bytes (`/proc/<pid>/task/*/comm`, `top -H`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }
}

/// Options of one spawn (all optional; the default is an unnamed, unlinked process with
/// the node's mailbox capacity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    pub(crate) name: Option<String>,
    pub(crate) link: Option<Pid>,
    pub(crate) mailbox_capacity: Option<usize>,
    /// Never time this process's messages (supervisors: their messages wait for children).
    pub(crate) no_budget: bool,
}

impl SpawnOptions {
    /// Registers the process under `name` (the spawn fails if the name is taken).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets or clears the registered name.
    pub fn name_opt(mut self, name: Option<String>) -> Self {
        self.name = name;
        self
    }

    /// Links the new process to `pid` before its `init` runs.
    pub fn link(mut self, pid: Pid) -> Self {
        self.link = Some(pid);
        self
    }

    /// Overrides the node's mailbox capacity for this process (at least 1).
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = Some(n.max(1));
        self
    }
}
