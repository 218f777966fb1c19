//! A point in time in 8 bytes, for state kept per connection (an `Instant` takes 16).

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds since a process-wide epoch (set a second before the first stamp was made),
/// never zero. Instants before the epoch saturate to its first nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Stamp(NonZeroU64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    })
}

impl Stamp {
    /// The stamp of `t`.
    pub(crate) fn of(t: Instant) -> Stamp {
        let nanos = t.saturating_duration_since(epoch()).as_nanos();
        let n = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        Stamp(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    /// Nanoseconds since the epoch (never zero).
    pub(crate) fn nanos(self) -> u64 {
        self.0.get()
    }

    /// The stamp `nanos` after the epoch (zero is taken as its first nanosecond).
    pub(crate) fn from_nanos(nanos: u64) -> Stamp {
        Stamp(NonZeroU64::new(nanos).unwrap_or(NonZeroU64::MIN))
    }

    /// The instant this stamp stands for.
    pub(crate) fn at(self) -> Instant {
        let d = Duration::from_nanos(self.0.get());
        epoch()
            .checked_add(d)
            .unwrap_or_else(|| epoch() + Duration::from_secs(1 << 32))
    }
}

/// A point in time in 4 bytes, for the start of something under way whose deadline is
/// checked while it lasts (a ping awaiting its pong, a message in progress): milliseconds
/// since the process epoch, rounded up or down, modulo 2^32, never zero. Read back against
/// `now`, it is the instant with those bits nearest `now` (to the millisecond, within 24
/// days); an older one comes back later than it was (a deadline counted from it fires late,
/// never early), so a holder clears it once the thing it stamps is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick(std::num::NonZeroU32);

impl Tick {
    /// The tick of `t` rounded up to the millisecond (a deadline from it is never early).
    pub(crate) fn after(t: Instant) -> Tick {
        let d = t.saturating_duration_since(epoch());
        Tick::of_millis(d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0))
    }

    /// The tick of `t` rounded down to the millisecond (anything after `t` is after it).
    pub(crate) fn before(t: Instant) -> Tick {
        Tick::of_millis(t.saturating_duration_since(epoch()).as_millis())
    }

    fn of_millis(ms: u128) -> Tick {
        // Modulo 2^32 by design; zero (once every 49 days) is taken a millisecond later.
        let bits = ms as u32;
        Tick(std::num::NonZeroU32::new(bits).unwrap_or(std::num::NonZeroU32::MIN))
    }

    /// The instant this tick stands for, read at `now`.
    pub(crate) fn at(self, now: Instant) -> Instant {
        let now_ms = now.saturating_duration_since(epoch()).as_millis() as u64;
        // How far back from `now`, as a signed 32-bit distance (ahead when negative).
        let back = (now_ms as u32).wrapping_sub(self.0.get()) as i32;
        let ms = (now_ms as i64 - i64::from(back)).max(0) as u64;
        epoch()
            .checked_add(Duration::from_millis(ms))
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_reads_back_to_the_millisecond_rounded_up_and_late_when_old() {
        let t = Instant::now() + Duration::from_micros(300);
        let ms = Duration::from_millis(1);
        for later in [0, 1, 5_000, 3_600_000, 20 * 86_400_000u64] {
            let now = t + Duration::from_millis(later);
            let up = Tick::after(t).at(now);
            assert!(up >= t && up - t < ms, "{later}: {up:?} {t:?}");
            let down = Tick::before(t).at(now);
            assert!(down <= t && t - down < ms, "{later}: {down:?} {t:?}");
        }
        // Older than the window: later than it was, never earlier.
        for later in [30 * 86_400_000u64, 50 * 86_400_000, 120 * 86_400_000] {
            let now = t + Duration::from_millis(later);
            assert!(Tick::after(t).at(now) >= t, "{later}");
        }
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 4);
    }

    #[test]
    fn round_trips_to_the_nanosecond_and_orders() {
        let a = Instant::now();
        let b = a + Duration::from_millis(1500);
        assert_eq!(Stamp::of(a).at(), a);
        assert_eq!(Stamp::of(b).at(), b);
        assert!(Stamp::of(a) < Stamp::of(b));
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }
}
