-- The same as migrations/sqlite/0006_drafts.sql, in PostgreSQL's types.
-- Drafts: a document's next content, saved and never published until its
-- owner publishes it (at once, or at a scheduled time). One per document;
-- `data` holds the user fields. Its media references are kept in media_refs
-- under generation -2, so garbage collection keeps a draft's images.
CREATE TABLE drafts (
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    account    BIGINT REFERENCES accounts (id) ON DELETE CASCADE,
    data       TEXT NOT NULL,
    updated    BIGINT NOT NULL,
    PRIMARY KEY (collection, doc_id)
);
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
    due        BIGINT NOT NULL,
    account    BIGINT REFERENCES accounts (id) ON DELETE CASCADE,
    author     TEXT NOT NULL,
    admin      BIGINT NOT NULL DEFAULT 0,
    error      TEXT,
    PRIMARY KEY (collection, doc_id, action)
);
CREATE INDEX schedules_due ON schedules (due) WHERE error IS NULL;
CREATE INDEX schedules_account ON schedules (account);

-- Links that show a document's draft to whoever holds them, until they
-- expire (Unix seconds) or are revoked; stored as hashes of their tokens.
CREATE TABLE preview_links (
    hash       TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    created    BIGINT NOT NULL,
    expires    BIGINT NOT NULL
);
CREATE INDEX preview_links_doc ON preview_links (collection, doc_id);
