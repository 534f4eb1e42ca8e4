//! Store identity and the witness: how a replica and the authority find out
//! that the authority is not the store the replica's confirmed state came
//! from (another store, or the same one restored from an older backup or
//! after a power cut lost its last transactions).
//!
//! The store gets a random id when it is created. A replica remembers that
//! id and a *witness*: the highest global sequence it holds, from any
//! source, with that event's id. Two histories of one store that diverge
//! share a prefix and differ after it, so if the authority holds the
//! witness event at the witness sequence, everything the replica holds is
//! in the authority's log too. The authority judges a reconnecting feed
//! with [`judge_resume`]; every other answer that carries the store id is
//! checked with [`same_store`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::mutants::{active, Mutant};
use crate::envelope::EventEnvelope;

/// The highest-sequenced event a replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    pub global_sequence: u64,
    pub event_id: Uuid,
}

impl Witness {
    /// The witness an event gives.
    pub fn of(event: &EventEnvelope) -> Self {
        Self {
            global_sequence: event.global_sequence,
            event_id: event.id,
        }
    }
}

/// What a reconnecting replica tells the authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResumeRequest {
    /// The store id it holds confirmed state of (`None`: none yet).
    pub store_id: Option<Uuid>,
    /// Its resume cursor.
    pub after: u64,
    pub witness: Option<Witness>,
}

/// What the authority knows when judging a [`ResumeRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFacts {
    pub store_id: Uuid,
    /// The highest global sequence stored.
    pub head: u64,
    /// The id of the event stored at the witness's global sequence, if any.
    pub event_at_witness: Option<Uuid>,
}

/// Why a replica must drop its confirmed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// Another store answers (recreated, or another server).
    OtherStore,
    /// The store has no event at the witness's sequence (restored older).
    WitnessMissing,
    /// The store has another event there (restored, then grew differently).
    WitnessDiffers,
    /// The replica's cursor is past the store's last event.
    CursorAhead,
}

impl ResetReason {
    /// One line for the user.
    pub fn describe(self) -> &'static str {
        match self {
            ResetReason::OtherStore => "the server's data store was replaced",
            ResetReason::WitnessMissing
            | ResetReason::WitnessDiffers
            | ResetReason::CursorAhead => "the server's data was restored from an older state",
        }
    }
}

/// The first frame of a feed: go on, or start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeVerdict {
    Confirm,
    Reset(ResetReason),
}

/// Judges whether a replica's state is a prefix of the authority's log.
pub fn judge_resume(request: ResumeRequest, facts: StoreFacts) -> ResumeVerdict {
    if request.store_id.is_some_and(|id| id != facts.store_id) && !active(Mutant::StoreIdIgnored) {
        return ResumeVerdict::Reset(ResetReason::OtherStore);
    }
    if let Some(witness) = request.witness.filter(|_| !active(Mutant::WitnessIgnored)) {
        match facts.event_at_witness {
            None => return ResumeVerdict::Reset(ResetReason::WitnessMissing),
            Some(id) if id != witness.event_id => {
                return ResumeVerdict::Reset(ResetReason::WitnessDiffers)
            }
            Some(_) => {}
        }
    }
    if request.after > facts.head {
        return ResumeVerdict::Reset(ResetReason::CursorAhead);
    }
    ResumeVerdict::Confirm
}

/// Whether an answer that names `announced` comes from the store `held`
/// (unknown on either side counts as the same: nothing to compare).
pub fn same_store(held: Option<Uuid>, announced: Option<Uuid>) -> bool {
    match (held, announced) {
        (Some(held), Some(announced)) => held == announced || active(Mutant::StoreIdIgnored),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: Uuid = Uuid::from_u128(7);
    const EVENT: Uuid = Uuid::from_u128(70);

    fn facts(head: u64, event_at_witness: Option<Uuid>) -> StoreFacts {
        StoreFacts {
            store_id: STORE,
            head,
            event_at_witness,
        }
    }

    fn request(store_id: Option<Uuid>, after: u64, witness: Option<Uuid>) -> ResumeRequest {
        ResumeRequest {
            store_id,
            after,
            witness: witness.map(|event_id| Witness {
                global_sequence: 5,
                event_id,
            }),
        }
    }

    #[test]
    fn a_matching_witness_confirms() {
        assert_eq!(
            judge_resume(request(Some(STORE), 5, Some(EVENT)), facts(9, Some(EVENT))),
            ResumeVerdict::Confirm
        );
        assert_eq!(
            judge_resume(request(None, 0, None), facts(0, None)),
            ResumeVerdict::Confirm,
            "a new replica"
        );
        assert_eq!(
            judge_resume(request(Some(STORE), 5, Some(EVENT)), facts(5, Some(EVENT))),
            ResumeVerdict::Confirm,
            "at the head"
        );
    }

    #[test]
    fn every_divergence_resets() {
        let other = Uuid::from_u128(8);
        assert_eq!(
            judge_resume(request(Some(other), 5, Some(EVENT)), facts(9, Some(EVENT))),
            ResumeVerdict::Reset(ResetReason::OtherStore)
        );
        assert_eq!(
            judge_resume(request(Some(STORE), 5, Some(EVENT)), facts(3, None)),
            ResumeVerdict::Reset(ResetReason::WitnessMissing)
        );
        assert_eq!(
            judge_resume(request(Some(STORE), 5, Some(EVENT)), facts(9, Some(other))),
            ResumeVerdict::Reset(ResetReason::WitnessDiffers)
        );
        assert_eq!(
            judge_resume(request(Some(STORE), 12, Some(EVENT)), facts(9, Some(EVENT))),
            ResumeVerdict::Reset(ResetReason::CursorAhead)
        );
        assert_eq!(
            judge_resume(request(None, 12, None), facts(9, None)),
            ResumeVerdict::Reset(ResetReason::CursorAhead),
            "a replica from before store ids, ahead of the store"
        );
    }

    #[test]
    fn unknown_store_ids_are_not_a_mismatch() {
        assert!(same_store(None, Some(STORE)));
        assert!(same_store(Some(STORE), None));
        assert!(same_store(Some(STORE), Some(STORE)));
        assert!(!same_store(Some(STORE), Some(Uuid::from_u128(8))));
        assert_ne!(
            ResetReason::OtherStore.describe(),
            ResetReason::CursorAhead.describe()
        );
    }
}
