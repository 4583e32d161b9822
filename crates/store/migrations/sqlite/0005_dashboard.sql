-- Signing in with a browser: a password (an Argon2id PHC string; NULL for
-- accounts that only use API tokens), sessions stored as hashes of their
-- cookie values, and a label on each API token so its owner can tell them
-- apart when revoking one.
ALTER TABLE accounts ADD COLUMN password TEXT;
ALTER TABLE tokens ADD COLUMN label TEXT NOT NULL DEFAULT '';
CREATE INDEX tokens_account ON tokens (account);

CREATE TABLE sessions (
    hash    TEXT PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_account ON sessions (account, created);

-- The admin console lists the latest failed changes and updated documents.
CREATE INDEX documents_updated ON documents (updated);
CREATE INDEX events_failed ON events (id) WHERE state = 'failed';
