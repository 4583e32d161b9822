//! The metadata store: documents, change events, the persisted site history,
//! objects, page pointers and generations.
//!
//! [`MetaStore`] is the seam; [`SqliteStore`] is the embedded implementation.
//! Every method that changes published state does so in one transaction, so a
//! generation is either entirely visible or not at all. The store knows
//! nothing about pages, templates or HTTP: it stores rows the engine computes.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sesame_model::{AccountId, AliasRow, Deps, DocKey, Document, SeqRow};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Store failures, with what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error while {doing}: {source}")]
    Database {
        /// What the store was doing.
        doing: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The database URL names an unsupported backend.
    #[error("unsupported database URL {0:?} (expected sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    /// A commit was built on a generation that is no longer the latest:
    /// another publisher committed meanwhile (its lease had expired).
    #[error("generation {base} is no longer the latest; another publisher committed meanwhile")]
    Stale {
        /// The generation the commit was built on.
        base: u64,
    },
}

impl StoreError {
    /// Whether the database could not be reached (down, restarting, or every
    /// connection busy): the operation did not happen and may be retried.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database {
                source: sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
                ..
            }
        )
    }
}

pub(crate) trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, sqlx::Error> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { doing, source })
    }
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Bit set of precompressed variants stored beside an object.
pub mod encodings {
    /// `<hash>.gz` exists.
    pub const GZIP: u8 = 1;
    /// `<hash>.br` exists.
    pub const BROTLI: u8 = 2;
}

/// An object in the object store, by content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    /// Lowercase hex blake3 of the identity bytes.
    pub hash: String,
    /// Size of the identity bytes.
    pub size: u64,
    /// Which compressed variants exist ([`encodings`]).
    pub encodings: u8,
}

/// What a path serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An object, with the media type it is served as.
    Page {
        /// The object.
        object: ObjectRow,
        /// `Content-Type`.
        content_type: String,
    },
    /// 301 to another path.
    Redirect(String),
    /// 410 Gone.
    Gone,
    /// Nothing any more (a tombstone for routers catching up).
    Removed,
}

/// A path's pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// URL path.
    pub path: String,
    /// What it serves.
    pub target: Target,
    /// Dependency keys (served as cache tags).
    pub deps: Deps,
    /// The generation that last changed it.
    pub generation: u64,
    /// When its content last changed (Unix seconds): `Last-Modified`.
    pub modified: i64,
}

/// A path whose pointer a generation sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerChange {
    /// URL path.
    pub path: String,
    /// What it serves from this generation on.
    pub target: Target,
    /// What its page was built from.
    pub deps: Deps,
}

/// A generation's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generation number.
    pub id: u64,
    /// Commit time (Unix seconds).
    pub created: i64,
    /// `build`, `apply`, ...
    pub kind: String,
    /// Counters of the batch.
    pub summary: serde_json::Value,
    /// The blob name of the manifest root it published (`None` before
    /// roots were recorded).
    pub root: Option<String>,
}

/// Documents with the persisted history needed to rebuild a site state.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Documents.
    pub docs: Vec<Document>,
    /// Sequence numbers.
    pub seqs: Vec<SeqRow>,
    /// Former paths.
    pub aliases: Vec<AliasRow>,
    /// The newest event included in `docs` (0 when there is none).
    pub watermark: i64,
}

/// How the published documents change with a generation: upserts (`Some`)
/// and deletions (`None`).
pub type PublishedDocs = Vec<(DocKey, Option<Arc<Document>>)>;

/// Everything one generation changes, committed atomically.
#[derive(Debug)]
pub struct Commit {
    /// The generation this commit builds on. The commit becomes generation
    /// `base + 1` or fails with [`StoreError::Stale`]: a publisher whose lease
    /// expired while it worked can never overwrite a newer generation.
    pub base: u64,
    /// `build`, `apply`, ...
    pub kind: &'static str,
    /// Commit time (Unix seconds): the generation's `created`, and the
    /// `Last-Modified` of the pointers it changes.
    pub created: i64,
    /// The blob name of the manifest root this generation publishes
    /// (already durable in object storage).
    pub root: Option<String>,
    /// Counters for the generation record.
    pub summary: serde_json::Value,
    /// The published documents.
    pub published: PublishedDocs,
    /// New sequence numbers.
    pub seqs: Vec<SeqRow>,
    /// New former paths.
    pub aliases_added: Vec<AliasRow>,
    /// Dropped former paths.
    pub aliases_removed: Vec<AliasRow>,
    /// Ids of the events this generation completes.
    pub events: Vec<i64>,
}

