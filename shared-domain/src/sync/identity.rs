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

    /// The request header's value: `<global_sequence>:<event_id>`.
    pub fn to_header(self) -> String {
        format!("{}:{}", self.global_sequence, self.event_id)
    }

    /// Reads a request header's value (`None` when malformed).
    pub fn from_header(value: &str) -> Option<Self> {
        let (sequence, id) = value.trim().split_once(':')?;
        Some(Self {
            global_sequence: sequence.parse().ok()?,
            event_id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// The header that carries a replica's witness on a request whose answer
/// brings events (the command batch, an aggregate's events), and the
/// authority's judgement of it on the answer: `held`, `witness_missing` or
/// `witness_differs` ([`judge_witness`]).
pub const WITNESS_HEADER: &str = "x-sextant-witness";

/// The answer header's value for a judgement.
pub fn judgement_header(judged: Result<(), ResetReason>) -> &'static str {
    match judged {
        Ok(()) => "held",
        Err(reason) => reason.code(),
    }
}

/// Reads the answer header (`None`: absent or unknown, as from an older
/// server: not judged).
pub fn judgement_from_header(value: Option<&str>) -> Option<Result<(), ResetReason>> {
    match value?.trim() {
        "held" => Some(Ok(())),
        "witness_missing" => Some(Err(ResetReason::WitnessMissing)),
        "witness_differs" => Some(Err(ResetReason::WitnessDiffers)),
        _ => None,
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
    /// The wire name (as serialized).
    pub fn code(self) -> &'static str {
        match self {
            ResetReason::OtherStore => "other_store",
            ResetReason::WitnessMissing => "witness_missing",
            ResetReason::WitnessDiffers => "witness_differs",
            ResetReason::CursorAhead => "cursor_ahead",
        }
    }

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
    if let Some(witness) = request.witness {
        if let Err(reason) = judge_witness(witness, facts.event_at_witness) {
            return ResumeVerdict::Reset(reason);
        }
    }
    if request.after > facts.head {
        return ResumeVerdict::Reset(ResetReason::CursorAhead);
    }
    ResumeVerdict::Confirm
}

/// The authority's judgement of a witness a replica named (in a feed's
/// resume request, or with a request whose answer brings events): `Ok`
/// when it holds that event at that sequence, so everything the replica
/// holds is in its log.
pub fn judge_witness(witness: Witness, event_at_witness: Option<Uuid>) -> Result<(), ResetReason> {
    if active(Mutant::WitnessIgnored) {
        return Ok(());
    }
    match event_at_witness {
        None => Err(ResetReason::WitnessMissing),
        Some(id) if id != witness.event_id => Err(ResetReason::WitnessDiffers),
        Some(_) => Ok(()),
    }
}

/// What a replica does with an answer (or a fetch) that brings events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeAnswer {
    /// Take its events.
    Take,
    /// Drop the answer and ask again (every request is idempotent): the
    /// replica took events from elsewhere (the feed) while it was on the
    /// wire, which the authority's judgement does not cover.
    Retry,
    /// The authority does not hold what the replica holds: reset.
    Reset(ResetReason),
}

/// Whether to take an answer's events. The request named `sent`, the
/// replica's witness when it was sent; the authority answered with its
/// judgement of it (`None`: it did not judge, an older server). The
/// replica holds `now`. Only a store that holds the witness may add events
/// to what a replica holds: otherwise a replica that took events of a
/// store restored from an older backup would take that store's newer
/// events too, one of them would become its witness, and the events the
/// store lost would stay on screen for good.
pub fn take_answer(
    sent: Option<Witness>,
    now: Option<Witness>,
    judged: Option<Result<(), ResetReason>>,
) -> TakeAnswer {
    match judged {
        Some(Err(reason)) => TakeAnswer::Reset(reason),
        _ if sent != now => TakeAnswer::Retry,
        _ => TakeAnswer::Take,
    }
}

/// Whether an answer that names `announced` comes from the store `held`
/// (unknown on either side counts as the same: nothing to compare).
pub fn same_store(held: Option<Uuid>, announced: Option<Uuid>) -> bool {
    match (held, announced) {
        (Some(held), Some(announced)) => held == announced || active(Mutant::StoreIdIgnored),
        _ => true,
    }
}

/// What a replica does with an answer or a fetch (which bring it events)
/// that names `announced`, holding `held`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCheck {
    /// The same store: use the events, and hold this store id from now on
    /// (persisted with them).
    Hold(Option<Uuid>),
    /// Another store: reset, and hold the announced id.
    Reset,
}

