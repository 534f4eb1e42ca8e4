//! Which node runs a server query, and what happens when that node dies:
//! the rules of query claims (the store keeps them, `store::claims` and
//! `store::postgres`; the executor follows them).
//!
//! - **Claimed with the submission.** The pipeline writes a server query's
//!   claim in the transaction that stores its `QuerySubmitted`, held by
//!   the node that accepted the command; that node's executor runs it
//!   (spawn-after-persist) once a renewal confirmed the database says it
//!   holds the claim. No query is ever stored unclaimed and no two nodes
//!   ever hold one, so it runs at most once, on that node.
//! - **Kept alive by a lease.** The holder renews the lease every
//!   [`renew_every`] while the query waits for a slot, runs and has its
//!   outcome recorded; then it marks the claim finished. A renewal that
//!   finds the claim gone (taken over, below) stops the run.
//! - **Expiry ends the query, once.** Every node looks for expired leases
//!   as often as it renews; each expired claim is taken over by exactly one
//!   node (PostgreSQL: `FOR UPDATE SKIP LOCKED`), which fails the query
//!   with [`LEASE_EXPIRED`] through the pipeline, then finishes the claim.
//!   A killed node's queries therefore end `lease` after its last renewal,
//!   and restarting a node never touches another node's queries (their
//!   leases are renewed). On SQLite one process owns the store, so at
//!   start-up every claim of an earlier process is over at once
//!   ([`INTERRUPTED_BY_RESTART`]).
//! - **Failed, not re-run.** A query whose node died is failed, not run
//!   again elsewhere: the node may have died *because* of it (memory, a
//!   runaway plan), and running it on the next node could take that one
//!   down too; it may also have run for most of its timeout already. The
//!   user sees why and runs it again with one click.

use std::time::Duration;

use uuid::Uuid;

/// The lease unless configured otherwise (`--query-lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The message of queries a crash or restart left unfinished (SQLite:
/// the claims of the process before this one).
pub const INTERRUPTED_BY_RESTART: &str = "interrupted by server restart";

/// The message of queries whose node stopped renewing its claim.
pub const LEASE_EXPIRED: &str = "interrupted: the server node running this query stopped (it was stopped, killed or lost the database) and its claim expired; run the query again";

/// Expired claims one sweep takes over at most.
pub const SWEEP_LIMIT: usize = 100;

/// How often a node renews its claims and looks for expired ones: three
/// renewals fit in one lease, so one late or failed renewal loses nothing.
pub fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(50))
}

/// The message a taken-over claim's query is failed with.
pub fn expiry_message(at_start_up_of_sole_node: bool) -> &'static str {
    if at_start_up_of_sole_node {
        INTERRUPTED_BY_RESTART
    } else {
        LEASE_EXPIRED
    }
}

/// The queries this node claimed that a renewal no longer found held by it
/// (taken over by another node after the lease ran out): their runs stop.
pub fn lost(claimed: &[Uuid], held: &[Uuid]) -> Vec<Uuid> {
    claimed
        .iter()
        .filter(|id| !held.contains(id))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_renewals_fit_in_a_lease_and_there_is_a_floor() {
        assert_eq!(
            renew_every(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_every(Duration::from_millis(90)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn claims_missing_from_a_renewal_are_lost() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(lost(&[a, b, c], &[c, a]), vec![b]);
        assert!(lost(&[a], &[a]).is_empty());
        assert!(lost(&[], &[a]).is_empty());
    }

    #[test]
    fn only_a_sole_node_starting_up_says_restart() {
        assert_eq!(expiry_message(true), INTERRUPTED_BY_RESTART);
        assert_eq!(expiry_message(false), LEASE_EXPIRED);
    }
}
