-- Server queries claimed by the node that runs them (see `query::claims`).
--
-- A server query's claim is written in the same transaction as its
-- `QuerySubmitted` (so no query is ever stored unclaimed), held by the
-- node that accepted the submission, with a lease that node renews while
-- the query waits and runs. A claim whose lease ran out (the node was
-- killed, or lost the database) is taken over by exactly one node
-- (`FOR UPDATE SKIP LOCKED`), which fails the query with a clear message;
-- `finished_at` is set once the query's outcome is recorded. Leases are
-- compared with the database's clock only, so nodes' clocks may differ.
CREATE TABLE query_claims (
    query_id    uuid        PRIMARY KEY,
    session_id  uuid        NOT NULL,
    node_id     uuid        NOT NULL,
    lease_until timestamptz NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE INDEX query_claims_open ON query_claims (lease_until) WHERE finished_at IS NULL;
