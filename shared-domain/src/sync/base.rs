//! The exact-base check the authority makes before deciding a command.
//!
//! A version number alone does not say *which* history a command was decided
//! on: after a rebase, or when two replicas race, two different logs can have
//! the same length. The sender therefore names the command that produced the
//! aggregate's event at `expected_version` (`base_command`); the authority
//! decides only when its log has that length *and* ends with an event of that
//! command. Envelopes without a base keep the number check.

use uuid::Uuid;

/// The authority's head of one aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// The number of events stored (0 for an aggregate never written).
    pub version: u64,
    /// The command that produced the last of them.
    pub last_command: Option<Uuid>,
}

/// Why a command may not be decided on the authority's head: answer 409
/// with `current_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseConflict {
    pub current_version: u64,
}

/// Whether a command decided on `expected_version` (and `base_command`, if
/// the sender named one) may be decided on `head`.
pub fn check_base(
    expected_version: u64,
    base_command: Option<Uuid>,
    head: Head,
) -> Result<(), BaseConflict> {
    let conflict = BaseConflict {
        current_version: head.version,
    };
    if expected_version != head.version {
        return Err(conflict);
    }
    match base_command {
        Some(base)
            if head.last_command != Some(base)
                && !super::active(super::Mutant::BaseNumbersOnly) =>
        {
            Err(conflict)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Uuid = Uuid::from_u128(1);
    const B: Uuid = Uuid::from_u128(2);

    fn head(version: u64, last_command: Option<Uuid>) -> Head {
        Head {
            version,
            last_command,
        }
    }

    #[test]
    fn version_and_base_must_both_match() {
        assert_eq!(check_base(3, Some(A), head(3, Some(A))), Ok(()));
        assert_eq!(
            check_base(3, Some(A), head(3, Some(B))),
            Err(BaseConflict { current_version: 3 }),
            "same length, another history"
        );
        assert_eq!(
            check_base(2, Some(A), head(3, Some(A))),
            Err(BaseConflict { current_version: 3 })
        );
    }

    #[test]
    fn without_a_base_only_the_number_counts() {
        assert_eq!(check_base(3, None, head(3, Some(B))), Ok(()));
        assert_eq!(check_base(0, None, head(0, None)), Ok(()));
        assert_eq!(
            check_base(1, None, head(0, None)),
            Err(BaseConflict { current_version: 0 })
        );
    }

    #[test]
    fn a_base_on_an_empty_aggregate_conflicts() {
        assert_eq!(
            check_base(0, Some(A), head(0, None)),
            Err(BaseConflict { current_version: 0 })
        );
    }
}
