-- The custom domain a site is served at, on its document (set by the
-- platform when a domain goes live; pages take their canonical URLs from it).
ALTER TABLE documents ADD COLUMN domain TEXT;
ALTER TABLE published_documents ADD COLUMN domain TEXT;
ALTER TABLE document_versions ADD COLUMN domain TEXT;
