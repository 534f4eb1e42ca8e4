-- Accounts: users and their tokens, and who issued each processed command.
--
-- A user has a stable id; names are unique among *active* users only, so a
-- name can be given again after a revocation, to a new id that inherits
-- nothing. Tokens are never stored: `token_hash` is the SHA-256 of the
-- token (tokens are 256 random bits, so a fast hash is enough). A revoked
-- user keeps its row (sessions and events name its id) with `revoked_at` set.
CREATE TABLE users (
    user_id    TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    is_admin   INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    token_hash TEXT    NOT NULL UNIQUE,
    created_at TEXT    NOT NULL,
    revoked_at TEXT
);

CREATE UNIQUE INDEX users_active_name ON users (name) WHERE revoked_at IS NULL;

-- The user id (or `server:query-executor`) that issued a command: a resend
-- of the same command id by someone else is refused, not answered with the
-- original's events. NULL for commands processed before accounts existed.
ALTER TABLE processed_commands ADD COLUMN actor TEXT;
