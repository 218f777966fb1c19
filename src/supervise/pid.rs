//! Process identifiers and monitor references.

use std::fmt;

/// A process identifier: cheap to copy, unique within its [`Node`](super::Node) and never
/// reused (a 64-bit counter), so a stale `Pid` can only ever name a dead process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(u64);

impl Pid {
    pub(crate) fn new(n: u64) -> Self {
        Pid(n)
    }

    /// The raw number, for logs and metrics labels.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

/// Identifies one monitor, as returned by [`Context::monitor`](super::Context::monitor) and
/// carried by the [`Down`](super::Down) it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonitorRef(u64);

impl MonitorRef {
    pub(crate) fn new(n: u64) -> Self {
        MonitorRef(n)
    }
}

impl fmt::Display for MonitorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#mon{}", self.0)
    }
}
