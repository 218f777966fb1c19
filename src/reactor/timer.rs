//! Per-poller timers: min-heaps of deadlines with lazy cancellation.
//!
//! Entries are never removed early: when one fires, the owner checks whether it still
//! applies (the connection's generation and its current deadline). The nearest deadline
//! sets the poll timeout. An entry is 16 bytes (an 8-byte [`Stamp`], slot, generation):
//! connections and listeners have a heap each, so no entry carries its kind.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::base::Stamp;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Any deadline of a connection (lifecycle or driver): it re-checks them all.
    Conn,
    /// A listener's next accept after a failure (out of descriptors or memory): waiting
    /// connections get no new readiness event, so the listener tries again on its own.
    Listener,
}

/// One deadline of the entry at (`slot`, `gen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub(crate) at: Stamp,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

#[derive(Default)]
pub(crate) struct Timers {
    conns: BinaryHeap<Reverse<Timer>>,
    listeners: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Instant, slot: u32, gen: u32, kind: TimerKind) {
        let t = Reverse(Timer {
            at: Stamp::of(at),
            slot,
            gen,
        });
        match kind {
            TimerKind::Conn => self.conns.push(t),
            TimerKind::Listener => self.listeners.push(t),
        }
    }

    /// The nearest entry of either heap.
    fn nearest(&self) -> Option<(TimerKind, Timer)> {
        let conn = self.conns.peek().map(|Reverse(t)| (TimerKind::Conn, *t));
        let listener = (self.listeners.peek()).map(|Reverse(t)| (TimerKind::Listener, *t));
        match (conn, listener) {
            (Some(c), Some(l)) => Some(if l.1.at < c.1.at { l } else { c }),
            (c, l) => c.or(l),
        }
    }

    /// Time until the nearest deadline, if any (zero when one is due).
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        (self.nearest()).map(|(_, t)| t.at.at().saturating_duration_since(now))
    }

    /// Entries pending (stale ones included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len() + self.listeners.len()
    }

    /// Pops one due timer.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerKind, Timer)> {
        let (kind, t) = self.nearest()?;
        if t.at > Stamp::of(now) {
            return None;
        }
        match kind {
            TimerKind::Conn => self.conns.pop(),
            TimerKind::Listener => self.listeners.pop(),
        };
        Some((kind, t))
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
        assert_eq!(t.pop_due(later).unwrap().1.slot, 2);
        assert_eq!(t.pop_due(later).unwrap().1.slot, 1);
        assert!(t.timeout(later).is_none());
    }

    #[test]
    fn kinds_pop_in_deadline_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(now + Duration::from_millis(50), 3, 1, TimerKind::Listener);
        t.add(now + Duration::from_millis(10), 4, 1, TimerKind::Conn);
        let later = now + Duration::from_secs(1);
        assert_eq!(t.pop_due(later).unwrap().0, TimerKind::Conn);
        let (kind, l) = t.pop_due(later).unwrap();
        assert_eq!((l.slot, l.gen, kind), (3, 1, TimerKind::Listener));
    }

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Reverse<Timer>>(), 16);
    }
}
