-- Certificates ordered from an ACME authority ([domains.acme]) for verified
-- custom domains, by one issuer at a time (the `acme` lease).

-- The account certificates are ordered with, per directory URL (its key and
-- URL as the client library writes them), so every issuer uses one account.
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    created     INTEGER NOT NULL
);

-- The orders placed within the budget's window, by when: the order budget
-- counts them, and older ones are dropped as new ones are placed.
CREATE TABLE acme_orders (
    host   TEXT NOT NULL,
    placed INTEGER NOT NULL
);
CREATE INDEX acme_orders_placed ON acme_orders (placed);

-- A host whose last order failed: failures in a row, when it may be ordered
-- again, and why it failed (shown to the site's owner). Dropped when a
-- certificate is issued; kept across a detach, so detaching and attaching
-- again does not skip the wait.
CREATE TABLE acme_hosts (
    host     TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    retry_at INTEGER NOT NULL,
    problem  TEXT NOT NULL
);

-- The HTTP-01 answers of orders in progress, by token: the router answers
-- http://<host>/.well-known/acme-challenge/<token> with its key
-- authorization, for that host only.
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    host              TEXT NOT NULL,
    key_authorization TEXT NOT NULL,
    created           INTEGER NOT NULL
);

-- The TLS-ALPN-01 answers of orders in progress, by host: a self-signed
-- certificate carrying the key authorization's digest, which the router
-- offers a client asking for the name with ALPN protocol acme-tls/1.
CREATE TABLE acme_alpn_challenges (
    host    TEXT PRIMARY KEY,
    chain   TEXT NOT NULL,
    key     TEXT NOT NULL,
    created INTEGER NOT NULL
);

-- Since when the host has been served over HTTPS (kept across renewals):
-- HSTS is sent once that is a week ago.
ALTER TABLE certificates ADD COLUMN first_issued INTEGER;