/// A bulk import in progress: nothing is visible until [`ImportTx::commit`];
/// dropping it rolls everything back.
#[async_trait]
pub trait ImportTx: Send {
    /// Writes documents (replacing the data of existing ones, keeping their
    /// status, flags and owning account) and one pending `upsert` event each.
    async fn add(&mut self, docs: &[Document]) -> Result<()>;
    /// The media among `hashes` (whoever owns them): imported content may
    /// refer to any uploaded medium.
    async fn media(&mut self, hashes: &[String]) -> Result<Vec<MediaRow>>;
    /// Records the page paths of imported documents: each document's old
    /// paths are dropped, and a path another document already holds stays
    /// with it (the operator's content may contest paths; the site model
    /// decides who serves them).
    async fn claim_paths(&mut self, paths: &[(String, DocKey)]) -> Result<()>;
    /// Commits the import.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// A document as written, with the account it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The document.
    pub doc: Document,
    /// The owning account; `None`: the operator's (imported, unclaimed).
    pub account: Option<AccountId>,
}

/// Who made a change, as recorded with its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Author<'a> {
    /// The handle (or `admin` for the admin token).
    pub handle: &'a str,
    /// The account, when the author has one.
    pub account: Option<AccountId>,
}

/// Document writes in progress. Each write records a pending change event in
/// the same transaction; nothing is visible to others until
/// [`WriteTx::commit`] (which is durable when it returns); dropping rolls back.
#[async_trait]
pub trait WriteTx: Send {
    /// The latest state of a document, including this transaction's writes.
    async fn get(&mut self, key: &DocKey) -> Result<Option<Stored>>;
    /// Writes a document owned by `account` and records event `op`; returns
    /// the event id.
    async fn put(
        &mut self,
        doc: &Document,
        account: Option<AccountId>,
        op: &str,
        by: Option<Author<'_>>,
    ) -> Result<i64>;
    /// Deletes a document (and its path claims) and records event `op`;
    /// returns the event id.
    async fn delete(&mut self, key: &DocKey, op: &str, by: Option<Author<'_>>) -> Result<i64>;
    /// The media among `hashes`, each with whether `account` owns it (read in
    /// this transaction, so a write checks what it refers to where it writes).
    async fn media(&mut self, hashes: &[String], account: Option<AccountId>) -> Result<Vec<(MediaRow, bool)>>;
    /// Makes `paths` the page paths `key` holds, replacing the ones it held.
    /// Returns the paths another document holds, with that document; those
    /// are not claimed. Concurrent claims of one path are serialised: the
    /// second sees the first as the holder once it commits.
    async fn claim_paths(&mut self, key: &DocKey, paths: &[String]) -> Result<Vec<(String, DocKey)>>;
    /// The draft of a document.
    async fn draft(&mut self, key: &DocKey) -> Result<Option<DraftRow>>;
    /// Saves `doc`'s fields as its document's draft, belonging to `account`,
    /// with its media references (so its images are kept); returns it as saved.
    async fn put_draft(&mut self, doc: &Document, account: Option<AccountId>) -> Result<DraftRow>;
    /// Drops a document's draft with its media references, its publish
    /// schedule and its preview links; whether there was one.
    async fn delete_draft(&mut self, key: &DocKey) -> Result<bool>;
    /// The schedules of a document.
    async fn schedules(&mut self, key: &DocKey) -> Result<Vec<ScheduleRow>>;
    /// How many schedules an account has set and waiting (refused ones
    /// included), counting this transaction's.
    async fn schedule_count(&mut self, account: AccountId) -> Result<u64>;
    /// Sets a schedule (replacing the document's schedule of that action).
    async fn put_schedule(&mut self, schedule: &ScheduleRow) -> Result<()>;
    /// Drops a schedule; with `due`, only if it still falls due then (so
    /// that of two publishers landing it, one does). Whether it was there.
    async fn delete_schedule(&mut self, key: &DocKey, action: ScheduleAction, due: Option<i64>) -> Result<bool>;
    /// Commits every write.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// When a written change becomes due for publishing: after `quiet_ms`
/// without further writes to the document, and at the latest `max_wait_ms`
/// after its first unpublished write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    /// Quiet period.
    pub quiet_ms: u64,
    /// Longest wait.
    pub max_wait_ms: u64,
}

impl Debounce {
    /// Due at once.
    pub const NONE: Debounce = Debounce { quiet_ms: 0, max_wait_ms: 0 };
}

/// An account's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Edits its own documents.
    User,
    /// Edits everything and moderates.
    Admin,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its permanent id.
    pub id: AccountId,
    /// Its handle.
    pub handle: String,
    /// Its role.
    pub role: Role,
}

