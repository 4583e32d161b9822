-- Custom domains: hosts a site is served at besides its own path. A site
-- claims a host with a random proof token; the claim is verified when a TXT
-- record at `_sesame-challenge.<host>` holds that token, and is live while
-- the host's DNS also points at the platform. Several sites may claim one
-- host, each with its own token; one claim at a time is verified (the DNS
-- owner decides which, by the token they publish).
CREATE TABLE domains (
    host     TEXT NOT NULL,
    site     TEXT NOT NULL,
    account  INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    token    TEXT NOT NULL,
    created  INTEGER NOT NULL,
    -- The last DNS check, what it found wrong, and since when the proof and
    -- the pointing held (Unix seconds; NULL: not yet).
    checked  INTEGER,
    problem  TEXT,
    verified INTEGER,
    live     INTEGER,
    PRIMARY KEY (host, site)
) WITHOUT ROWID;
CREATE UNIQUE INDEX domains_one_verified ON domains (host) WHERE verified IS NOT NULL;
CREATE INDEX domains_site ON domains (site);

-- The certificate of each host that has one (PEM: the chain, and its private
-- key, which only the router's TLS reads), served by SNI while a claim on the
-- host is verified, and deleted with the last verified claim.
CREATE TABLE certificates (
    host      TEXT PRIMARY KEY,
    chain     TEXT NOT NULL,
    key       TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    issued    INTEGER NOT NULL
) WITHOUT ROWID;
