-- The event store: one append-only log of every aggregate's events.
--
-- Hybrid keys: `global_sequence` is the total order (the SSE cursor,
-- `Last-Event-ID`); `(aggregate_type, aggregate_id, aggregate_sequence)` is
-- unique, so two writers deciding on the same version can never both append.
CREATE TABLE events (
    global_sequence    INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT    NOT NULL UNIQUE,
    aggregate_type     TEXT    NOT NULL,
    aggregate_id       TEXT    NOT NULL,
    aggregate_sequence INTEGER NOT NULL CHECK (aggregate_sequence >= 1),
    event_type         TEXT    NOT NULL,
    event_version      INTEGER NOT NULL CHECK (event_version >= 1),
    payload            TEXT    NOT NULL CHECK (json_valid(payload)),
    metadata           TEXT    NOT NULL CHECK (json_valid(metadata)),
    created_at         TEXT    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, aggregate_sequence)
);

-- Events are facts: nothing rewrites or removes them.
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused');
END;

-- Every accepted command, written in the same transaction as its events, so
-- a resend is answered from here instead of being applied twice. `request`
-- is the canonical JSON of the command envelope: the same id with another
-- body is refused. The result is the events in
-- `first_global_sequence..=last_global_sequence` and the resulting `version`.
-- Rejected commands are never recorded: their resend is judged again.
CREATE TABLE processed_commands (
    command_id            TEXT    PRIMARY KEY,
    aggregate_type        TEXT    NOT NULL,
    aggregate_id          TEXT    NOT NULL,
    request               TEXT    NOT NULL,
    version               INTEGER NOT NULL,
    first_global_sequence INTEGER,
    last_global_sequence  INTEGER,
    processed_at          TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER processed_commands_refuse_update BEFORE UPDATE ON processed_commands
BEGIN
    SELECT RAISE(ABORT, 'processed_commands is append-only: UPDATE refused');
END;

CREATE TRIGGER processed_commands_refuse_delete BEFORE DELETE ON processed_commands
BEGIN
    SELECT RAISE(ABORT, 'processed_commands is append-only: DELETE refused');
END;
