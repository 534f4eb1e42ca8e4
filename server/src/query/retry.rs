//! When and how often the executor retries a command the store did not
//! record: pure rules, so they are tested without a failing store.

use std::time::Duration;

use crate::error::ErrorKind;

/// The first wait after a failed attempt.
const FIRST: Duration = Duration::from_millis(50);
/// The longest wait between attempts.
const MOST: Duration = Duration::from_secs(5);

/// Whether a refusal of this kind may pass by itself: the store failed
/// (500, 503) or the session kept moving (409). Anything else is the
/// domain's answer and final.
pub fn is_transient(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::Conflict
    )
}

/// The wait before attempt `failed + 1`: doubling from 50 ms, at most 5 s.
pub fn backoff(failed: u32) -> Duration {
    FIRST.saturating_mul(1u32 << failed.min(16)).min(MOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_and_conflicts_are_retried_domain_refusals_are_not() {
        assert!(is_transient(ErrorKind::Internal));
        assert!(is_transient(ErrorKind::Unavailable));
        assert!(is_transient(ErrorKind::Conflict));
        assert!(!is_transient(ErrorKind::Unprocessable));
        assert!(!is_transient(ErrorKind::Forbidden));
        assert!(!is_transient(ErrorKind::BadRequest));
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(7), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }
}
