-- The same as migrations/sqlite/0005_dashboard.sql, in PostgreSQL's types.
ALTER TABLE accounts ADD COLUMN password TEXT;
ALTER TABLE tokens ADD COLUMN label TEXT NOT NULL DEFAULT '';
CREATE INDEX tokens_account ON tokens (account);

CREATE TABLE sessions (
    hash    TEXT PRIMARY KEY,
    account BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL
);
CREATE INDEX sessions_account ON sessions (account, created);

-- The admin console lists the latest failed changes and updated documents.
CREATE INDEX documents_updated ON documents (updated);
CREATE INDEX events_failed ON events (id) WHERE state = 'failed';
