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

#[cfg(test)]
mod tests {
    use super::*;

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
