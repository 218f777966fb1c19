//! Per-poller timers: a min-heap of deadlines with lazy cancellation.
//!
//! Entries are never removed early: when one fires, the owner checks whether it still
//! applies (the connection's generation and its current deadline). The nearest deadline
//! sets the poll timeout.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Any deadline of a connection (lifecycle or driver): it re-checks them all.
    Conn,
    /// A listener's next accept after a failure (out of descriptors or memory): waiting
    /// connections get no new readiness event, so the listener tries again on its own.
    Listener,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub(crate) at: Instant,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) kind: TimerKind,
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Instant, slot: u32, gen: u32, kind: TimerKind) {
        self.heap.push(Reverse(Timer {
            at,
            slot,
            gen,
            kind,
        }));
    }

    /// Time until the nearest deadline, if any (zero when one is due).
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse(t)| t.at.saturating_duration_since(now))
    }

    /// Pops one due timer.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_first() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(now + Duration::from_secs(5), 1, 0, TimerKind::Conn);
        t.add(now + Duration::from_secs(1), 2, 0, TimerKind::Conn);
        assert_eq!(t.timeout(now), Some(Duration::from_secs(1)));
        assert!(t.pop_due(now).is_none());
        let later = now + Duration::from_secs(6);
        assert_eq!(t.pop_due(later).unwrap().slot, 2);
        assert_eq!(t.pop_due(later).unwrap().slot, 1);
        assert!(t.timeout(later).is_none());
    }

    #[test]
    fn kinds_share_one_heap_in_deadline_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(now + Duration::from_millis(50), 3, 1, TimerKind::Listener);
        t.add(now + Duration::from_millis(10), 4, 1, TimerKind::Conn);
        let later = now + Duration::from_secs(1);
        assert_eq!(t.pop_due(later).unwrap().kind, TimerKind::Conn);
        let l = t.pop_due(later).unwrap();
        assert_eq!((l.slot, l.gen, l.kind), (3, 1, TimerKind::Listener));
    }
}
