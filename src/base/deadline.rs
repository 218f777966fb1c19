//! Saturating deadlines: `now + timeout` that never panics or wraps. A timeout too large to
//! represent (`Duration::MAX`, say) means "never".

use std::time::{Duration, Instant};

/// `now + d`, or `None` ("never") when the sum is not representable.
///
/// # Examples
/// ```
/// use std::time::{Duration, Instant};
/// let now = Instant::now();
/// assert_eq!(sockloop::base::deadline(now, Duration::MAX), None);
/// assert!(sockloop::base::deadline(now, Duration::from_secs(1)).is_some());
/// ```
pub fn deadline(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// `now + d`, saturating about a century ahead: for waits that need an `Instant` (a
/// blocking client's deadline), where "never" cannot be `None`.
pub fn saturating(now: Instant, d: Duration) -> Instant {
    deadline(now, d).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// `now + d` for an optional timeout (`None` or unrepresentable: never).
pub fn deadline_opt(now: Instant, d: Option<Duration>) -> Option<Instant> {
    d.and_then(|d| deadline(now, d))
}

/// The earlier of two optional deadlines (`None` is "never").
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Whether `d` has elapsed between `since` and `now` (never for an unrepresentable `d`).
pub fn elapsed(since: Instant, now: Instant, d: Duration) -> bool {
    deadline(since, d).is_some_and(|t| now >= t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_to_never() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), None);
        assert_eq!(deadline_opt(now, Some(Duration::MAX)), None);
        assert_eq!(deadline_opt(now, None), None);
        assert!(!elapsed(
            now,
            now + Duration::from_secs(3600),
            Duration::MAX
        ));
        assert!(elapsed(
            now,
            now + Duration::from_secs(2),
            Duration::from_secs(1)
        ));
    }

    #[test]
    fn earliest_ignores_never() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(earliest(Some(later), None), Some(later));
        assert_eq!(earliest(None, Some(now)), Some(now));
        assert_eq!(earliest(Some(later), Some(now)), Some(now));
        assert_eq!(earliest(None, None), None);
    }
}
