-- The store's identity: a random id given once, when the store is created
-- (or when an older store is migrated). Clients remember it with a witness
-- event; a recreated store has another id, a restored one the same id but
-- not the witness (see docs/SYNC.md). Exactly one row.
CREATE TABLE store_identity (
    only_row   INTEGER PRIMARY KEY CHECK (only_row = 1),
    store_id   TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);

INSERT INTO store_identity (only_row, store_id, created_at)
VALUES (1, lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TRIGGER store_identity_refuse_update BEFORE UPDATE ON store_identity
BEGIN
    SELECT RAISE(ABORT, 'the store id never changes: UPDATE refused');
END;
