-- The same as migrations/sqlite/0004_media.sql, in PostgreSQL's types.
-- Media: images uploaded by accounts, stored by content hash. `variants` is
-- NULL until the worker has made the resized copies (a JSON list of widths).
CREATE TABLE media (
    hash     TEXT PRIMARY KEY,
    format   TEXT NOT NULL CHECK (format IN ('png', 'jpeg', 'gif', 'webp')),
    width    BIGINT NOT NULL,
    height   BIGINT NOT NULL,
    size     BIGINT NOT NULL,
    created  BIGINT NOT NULL,
    variants TEXT
);
CREATE INDEX media_pending ON media (created) WHERE variants IS NULL;

-- Who uploaded each medium (the same bytes uploaded by two accounts are one
-- object with two owners); quotas add up the sizes an account owns.
CREATE TABLE media_owners (
    hash    TEXT NOT NULL REFERENCES media (hash) ON DELETE CASCADE,
    account BIGINT NOT NULL REFERENCES accounts (id),
    created BIGINT NOT NULL,
    PRIMARY KEY (hash, account)
);
CREATE INDEX media_owners_account ON media_owners (account);

-- Which document states refer to each medium: generation -1 is the latest
-- written state, any other the version published by that generation. A
-- medium no row refers to is collected after the grace period.
CREATE TABLE media_refs (
    hash       TEXT NOT NULL,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    generation BIGINT NOT NULL,
    PRIMARY KEY (hash, collection, doc_id, generation)
);
CREATE INDEX media_refs_doc ON media_refs (collection, doc_id, generation);

-- What pages need to show the media a document refers to (JSON).
ALTER TABLE documents ADD COLUMN media TEXT NOT NULL DEFAULT '{}';
ALTER TABLE published_documents ADD COLUMN media TEXT NOT NULL DEFAULT '{}';
ALTER TABLE document_versions ADD COLUMN media TEXT;