/// Checks the store of an answer or a fetch. A replica that holds no store
/// id yet (it has not had a feed hello) adopts the id of the first one that
/// brings it events: else the events of two stores could mix when the store
/// is recreated before the hello, and an event of the new store, higher
/// than those of the old, would become the witness and hide them.
pub fn check_store(held: Option<Uuid>, announced: Option<Uuid>) -> StoreCheck {
    if same_store(held, announced) {
        StoreCheck::Hold(held.or(announced))
    } else {
        StoreCheck::Reset
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
    fn an_answer_adds_events_only_from_a_store_holding_the_witness() {
        let witness = Witness {
            global_sequence: 5,
            event_id: EVENT,
        };
        assert_eq!(judge_witness(witness, Some(EVENT)), Ok(()));
        assert_eq!(
            judge_witness(witness, None),
            Err(ResetReason::WitnessMissing)
        );
        assert_eq!(
            judge_witness(witness, Some(Uuid::from_u128(71))),
            Err(ResetReason::WitnessDiffers)
        );

        let moved = Witness {
            global_sequence: 6,
            event_id: Uuid::from_u128(72),
        };
        let w = Some(witness);
        assert_eq!(take_answer(w, w, Some(Ok(()))), TakeAnswer::Take);
        assert_eq!(take_answer(w, w, None), TakeAnswer::Take, "an older server");
        assert_eq!(take_answer(None, None, None), TakeAnswer::Take);
        assert_eq!(
            take_answer(w, w, Some(Err(ResetReason::WitnessMissing))),
            TakeAnswer::Reset(ResetReason::WitnessMissing)
        );
        assert_eq!(
            take_answer(w, Some(moved), Some(Ok(()))),
            TakeAnswer::Retry,
            "the feed moved the witness while the request was on the wire"
        );
        assert_eq!(take_answer(None, w, None), TakeAnswer::Retry);
        assert_eq!(
            take_answer(w, Some(moved), Some(Err(ResetReason::WitnessDiffers))),
            TakeAnswer::Reset(ResetReason::WitnessDiffers)
        );
    }

    #[test]
    fn the_witness_and_its_judgement_travel_in_a_header() {
        let witness = Witness {
            global_sequence: 12,
            event_id: EVENT,
        };
        assert_eq!(Witness::from_header(&witness.to_header()), Some(witness));
        assert_eq!(Witness::from_header("12"), None);
        assert_eq!(Witness::from_header("x:y"), None);
        for judged in [
            Ok(()),
            Err(ResetReason::WitnessMissing),
            Err(ResetReason::WitnessDiffers),
        ] {
            assert_eq!(
                judgement_from_header(Some(judgement_header(judged))),
                Some(judged)
            );
        }
        assert_eq!(judgement_from_header(None), None, "an older server");
        assert_eq!(judgement_from_header(Some("maybe")), None);
        for reason in [
            ResetReason::OtherStore,
            ResetReason::WitnessMissing,
            ResetReason::WitnessDiffers,
            ResetReason::CursorAhead,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.code())
            );
        }
    }

    #[test]
    fn the_first_answer_names_the_store_a_replica_holds() {
        let other = Uuid::from_u128(8);
        assert_eq!(
            check_store(None, Some(STORE)),
            StoreCheck::Hold(Some(STORE))
        );
        assert_eq!(check_store(None, None), StoreCheck::Hold(None));
        assert_eq!(
            check_store(Some(STORE), None),
            StoreCheck::Hold(Some(STORE))
        );
        assert_eq!(
            check_store(Some(STORE), Some(STORE)),
            StoreCheck::Hold(Some(STORE))
        );
        assert_eq!(check_store(Some(STORE), Some(other)), StoreCheck::Reset);
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
