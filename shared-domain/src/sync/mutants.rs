//! Seeded mutants: deliberate bugs in the sync core that the simulation
//! must catch (`simulation::every_seeded_mutant_is_caught`). The switch
//! exists only in this crate's own test build; in every other build
//! [`active`] is a constant `false` the compiler removes.

/// One deliberate bug.
// The batch mutant is only read in test builds.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutant {
    /// A fetched event moves the feed cursor.
    FetchMovesCursor,
    /// A refusal of a decision since replaced still rejects the command.
    StaleRefusalAccepted,
    /// The authority's base check compares version numbers only.
    BaseNumbersOnly,
    /// A batch-level 4xx rejects every command of the batch.
    BatchErrorRejectsAll,
    /// The store id is not compared.
    StoreIdIgnored,
    /// The witness is not compared.
    WitnessIgnored,
    /// A feed event after a gap is skipped instead of held in the ledger.
    GapSkipped,
    /// A rejected command stays in the outbox (and is reported again).
    RejectionReportedTwice,
    /// A command leaves the outbox with its first event, not its last.
    FirstEventFinishes,
}

#[cfg(test)]
pub(crate) const ALL: [Mutant; 9] = [
    Mutant::FetchMovesCursor,
    Mutant::StaleRefusalAccepted,
    Mutant::BaseNumbersOnly,
    Mutant::BatchErrorRejectsAll,
    Mutant::StoreIdIgnored,
    Mutant::WitnessIgnored,
    Mutant::GapSkipped,
    Mutant::RejectionReportedTwice,
    Mutant::FirstEventFinishes,
];

#[cfg(test)]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Whether `mutant` is switched on (on this thread).
#[cfg(test)]
pub(crate) fn active(mutant: Mutant) -> bool {
    ACTIVE.with(|a| a.get() == Some(mutant))
}

/// Never, outside this crate's tests.
#[cfg(not(test))]
#[inline(always)]
pub(crate) const fn active(_: Mutant) -> bool {
    false
}

/// Runs `f` with `mutant` switched on for this thread.
#[cfg(test)]
pub(crate) fn with<R>(mutant: Option<Mutant>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Mutant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ACTIVE.with(|a| a.replace(mutant)));
    f()
}
