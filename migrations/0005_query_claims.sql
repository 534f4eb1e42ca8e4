-- Server queries claimed by the node that runs them (see `query::claims`).
--
-- A server query's claim is written in the same transaction as its
-- `QuerySubmitted`, held by the node that accepted the submission, with a
-- lease that node renews while the query waits and runs. A claim whose
-- lease ran out (the node died or lost the store) is taken over once, by
-- one node, which fails the query with a clear message; `finished_at` is
-- set once the query's outcome is recorded. On SQLite one process owns the
-- file, so at start-up every claim of an earlier process is over.
--
-- Times: `lease_until` in milliseconds since the Unix epoch (compared
-- with the clock of the one process), the others as RFC 3339 text.
CREATE TABLE query_claims (
    query_id    TEXT    PRIMARY KEY,
    session_id  TEXT    NOT NULL,
    node_id     TEXT    NOT NULL,
    lease_until INTEGER NOT NULL,
    claimed_at  TEXT    NOT NULL,
    finished_at TEXT
);

CREATE INDEX query_claims_open ON query_claims (lease_until) WHERE finished_at IS NULL;