/// An uploaded medium as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    /// Blake3 of the stored bytes (metadata already stripped).
    pub hash: String,
    /// Its format.
    pub format: sesame_model::MediaFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stored bytes.
    pub size: u64,
    /// When it was (last) uploaded, Unix seconds.
    pub created: i64,
    /// Widths of the variants made; `None` until the worker made them.
    pub variants: Option<Vec<u32>>,
}

impl MediaRow {
    /// What a document records of it.
    pub fn info(&self) -> sesame_model::Media {
        sesame_model::Media { format: self.format, width: self.width, height: self.height }
    }

    /// Its reference in documents, `HASH.EXT`.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.hash, self.format.ext())
    }
}

/// What [`MetaStore::add_media`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaAdded {
    /// Recorded (`new`: not stored before, by anyone).
    Stored {
        /// The medium as recorded.
        row: MediaRow,
        /// Whether these bytes were new.
        new: bool,
    },
    /// The account's media would exceed its quota.
    OverQuota {
        /// Bytes the account's other media take.
        used: u64,
    },
}

/// Sessions an account keeps at once (the oldest end first).
pub const MAX_SESSIONS: i64 = 20;

/// How a new account proves who it is.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// An API token, by its hash (sign-up through the API or the CLI).
    Token(&'a str),
    /// A password, as an Argon2id PHC string (sign-up in the browser).
    Password(&'a str),
}

/// An API token as its owner sees it (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its hash, which names it when revoking.
    pub hash: String,
    /// What its owner called it.
    pub label: String,
    /// When it was made (Unix seconds).
    pub created: i64,
}

/// What [`MetaStore::create_account`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The account exists now.
    Created(AccountId),
    /// Another account has the handle.
    Taken,
    /// Content already names the handle as its owner (or is its site): only
    /// the operator may hand it over ([`MetaStore::claim_account`]).
    OwnsContent,
}

/// What [`MetaStore::claim_account`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// The account (created when it did not exist).
    pub account: AccountId,
    /// Whether it was created now.
    pub created: bool,
    /// Documents that became the account's.
    pub documents: u64,
}

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    /// Waiting to be published.
    Pending,
    /// Published.
    Done,
    /// Publishing it failed; see `error`.
    Failed,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EventInfo {
    /// Event id.
    pub id: i64,
    /// The document.
    pub key: DocKey,
    /// `upsert`, `delete`, `takedown`, ...
    pub op: String,
    /// The handle that wrote it.
    pub account: Option<String>,
    /// The account that wrote it, when it was an account.
    pub account_id: Option<AccountId>,
    /// Its state.
    pub state: EventState,
    /// The generation that published it.
    pub generation: Option<u64>,
    /// Why publishing failed.
    pub error: Option<String>,
    /// When it was acknowledged (ms).
    pub accepted: i64,
}

/// A pending event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Event id.
    pub id: i64,
    /// The document.
    pub key: DocKey,
    /// When it was acknowledged (ms).
    pub accepted: i64,
}

/// A published state of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The generation that published it.
    pub generation: u64,
    /// When that generation was committed (Unix seconds).
    pub created: i64,
    /// The document (`None`: deleted in that generation).
    pub doc: Option<Document>,
}

/// What garbage collection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retain {
    /// The newest generations kept whatever their age.
    pub generations: u32,
    /// Generations committed at or after this time (Unix seconds) are kept.
    pub since: i64,
    /// Objects unreferenced since before this time (Unix seconds) may go.
    pub released_before: i64,
}

/// What garbage collection removed from the metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// Superseded document versions dropped.
    pub versions: u64,
    /// Media forgotten; their files (and variants) are to be deleted next.
    pub media: Vec<MediaRow>,
    /// The oldest generation retention keeps (0 when there is none).
    pub oldest_retained: u64,
}

/// A document's next content, saved and not published.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftRow {
    /// The document it is a draft of.
    pub key: DocKey,
    /// The account it belongs to (`None`: an admin's or the operator's).
    pub account: Option<AccountId>,
    /// The user fields.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// When it was last saved (ms).
    pub updated: i64,
}

/// What a schedule does when it falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScheduleAction {
    /// Publish the document's draft.
    Publish,
    /// Take the document off the site (its content is kept as its draft).
    Unpublish,
}

