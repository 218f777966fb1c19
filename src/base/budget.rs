//! The runtime's memory budget: every byte any connection holds, counted on one path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The default [`RuntimeBuilder::memory_budget`](crate::RuntimeBuilder::memory_budget): 1 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// Bytes held by every connection of a runtime (output queues, handler jobs waiting, kept
/// input and partial messages) against one limit.
///
/// - At three quarters of the limit new WebSocket upgrades are refused (HTTP 503), so the
///   connections already open keep the rest.
/// - At the limit new connections are refused at accept, the pollers stop reading from
///   connections (TCP pushes back on their peers) until it falls to seven eighths, and
///   message sends are refused (`Dropped`, counted) — byte streams keep their
///   per-connection backpressure bound instead, never losing bytes from their middle.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
    refused_upgrades: AtomicU64,
    refused_connections: AtomicU64,
    paused_reads: AtomicU64,
    refused_sends: AtomicU64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(usize::MAX)
    }
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            refused_upgrades: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            paused_reads: AtomicU64::new(0),
            refused_sends: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes held right now.
    #[inline]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// At or past the limit: stop reading, refuse connections and message sends.
    #[inline]
    pub(crate) fn full(&self) -> bool {
        self.used() >= self.limit
    }

    /// Below seven eighths of the limit again: reading may resume.
    #[inline]
    pub(crate) fn relieved(&self) -> bool {
        self.used() <= self.limit - self.limit / 8
    }

    /// At or past three quarters: refuse new upgrades (leave the rest to open connections).
    #[inline]
    pub(crate) fn tight(&self) -> bool {
        self.used() >= self.limit - self.limit / 4
    }

    pub(crate) fn refused_upgrade(&self) {
        self.refused_upgrades.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused_connection(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn paused_read(&self) {
        self.paused_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused_send(&self) {
        self.refused_sends.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub(crate) fn stats(&self) -> BudgetStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BudgetStats {
            limit: self.limit,
            used: self.used(),
            refused_upgrades: g(&self.refused_upgrades),
            refused_connections: g(&self.refused_connections),
            paused_reads: g(&self.paused_reads),
            refused_sends: g(&self.refused_sends),
        }
    }
}

/// A snapshot of a runtime's memory budget ([`Runtime::budget`](crate::Runtime::budget)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStats {
    /// The limit in bytes ([`RuntimeBuilder::memory_budget`](crate::RuntimeBuilder::memory_budget)).
    pub limit: usize,
    /// Bytes held right now by all connections: output queues (application messages, HTTP
    /// responses, control frames, TLS records), handler jobs waiting, kept input and
    /// partial WebSocket messages.
    pub used: usize,
    /// WebSocket upgrades answered 503 because the budget was at three quarters.
    pub refused_upgrades: u64,
    /// Connections closed at accept because the budget was full.
    pub refused_connections: u64,
    /// Times a poller stopped reading a connection because the budget was full.
    pub paused_reads: u64,
    /// Message sends refused (`Dropped`) because the budget was full.
    pub refused_sends: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let b = Budget::new(800);
        assert!(!b.tight() && !b.full() && b.relieved());
        b.add(600);
        assert!(b.tight() && !b.full() && b.relieved());
        b.add(200);
        assert!(b.full() && !b.relieved());
        b.sub(100);
        assert!(!b.full() && b.relieved());
        let unlimited = Budget::default();
        unlimited.add(usize::MAX / 2);
        assert!(!unlimited.full() && !unlimited.tight());
    }
}
