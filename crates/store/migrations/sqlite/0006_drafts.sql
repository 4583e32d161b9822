-- Drafts: a document's next content, saved and never published until its
-- owner publishes it (at once, or at a scheduled time). One per document;
-- `data` holds the user fields. Its media references are kept in media_refs
-- under generation -2, so garbage collection keeps a draft's images.
CREATE TABLE drafts (
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    account    INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    data       TEXT NOT NULL,
    updated    INTEGER NOT NULL,
    PRIMARY KEY (collection, doc_id)
) WITHOUT ROWID;
CREATE INDEX drafts_account ON drafts (account);

-- Changes due at a time (milliseconds): publishing a document's draft, or
-- unpublishing the document. The publisher lands a due entry as a change in
-- the transaction that deletes the entry, so it happens exactly once. An
-- entry whose change was refused when it fell due keeps the reason in
-- `error` and is no longer due.
CREATE TABLE schedules (
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    action     TEXT NOT NULL CHECK (action IN ('publish', 'unpublish')),
    due        INTEGER NOT NULL,
    account    INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    author     TEXT NOT NULL,
    admin      INTEGER NOT NULL DEFAULT 0,
    error      TEXT,
    PRIMARY KEY (collection, doc_id, action)
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (due) WHERE error IS NULL;
CREATE INDEX schedules_account ON schedules (account);

-- Links that show a document's draft to whoever holds them, until they
-- expire (Unix seconds) or are revoked; stored as hashes of their tokens.
CREATE TABLE preview_links (
    hash       TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    created    INTEGER NOT NULL,
    expires    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX preview_links_doc ON preview_links (collection, doc_id);
