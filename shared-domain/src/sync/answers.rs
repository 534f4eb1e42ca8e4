//! What the sender does with an answer, by HTTP status: one table for the
//! answers to single commands inside a batch, one for errors of the batch
//! request as a whole. The shell classifies, never decides.
//!
//! | status                          | one command in a batch | the whole batch              |
//! |---------------------------------|------------------------|------------------------------|
//! | 2xx                             | accepted               | (answers inside)             |
//! | 409                             | catch up and rebase    | back off, retry              |
//! | 400, 403, 404, 413, 422         | reject that command    | 413: split; others: back off |
//! | 401, 408, 429, 5xx, other, none | keep, retry later      | back off, retry              |
//!
//! A batch-level error never rejects a command: the request may have been
//! refused by a proxy, an older server or a body limit, not by the
//! authority's log. Only a 413 for a batch of one command rejects it (that
//! command alone is larger than the server takes).

/// What to do with one command's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandVerdict {
    /// Applied (or already applied): take its events.
    Accepted,
    /// The authority's log refuses it: report it, once.
    Reject,
    /// Decided on an old base: fetch what is missing and rebase.
    CatchUp,
    /// Not decided: keep it and send it again later.
    Retry,
}

/// The verdict for the answer to one command, by status.
pub fn command_verdict(status: u16) -> CommandVerdict {
    match status {
        200..=299 => CommandVerdict::Accepted,
        409 => CommandVerdict::CatchUp,
        400 | 403 | 404 | 413 | 422 => CommandVerdict::Reject,
        // 401, 408, 429, 5xx and anything unknown: the command was not
        // decided by the authority's log, so it must not be lost.
        _ => CommandVerdict::Retry,
    }
}

/// What to do when the batch request as a whole failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchVerdict {
    /// Too large: send only the first `commands` of it, then the rest.
    Split { commands: usize },
    /// A batch of one command is too large: that command is rejected (413).
    RejectSingle,
    /// Wait this long, then send again.
    BackOff { delay_ms: u64 },
    /// The seeded mutant that rejects a whole batch (tests only).
    #[cfg(test)]
    RejectAll,
}

/// The shortest and longest backoff.
pub const BACKOFF_MIN_MS: u64 = 250;
pub const BACKOFF_MAX_MS: u64 = 15_000;
/// A `Retry-After` longer than this is shortened: pending work should not
/// wait hours on a misconfigured proxy.
pub const RETRY_AFTER_MAX_MS: u64 = 300_000;

/// Exponential backoff with "equal jitter": attempt 0 waits between 125 and
/// 250 ms, each further attempt doubles that, up to 15 s. `jitter` is a
/// random number in `[0, 1)` from the shell (the core draws none).
pub fn backoff_ms(attempt: u32, jitter: f64) -> u64 {
    let ceiling = BACKOFF_MIN_MS
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_MAX_MS);
    let half = ceiling / 2;
    half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64
}

/// The verdict for a batch request that failed as a whole with `status`
/// (`None`: no answer at all), on its `attempt`-th consecutive failure.
pub fn batch_verdict(
    status: Option<u16>,
    commands: usize,
    attempt: u32,
    retry_after_ms: Option<u64>,
    jitter: f64,
) -> BatchVerdict {
    #[cfg(test)]
    if super::active(super::Mutant::BatchErrorRejectsAll)
        && status.is_some_and(|s| (400..500).contains(&s))
    {
        return BatchVerdict::RejectAll;
    }
    if status == Some(413) {
        return if commands > 1 {
            BatchVerdict::Split {
                commands: commands / 2,
            }
        } else {
            BatchVerdict::RejectSingle
        };
    }
    let delay_ms =
        backoff_ms(attempt, jitter).max(retry_after_ms.unwrap_or(0).min(RETRY_AFTER_MAX_MS));
    BatchVerdict::BackOff { delay_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_answers_follow_the_table() {
        assert_eq!(command_verdict(200), CommandVerdict::Accepted);
        assert_eq!(command_verdict(299), CommandVerdict::Accepted);
        assert_eq!(command_verdict(409), CommandVerdict::CatchUp);
        for status in [400, 403, 404, 413, 422] {
            assert_eq!(command_verdict(status), CommandVerdict::Reject, "{status}");
        }
        for status in [401, 405, 408, 410, 429, 500, 502, 503, 504, 302, 100] {
            assert_eq!(command_verdict(status), CommandVerdict::Retry, "{status}");
        }
    }

    #[test]
    fn a_batch_error_never_rejects_more_than_a_single_oversized_command() {
        assert_eq!(
            batch_verdict(Some(413), 150, 0, None, 0.5),
            BatchVerdict::Split { commands: 75 }
        );
        assert_eq!(
            batch_verdict(Some(413), 2, 0, None, 0.5),
            BatchVerdict::Split { commands: 1 }
        );
        assert_eq!(
            batch_verdict(Some(413), 1, 0, None, 0.5),
            BatchVerdict::RejectSingle
        );
        for status in [
            Some(400),
            Some(401),
            Some(404),
            Some(408),
            Some(422),
            Some(429),
            Some(500),
            None,
        ] {
            assert!(
                matches!(
                    batch_verdict(status, 150, 0, None, 0.5),
                    BatchVerdict::BackOff { .. }
                ),
                "{status:?}"
            );
        }
    }

    #[test]
    fn backoff_grows_with_jitter_to_a_ceiling() {
        assert_eq!(backoff_ms(0, 0.0), 125);
        assert_eq!(backoff_ms(0, 0.999_999), 249);
        assert_eq!(backoff_ms(1, 0.0), 250);
        assert_eq!(backoff_ms(3, 1.0), 2_000);
        assert_eq!(backoff_ms(40, 0.0), BACKOFF_MAX_MS / 2);
        assert_eq!(backoff_ms(40, 1.0), BACKOFF_MAX_MS);
        assert_eq!(backoff_ms(2, 7.0), 1_000, "jitter is clamped");
    }

    #[test]
    fn retry_after_is_honoured_within_a_ceiling() {
        assert_eq!(
            batch_verdict(Some(429), 3, 0, Some(4_000), 0.0),
            BatchVerdict::BackOff { delay_ms: 4_000 }
        );
        assert_eq!(
            batch_verdict(Some(503), 3, 8, Some(10), 1.0),
            BatchVerdict::BackOff {
                delay_ms: BACKOFF_MAX_MS
            }
        );
        assert_eq!(
            batch_verdict(Some(429), 3, 0, Some(u64::MAX), 0.0),
            BatchVerdict::BackOff {
                delay_ms: RETRY_AFTER_MAX_MS
            }
        );
    }
}