impl ScheduleAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleAction::Publish => "publish",
            ScheduleAction::Unpublish => "unpublish",
        }
    }

    /// The action a stored name names.
    pub fn parse(name: &str) -> Option<ScheduleAction> {
        match name {
            "publish" => Some(ScheduleAction::Publish),
            "unpublish" => Some(ScheduleAction::Unpublish),
            _ => None,
        }
    }
}

/// A change due at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// The document.
    pub key: DocKey,
    /// What happens.
    pub action: ScheduleAction,
    /// When (ms).
    pub due: i64,
    /// The account that set it; the change is made as that account.
    pub account: Option<AccountId>,
    /// Its handle (`admin` for the admin token), recorded with the change.
    pub author: String,
    /// Whether it was set by an admin.
    pub admin: bool,
    /// Why its change was refused when it fell due (then it is not due).
    pub error: Option<String>,
}

/// A link that shows a draft to whoever holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewLinkRow {
    /// Hash of its token (hex).
    pub hash: String,
    /// The document whose draft it shows.
    pub key: DocKey,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// When it stops working (Unix seconds).
    pub expires: i64,
}

/// Pending events with the latest state of the documents they concern, read
/// in one snapshot so that the documents reflect exactly these events.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    /// Events, oldest first.
    pub events: Vec<PendingEvent>,
    /// Latest state per document (`None`: deleted), shared: the publisher
    /// moves it into its model, and a batch split for a retry copies no
    /// document.
    pub docs: HashMap<DocKey, Option<Arc<Document>>>,
}

/// What generations after a given one changed in the published documents.
#[derive(Debug, Default)]
pub struct PublishedChanges {
    /// The newest generation.
    pub latest: u64,
    /// A full build happened: reload the whole published snapshot instead.
    pub full: bool,
    /// Changed documents in their published state (`None`: deleted).
    pub docs: Vec<(DocKey, Option<Document>)>,
}

/// The metadata store: every concern below, on one backend. Callers hold an
/// `Arc<dyn MetaStore>`, on which the methods of every concern are callable.
pub trait MetaStore:
    DocumentStore
    + DraftStore
    + DomainStore
    + EventStore
    + GenerationStore
    + AccountStore
    + MediaStore
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl<T> MetaStore for T where
    T: DocumentStore
        + DraftStore
        + DomainStore
        + EventStore
        + GenerationStore
        + AccountStore
        + MediaStore
        + Send
        + Sync
        + std::fmt::Debug
{
}

/// A site's claim on a custom domain (`domains` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    /// The host, lowercase ASCII (IDNA), without a trailing dot.
    pub host: String,
    /// The handle of the site that claims it.
    pub site: String,
    /// The account that attached it.
    pub account: Option<AccountId>,
    /// What the TXT record at `_sesame-challenge.<host>` must hold.
    pub token: String,
    /// When it was attached (Unix seconds).
    pub created: i64,
    /// The last DNS check.
    pub checked: Option<i64>,
    /// What that check found wrong, in words.
    pub problem: Option<String>,
    /// Since when the proof holds (this site's claim is the host's).
    pub verified: Option<i64>,
    /// Since when the host's DNS also points at the platform.
    pub live: Option<i64>,
}

/// The domain each site is served at, by site: its first attached claim
/// that is verified and live (of an apex and its `www` both attached, the
/// one the other redirects to). The router's redirects from `/{site}/` and
/// the canonical URLs of the site's pages both follow it.
pub fn primary_domains(claims: &[DomainRow]) -> std::collections::BTreeMap<&str, &str> {
    let mut first: std::collections::BTreeMap<&str, (i64, &str)> = std::collections::BTreeMap::new();
    for d in claims.iter().filter(|d| d.verified.is_some() && d.live.is_some()) {
        let candidate = (d.created, d.host.as_str());
        first.entry(&d.site).and_modify(|f| *f = (*f).min(candidate)).or_insert(candidate);
    }
    first.into_iter().map(|(site, (_, host))| (site, host)).collect()
}

/// What a DNS check of a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainCheck {
    /// The TXT record holds the claim's token.
    pub proven: bool,
    /// The host resolves to the platform.
    pub points_here: bool,
    /// What is wrong, in words (`None`: nothing).
    pub problem: Option<String>,
}

/// A host's certificate (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateRow {
    /// The host it is for.
    pub host: String,
    /// The certificate chain, leaf first.
    pub chain: String,
    /// The private key.
    pub key: String,
    /// When it expires (Unix seconds).
    pub not_after: i64,
    /// When it was issued (Unix seconds).
    pub issued: i64,
    /// Since when the host has had a certificate (Unix seconds): kept when
    /// one replaces another, so HSTS can wait until HTTPS has held a while.
    pub first_issued: i64,
}

