-- Accounts and their API tokens (stored only as hashes).
CREATE TABLE accounts (
    handle  TEXT PRIMARY KEY,
    role    TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tokens (
    hash    TEXT PRIMARY KEY,
    handle  TEXT NOT NULL REFERENCES accounts (handle) ON DELETE CASCADE,
    created INTEGER NOT NULL
) WITHOUT ROWID;

-- The latest written state of every document.
CREATE TABLE documents (
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    owner      TEXT,
    created    INTEGER NOT NULL,
    updated    INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('live', 'removed')),
    flags      TEXT NOT NULL DEFAULT '[]',
    data       TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;

-- The state the current generation was built from. It differs from
-- `documents` exactly for documents with pending events.
CREATE TABLE published_documents (
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    owner      TEXT,
    created    INTEGER NOT NULL,
    updated    INTEGER NOT NULL,
    status     TEXT NOT NULL,
    flags      TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;

-- Change events: written in the same transaction as the document change.
-- `accepted` and `due` are milliseconds: when the write was acknowledged, and
-- when it may be published (every pending event of a document shares one due
-- time, so a document's events are always published together).
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    op         TEXT NOT NULL,
    account    TEXT,
    created    INTEGER NOT NULL,
    accepted   INTEGER NOT NULL DEFAULT 0,
    due        INTEGER NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    generation INTEGER,
    error      TEXT
);
CREATE INDEX events_pending ON events (due, id) WHERE state = 'pending';
CREATE INDEX events_doc ON events (collection, doc_id);
CREATE INDEX events_generation ON events (generation);

-- Each published state of each document, by generation (NULL data: deleted);
-- rollback restores one of them.
CREATE TABLE document_versions (
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    generation INTEGER NOT NULL,
    owner      TEXT,
    created    INTEGER,
    updated    INTEGER,
    status     TEXT,
    flags      TEXT,
    data       TEXT,
    PRIMARY KEY (collection, id, generation)
) WITHOUT ROWID;

-- History that content alone cannot reproduce: permanent page positions
-- (stable and date listings, sitemap) and former paths (301s).
CREATE TABLE seqs (
    route      TEXT NOT NULL,
    grp        TEXT NOT NULL,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (route, grp, collection, doc_id)
) WITHOUT ROWID;

CREATE TABLE aliases (
    route      TEXT NOT NULL,
    path       TEXT NOT NULL,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    PRIMARY KEY (route, path, collection, doc_id)
) WITHOUT ROWID;

-- One row per committed batch.
CREATE TABLE generations (
    id      INTEGER PRIMARY KEY,
    created INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    summary TEXT NOT NULL
);

-- Objects known to be durably in the object store. `refs` counts the current
-- pointers to an object; `released` is when it last dropped to zero.
CREATE TABLE objects (
    hash      TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    encodings INTEGER NOT NULL,
    created   INTEGER NOT NULL,
    refs      INTEGER NOT NULL DEFAULT 0,
    released  INTEGER
) WITHOUT ROWID;
CREATE INDEX objects_unreferenced ON objects (released) WHERE refs = 0;

-- What each path serves. kind: 200 page, 301 redirect, 410 gone, 404 removed
-- (a tombstone, kept so that routers following generations see the removal).
CREATE TABLE pointers (
    path         TEXT PRIMARY KEY,
    kind         INTEGER NOT NULL CHECK (kind IN (200, 301, 404, 410)),
    hash         TEXT,
    content_type TEXT,
    location     TEXT,
    deps         TEXT NOT NULL DEFAULT '',
    generation   INTEGER NOT NULL,
    modified     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX pointers_generation ON pointers (generation);

-- Every value each path had, by generation (for `?v=` URLs and retention).
CREATE TABLE pointer_history (
    path         TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    kind         INTEGER NOT NULL,
    hash         TEXT,
    content_type TEXT,
    location     TEXT,
    PRIMARY KEY (path, generation)
) WITHOUT ROWID;
CREATE INDEX pointer_history_hash ON pointer_history (hash);

-- Time-limited exclusive roles across processes (publishing, garbage collection).
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
