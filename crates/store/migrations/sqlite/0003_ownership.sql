-- Ownership by account id. A handle is a name that could one day be someone
-- else's; an id is never reused, so documents and tokens refer to accounts by it.
CREATE TABLE accounts_by_id (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    handle  TEXT NOT NULL UNIQUE,
    role    TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created INTEGER NOT NULL
);
INSERT INTO accounts_by_id (handle, role, created) SELECT handle, role, created FROM accounts ORDER BY created, handle;

CREATE TABLE tokens_by_id (
    hash    TEXT PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts_by_id (id) ON DELETE CASCADE,
    created INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO tokens_by_id (hash, account, created)
    SELECT t.hash, a.id, t.created FROM tokens t JOIN accounts_by_id a ON a.handle = t.handle;

DROP TABLE tokens;
DROP TABLE accounts;
ALTER TABLE accounts_by_id RENAME TO accounts;
ALTER TABLE tokens_by_id RENAME TO tokens;

-- The account a document belongs to (NULL: the operator's, e.g. imported
-- content nobody has claimed). Until now ownership was `owner = handle`.
ALTER TABLE documents ADD COLUMN account INTEGER REFERENCES accounts (id);
UPDATE documents SET account = (SELECT a.id FROM accounts a WHERE a.handle = documents.owner);
CREATE INDEX documents_account ON documents (account);
CREATE INDEX documents_owner ON documents (owner);

-- The account that wrote an event (its handle stays in `account`).
ALTER TABLE events ADD COLUMN account_id INTEGER;
UPDATE events SET account_id = (SELECT a.id FROM accounts a WHERE a.handle = events.account)
    WHERE account IS NOT NULL;

-- Which document holds each page path: one path, one document. Maintained by
-- every document write; rebuilt by the engine when the document routes change
-- (`meta.paths_fingerprint`).
CREATE TABLE doc_paths (
    path       TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX doc_paths_doc ON doc_paths (collection, doc_id);

-- Small facts about the database as a whole.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- What each historical page was built from, so that a page of a document
-- taken down since is never served from history (and carries its cache tags).
ALTER TABLE pointer_history ADD COLUMN deps TEXT NOT NULL DEFAULT '';