/// A host whose last certificate order failed (`acme_hosts` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeHost {
    /// The host.
    pub host: String,
    /// Orders failed in a row.
    pub failures: u32,
    /// When it may be ordered again (Unix seconds).
    pub retry_at: i64,
    /// Why the last one failed, in words.
    pub problem: String,
}

impl std::fmt::Debug for CertificateRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CertificateRow").field("host", &self.host).field("not_after", &self.not_after).finish()
    }
}

/// Custom domains: sites' claims on hosts, their DNS checks, and the
/// certificates ordered for them.
#[async_trait]
pub trait DomainStore: Send + Sync {
    /// Records a claim; `false` if the site claims the host already.
    async fn attach_domain(&self, row: &DomainRow) -> Result<bool>;
    /// The claims of a site, oldest first.
    async fn domains_of(&self, site: &str) -> Result<Vec<DomainRow>>;
    /// A site's claim on a host.
    async fn domain(&self, host: &str, site: &str) -> Result<Option<DomainRow>>;
    /// Drops a site's claim; whether there was one. The host's certificate
    /// (and its key) goes with the last verified claim.
    async fn detach_domain(&self, host: &str, site: &str) -> Result<bool>;
    /// Records a check of a claim at `now`, in one transaction: a proven
    /// claim becomes the host's verified one (another site's verified claim
    /// on the host loses its verification, with a problem saying so); an
    /// unproven one keeps a verification it had (DNS answers come and go)
    /// but is no longer live. Returns the claim as it now stands.
    async fn record_domain_check(
        &self,
        host: &str,
        site: &str,
        check: &DomainCheck,
        now: i64,
    ) -> Result<Option<DomainRow>>;
    /// Claims not verified or not live yet, least recently checked first.
    async fn domains_to_check(&self, limit: u32) -> Result<Vec<DomainRow>>;
    /// The verified claims: host → site.
    async fn verified_domains(&self) -> Result<Vec<DomainRow>>;
    /// Stores a host's certificate (replacing the one it had, keeping its
    /// `first_issued`) and forgets the host's failed orders, in one
    /// transaction, if a claim on the host is still verified; whether it
    /// did (a domain removed while its order ran gets none).
    async fn put_certificate(&self, certificate: &CertificateRow) -> Result<bool>;
    /// The certificates of hosts with a verified claim.
    async fn certificates(&self) -> Result<Vec<CertificateRow>>;
    /// A host's certificate's `(issued, not_after)`, while a claim on it is verified.
    async fn certificate_dates(&self, host: &str) -> Result<Option<(i64, i64)>>;

    /// The ACME account stored for `directory` (credentials, as written).
    async fn acme_account(&self, directory: &str) -> Result<Option<String>>;
    /// Stores an account for `directory` unless one is stored already;
    /// returns the one stored (another issuer's, if it was first).
    async fn put_acme_account(&self, directory: &str, credentials: &str, now: i64) -> Result<String>;
    /// Hosts that need a certificate at `now`: a claim on them verified and
    /// live, no failed order to wait for, and no certificate or one due for
    /// renewal (expiring within `renew_seconds`, and past two thirds of its
    /// life, so a short-lived one is not renewed at once); the most urgent
    /// first.
    async fn hosts_to_certify(&self, now: i64, renew_seconds: i64, limit: u32) -> Result<Vec<String>>;
    /// Records an order for `host` placed at `now` if fewer than `budget`
    /// were placed since `since` (dropping older ones), in one transaction;
    /// whether it was.
    async fn place_order(&self, host: &str, now: i64, since: i64, budget: u32) -> Result<bool>;
    /// The orders placed since `since`: `(host, placed)`, oldest first.
    async fn orders_since(&self, since: i64) -> Result<Vec<(String, i64)>>;
    /// The host's failed orders, if its last one failed.
    async fn acme_host(&self, host: &str) -> Result<Option<AcmeHost>>;
    /// Records the host's failed orders.
    async fn put_acme_host(&self, row: &AcmeHost) -> Result<()>;
    /// Stores the HTTP-01 answer for `token`, for `host`.
    async fn put_challenge(&self, token: &str, host: &str, key_authorization: &str, now: i64) -> Result<()>;
    /// The answer for `token`: `(host, key_authorization)`.
    async fn challenge(&self, token: &str) -> Result<Option<(String, String)>>;
    /// Drops the answer for `token`.
    async fn drop_challenge(&self, token: &str) -> Result<()>;
    /// Stores the TLS-ALPN-01 answer for `host`: a certificate and its key (PEM).
    async fn put_alpn_challenge(&self, host: &str, chain: &str, key: &str, now: i64) -> Result<()>;
    /// The TLS-ALPN-01 answer for `host`: `(chain, key)`.
    async fn alpn_challenge(&self, host: &str) -> Result<Option<(String, String)>>;
    /// Drops the TLS-ALPN-01 answer for `host`.
    async fn drop_alpn_challenge(&self, host: &str) -> Result<()>;
}

