-- The PostgreSQL event store, for several Sextant nodes sharing one
-- database. The same tables as the SQLite migrations 0001-0004, in native
-- types, and one more: the global counter.
--
-- Hybrid keys: `global_sequence` is the total order (the SSE cursor,
-- `Last-Event-ID`), given by `event_counter` (below), never by a sequence;
-- `(aggregate_type, aggregate_id, aggregate_sequence)` is unique, so two
-- writers deciding on the same version can never both append.
CREATE TABLE events (
    global_sequence    bigint      PRIMARY KEY CHECK (global_sequence >= 1),
    id                 uuid        NOT NULL UNIQUE,
    aggregate_type     text        NOT NULL,
    aggregate_id       uuid        NOT NULL,
    aggregate_sequence bigint      NOT NULL CHECK (aggregate_sequence >= 1),
    event_type         text        NOT NULL,
    event_version      integer     NOT NULL CHECK (event_version >= 1),
    -- `json`, not `jsonb`: the text is kept exactly as written.
    payload            json        NOT NULL,
    metadata           json        NOT NULL,
    created_at         timestamptz NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, aggregate_sequence)
);

-- Query ids are unique across sessions: the pipeline looks a submitted one up.
CREATE INDEX events_submitted_query_id
    ON events ((payload->>'query_id'))
    WHERE event_type = 'QuerySubmitted';

-- The global order without gaps. Every group transaction locks this one row
-- first and takes its global sequences from it (`UPDATE … SET seq = seq + n
-- RETURNING seq`); the lock lasts until COMMIT, so commits happen in
-- global-sequence order and a reader resuming after sequence n never misses
-- an event committed later with a lower number. `seq` is also the head.
CREATE TABLE event_counter (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint  NOT NULL CHECK (seq >= 0)
);
INSERT INTO event_counter (only_row, seq) VALUES (true, 0);

-- Facts are never rewritten or removed.
CREATE FUNCTION sextant_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION sextant_refuse_change();

-- Every accepted command, written in the same transaction as its events, so
-- a resend is answered from here instead of being applied twice (see the
-- SQLite migration 0001 for the columns).
CREATE TABLE processed_commands (
    command_id            uuid        PRIMARY KEY,
    aggregate_type        text        NOT NULL,
    aggregate_id          uuid        NOT NULL,
    request               text        NOT NULL,
    version               bigint      NOT NULL,
    first_global_sequence bigint,
    last_global_sequence  bigint,
    processed_at          timestamptz NOT NULL,
    -- The user id (or `server:query-executor`) that issued it.
    actor                 text
);

CREATE TRIGGER processed_commands_append_only BEFORE UPDATE OR DELETE ON processed_commands
    FOR EACH ROW EXECUTE FUNCTION sextant_refuse_change();

-- The store's identity: a random id given once (docs/SYNC.md).
CREATE TABLE store_identity (
    only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    store_id   uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO store_identity (only_row, store_id) VALUES (true, gen_random_uuid());

CREATE TRIGGER store_identity_never_changes BEFORE UPDATE OR DELETE ON store_identity
    FOR EACH ROW EXECUTE FUNCTION sextant_refuse_change();

-- Users and their token hashes (SQLite migration 0004). Timestamps are the
-- store's fixed-width RFC 3339 text, as on SQLite.
CREATE TABLE users (
    user_id    uuid    PRIMARY KEY,
    name       text    NOT NULL,
    is_admin   boolean NOT NULL DEFAULT false,
    token_hash text    NOT NULL UNIQUE,
    created_at text    NOT NULL,
    revoked_at text
);

CREATE UNIQUE INDEX users_active_name ON users (name) WHERE revoked_at IS NULL;
