//! Restart intensity: at most `max_restarts` restarts within a sliding `period`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many restarts a supervisor tolerates before it gives up and escalates.
///
/// More than `max_restarts` restarts within any `period` makes the supervisor stop its
/// children (reverse start order) and exit with
/// [`ExitReason::IntensityExceeded`](super::ExitReason::IntensityExceeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within `period` (default 3; 0 means the first restart escalates).
    pub max_restarts: u32,
    /// The sliding window (default 5 s).
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 3,
            period: Duration::from_secs(5),
        }
    }
}

/// The sliding window of recent restart times (pure; the caller passes the time in).
#[derive(Debug)]
pub(crate) struct RestartWindow {
    limit: Intensity,
    stamps: VecDeque<Instant>,
}

impl RestartWindow {
    pub(crate) fn new(limit: Intensity) -> Self {
        RestartWindow {
            limit,
            stamps: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; `false` if it exceeds the intensity (escalate).
    /// Keeps at most `max_restarts + 1` stamps.
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.stamps.front() {
            if now.saturating_duration_since(t) < self.limit.period {
                break;
            }
            self.stamps.pop_front();
        }
        self.stamps.push_back(now);
        let allowed = self.limit.max_restarts as usize;
        if self.stamps.len() > allowed + 1 {
            self.stamps.pop_front();
        }
        self.stamps.len() <= allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(max: u32, secs: u64) -> RestartWindow {
        RestartWindow::new(Intensity {
            max_restarts: max,
            period: Duration::from_secs(secs),
        })
    }

    #[test]
    fn allows_max_then_escalates() {
        let mut w = window(3, 5);
        let t = Instant::now();
        assert!(w.record(t));
        assert!(w.record(t + Duration::from_secs(1)));
        assert!(w.record(t + Duration::from_secs(2)));
        assert!(!w.record(t + Duration::from_secs(3)));
    }

    #[test]
    fn old_restarts_slide_out() {
        let mut w = window(2, 5);
        let t = Instant::now();
        assert!(w.record(t));
        assert!(w.record(t + Duration::from_secs(4)));
        // The first is 5 s old: out of the window.
        assert!(w.record(t + Duration::from_secs(5)));
        assert!(!w.record(t + Duration::from_secs(6)));
    }

    #[test]
    fn zero_means_first_restart_escalates() {
        let mut w = window(0, 5);
        assert!(!w.record(Instant::now()));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut w = window(2, 3600);
        let t = Instant::now();
        for i in 0..1000 {
            w.record(t + Duration::from_millis(i));
        }
        assert!(w.stamps.len() <= 3);
    }

    #[test]
    fn spaced_restarts_never_escalate() {
        let mut w = window(1, 1);
        let t = Instant::now();
        for i in 0..100 {
            assert!(w.record(t + Duration::from_secs(2 * i)));
        }
    }
}