/// Documents: imports, writes, snapshots, search and published versions.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Starts a bulk import.
    async fn begin_import(&self) -> Result<Box<dyn ImportTx>>;
    /// The latest written state of a document, with its owning account.
    async fn document(&self, key: &DocKey) -> Result<Option<Stored>>;
    /// Starts a batch of document writes whose events become due per `debounce`.
    async fn begin_write(&self, debounce: Debounce) -> Result<Box<dyn WriteTx>>;
    /// Documents whose id or owner is `query`, or whose fields contain it
    /// (case-insensitive; an empty query matches all), in `collection` or
    /// any, latest updated first (ties in any order).
    async fn find_documents(&self, collection: Option<&str>, query: &str, limit: u32) -> Result<Vec<Document>>;
    /// The documents an account owns, by collection and id, at most `limit`.
    async fn documents_of(&self, account: AccountId, limit: u32) -> Result<Vec<Document>>;
    /// Rebuilds the path claims from the latest documents when `fingerprint`
    /// (of the document routes that compute paths) differs from the one they
    /// were built with; `paths_of` gives a document's paths. A path several
    /// documents produce goes to a taken-down one first, then by key (as the
    /// site model decides). Returns whether it rebuilt. One transaction:
    /// writes wait for it.
    async fn reindex_paths(
        &self,
        fingerprint: &str,
        paths_of: &(dyn for<'d> Fn(&'d Document) -> Vec<String> + Send + Sync),
    ) -> Result<bool>;
    /// Which of these documents are taken down now (latest written state).
    async fn taken_down(&self, keys: &[DocKey]) -> Result<Vec<DocKey>>;
    /// Published states of a document, newest first.
    async fn versions(&self, key: &DocKey, limit: u32) -> Result<Vec<Version>>;
    /// A document as published by generation `generation` (the newest version
    /// at or before it); `None` if no version is kept.
    async fn version_at(&self, key: &DocKey, generation: u64) -> Result<Option<Version>>;
    /// The latest written documents with history, read consistently.
    async fn latest_snapshot(&self) -> Result<Snapshot>;
    /// The published documents with history, read consistently.
    async fn published_snapshot(&self) -> Result<Snapshot>;
    /// The published documents alone, without their history (sequence
    /// numbers, former paths): for a model that numbers nothing, which
    /// need not read a row per number only to drop it.
    async fn published_documents(&self) -> Result<Vec<Document>>;
}

/// Drafts, schedules and preview links, read outside a write (writes go
/// through [`WriteTx`], where ownership is checked).
#[async_trait]
pub trait DraftStore: Send + Sync {
    /// The draft of a document.
    async fn draft(&self, key: &DocKey) -> Result<Option<DraftRow>>;
    /// The drafts of an account (`None`: the admins' and the operator's),
    /// latest saved first.
    async fn drafts_of(&self, account: Option<AccountId>, limit: u32) -> Result<Vec<DraftRow>>;
    /// The schedules of a document.
    async fn schedules(&self, key: &DocKey) -> Result<Vec<ScheduleRow>>;
    /// The schedules an account has set (refused ones included), at most
    /// `limit`, earliest due first.
    async fn schedules_of(&self, account: AccountId, limit: u32) -> Result<Vec<ScheduleRow>>;
    /// Up to `limit` schedules due at `due_by` (ms) or earlier, earliest first.
    async fn due_schedules(&self, due_by: i64, limit: u32) -> Result<Vec<ScheduleRow>>;
    /// Records why a schedule's change was refused; it is no longer due.
    async fn fail_schedule(&self, key: &DocKey, action: ScheduleAction, due: i64, error: &str) -> Result<()>;
    /// Stores a preview link.
    async fn add_preview_link(&self, link: &PreviewLinkRow) -> Result<()>;
    /// The link whose token hashes to `hash`, unless it expired before `now` (s).
    async fn preview_link(&self, hash: &str, now: i64) -> Result<Option<PreviewLinkRow>>;
    /// The links of a document's draft.
    async fn preview_links(&self, key: &DocKey) -> Result<Vec<PreviewLinkRow>>;
    /// Revokes the link of `key` whose hash starts with `id` (its public id);
    /// whether there was one.
    async fn revoke_preview_link(&self, key: &DocKey, id: &str) -> Result<bool>;
}

/// Change events: the queue the publisher reads and what became of each change.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Up to `limit` pending events due at `due_by` (ms) or earlier, oldest
    /// first, with their documents.
    async fn pending(&self, limit: u32, due_by: i64) -> Result<Pending>;
    /// The earliest due time (ms) of any pending event.
    async fn next_due(&self) -> Result<Option<i64>>;
    /// Makes the pending events of these documents due now.
    async fn force_due(&self, keys: &[DocKey]) -> Result<u64>;
    /// An event by id.
    async fn event(&self, id: i64) -> Result<Option<EventInfo>>;
    /// Marks events as failed with the reason.
    async fn fail_events(&self, ids: &[i64], error: &str) -> Result<()>;
    /// The latest events that failed to publish, newest first.
    async fn failed_events(&self, limit: u32) -> Result<Vec<EventInfo>>;
    /// Published documents changed by generations after `after`.
    async fn published_changes(&self, after: u64) -> Result<PublishedChanges>;
    /// Number of pending events.
    async fn pending_events(&self) -> Result<u64>;
}

/// The [`GenerationStore::meta`] key garbage collection records the oldest
/// retained generation under.
pub const OLDEST_RETAINED: &str = "oldest_retained";

/// Generations: commits (each records its manifest root, which is the
/// published path table), garbage collection and leases.
#[async_trait]
pub trait GenerationStore: Send + Sync {
    /// The oldest generation retention keeps (its manifest root with it):
    /// what the last garbage collection decided (1 before any ran).
    async fn oldest_retained(&self) -> Result<u64> {
        Ok(self.meta(OLDEST_RETAINED).await?.and_then(|v| v.parse().ok()).unwrap_or(1))
    }
    /// Decides the oldest retained generation, drops the document versions no
    /// retained generation needs and forgets media nothing refers to any more
    /// (released before `retain.released_before`).
    async fn collect_garbage(&self, retain: Retain) -> Result<Collected>;
    /// Takes (or renews) lease `name` for `holder` for `ttl_ms`; `false` when
    /// another holder has it.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool>;
    /// Gives up a lease.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// New generations as other processes commit them, when the backend can
    /// push them (PostgreSQL); `None` means: poll.
    async fn watch_generations(&self) -> Option<tokio::sync::mpsc::Receiver<u64>>;
    /// Whether the per-page tables of an earlier version (`pointers`,
    /// `pointer_history`, `objects`) are still there: the engine turns them
    /// into manifest roots, then drops them ([`Self::drop_legacy_rows`]).
    async fn legacy_rows(&self) -> Result<bool>;
    /// Every pointer that served something in generation `generation`, from
    /// those tables.
    async fn legacy_pointers_as_of(&self, generation: u64) -> Result<Vec<Pointer>>;
    /// Drops those tables.
    async fn drop_legacy_rows(&self) -> Result<()>;
    /// The generation live at `time` (Unix seconds): the newest committed
    /// then (0: none).
    async fn generation_at(&self, time: i64) -> Result<u64>;
    /// The newest generation (0 before the first build).
    async fn latest_generation(&self) -> Result<u64>;
    /// A setting the engine keeps beside the generations (`None` when unset),
    /// such as what the last full build rendered with.
    async fn meta(&self, key: &str) -> Result<Option<String>>;
    /// Records one.
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    /// Generation records, newest first.
    async fn generations(&self, limit: u32) -> Result<Vec<Generation>>;
    /// The newest generation and the blob name of the manifest root it
    /// published, if it recorded one ((0, None) before the first build).
    async fn latest_root(&self) -> Result<(u64, Option<String>)>;
    /// The manifest root generation `generation` recorded (`None`: no such
    /// generation, or one committed before roots were recorded).
    async fn root_of(&self, generation: u64) -> Result<Option<String>>;
    /// The manifest roots of generation `from` and every newer one, oldest
    /// first (generations that recorded none are left out).
    async fn roots_since(&self, from: u64) -> Result<Vec<String>>;
    /// Records the manifest root of a committed generation again (after the
    /// manifest was rewritten whole).
    async fn set_root(&self, generation: u64, root: &str) -> Result<()>;
    /// Commits a generation; returns its number.
    async fn commit(&self, commit: Commit) -> Result<u64>;
    /// Finishes what the store defers: SQLite copies its WAL into the database
    /// file (the serving roles do it every second; a short command does it
    /// here, so its cost shows up in the command that caused it).
    async fn close(&self) -> Result<()>;
}

/// Accounts, API tokens, passwords and dashboard sessions (hashes only).
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account with its first credential (stored as a hash),
    /// unless the handle is taken or content already names it: documents
    /// whose owner is the handle, or the document `handle` of collection
    /// `sites`.
    async fn create_account(
        &self,
        handle: &str,
        role: Role,
        credential: Credential<'_>,
        sites: Option<&str>,
    ) -> Result<Registration>;
    /// The operator hands content over: creates the account `handle` if it
    /// does not exist, adds a token, and gives it every document nobody owns
    /// whose owner is the handle (or that is its site in `sites`).
    async fn claim_account(&self, handle: &str, token_hash: &str, sites: Option<&str>) -> Result<Claimed>;
    /// The account a token (by hash) belongs to.
    async fn account_by_token(&self, token_hash: &str) -> Result<Option<Account>>;
    /// Adds an API token (by hash) to an account.
    async fn add_token(&self, account: AccountId, token_hash: &str, label: &str) -> Result<()>;
    /// An account's API tokens, newest first.
    async fn tokens(&self, account: AccountId) -> Result<Vec<TokenRow>>;
    /// Revokes one of an account's tokens; false when it has no such token.
    async fn revoke_token(&self, account: AccountId, token_hash: &str) -> Result<bool>;
    /// Sets an account's password (a PHC string); false when there is no
    /// such account. Ends the account's sessions.
    async fn set_password(&self, handle: &str, password_hash: &str) -> Result<bool>;
    /// An account and its password hash (None: it has no password), to log in.
    async fn account_for_login(&self, handle: &str) -> Result<Option<(Account, Option<String>)>>;
    /// Starts a session (by the hash of its cookie value) until `expires`
    /// (Unix seconds). An account keeps at most [`MAX_SESSIONS`]: the
    /// oldest end first.
    async fn start_session(&self, session_hash: &str, account: AccountId, expires: i64) -> Result<()>;
    /// The account of a session that has not expired.
    async fn session_account(&self, session_hash: &str) -> Result<Option<Account>>;
    /// Ends one session.
    async fn end_session(&self, session_hash: &str) -> Result<()>;
    /// Ends every session of an account; returns how many there were.
    async fn end_sessions(&self, account: AccountId) -> Result<u64>;
}

/// Uploaded media, owners, quotas and resized copies.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Records an uploaded medium (already durable in object storage) and its
    /// owner, unless the owner's media would then exceed `quota` bytes. The
    /// same bytes uploaded again, or by another account, are one medium.
    async fn add_media(&self, row: &MediaRow, account: Option<AccountId>, quota: Option<u64>) -> Result<MediaAdded>;
    /// Records many media at once, owned by nobody (the operator's: imported
    /// content, a demo), in one transaction.
    async fn add_media_many(&self, rows: &[MediaRow]) -> Result<()>;
    /// Media whose resized variants are not made yet, oldest first.
    async fn pending_media(&self, limit: u32) -> Result<Vec<MediaRow>>;
    /// Records that a medium's variants (these widths) are durable.
    async fn media_variants_made(&self, hash: &str, widths: &[u32]) -> Result<()>;
    /// The media among `hashes`, each with whether `account` owns it.
    async fn media(&self, hashes: &[String], account: Option<AccountId>) -> Result<Vec<(MediaRow, bool)>>;
}

/// Opens the store named by a URL (`sqlite://PATH` or `postgres://…`),
/// creating (SQLite) and migrating it.
pub async fn open(url: &str) -> Result<Arc<dyn MetaStore>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

/// Waits for new generations committed by any process: at once when the
/// store announces them (PostgreSQL), and every `interval` in any case, in
/// case an announcement is missed or the store cannot announce.
pub struct GenerationWatch {
    announced: Option<tokio::sync::mpsc::Receiver<u64>>,
    tick: tokio::time::Interval,
}

impl GenerationWatch {
    /// Starts watching `store`.
    pub async fn new(store: &dyn MetaStore, interval: std::time::Duration) -> GenerationWatch {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        GenerationWatch { announced: store.watch_generations().await, tick }
    }

    /// Returns when a generation was announced or the interval elapsed.
    pub async fn next(&mut self) {
        match &mut self.announced {
            Some(rx) => {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { self.announced = None },
                    _ = self.tick.tick() => {}
                }
            }
            None => {
                self.tick.tick().await;
            }
        }
    }
}
