//! The project configuration, `sesame.toml`.
//!
//! This crate owns the file format and its validation: it turns TOML text into a
//! [`Config`] whose every route is typed and checked (collections exist, schemes
//! fit their options, path patterns are well formed), or into a [`ConfigError`]
//! that names the file, the key and what is wrong. It knows nothing about
//! documents, storage or HTTP.
//!
//! Values are layered: built-in defaults, then the file, then `SESAME_*`
//! environment variables (see [`Config::apply_env`]).

mod pattern;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use pattern::{PathPattern, Placeholder, Segment};

/// The name of the configuration file inside a project directory.
pub const CONFIG_FILE: &str = "sesame.toml";

/// Upper bound on URLs per sitemap file, from the sitemaps.org protocol.
pub const SITEMAP_PROTOCOL_MAX: u32 = 50_000;

/// A validated project configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Absolute site URL without a trailing slash, e.g. `https://example.org`.
    pub base_url: String,
    /// Human-readable site title, available to templates as `site.title`.
    pub title: String,
    /// One sentence on the site, for link previews and feeds
    /// (`site.description`).
    pub description: String,
    /// Metadata database URL; `None` means the embedded SQLite file.
    pub database_url: Option<String>,
    /// Object storage URL; `None` means the embedded local directory.
    pub storage_url: Option<String>,
    /// Declared collections by name.
    pub collections: BTreeMap<String, Collection>,
    /// Route families in declaration order.
    pub routes: Vec<Route>,
    /// Publishing settings.
    pub publish: Publish,
    /// The HTTP API.
    pub api: Api,
    /// The change queue.
    pub queue: Queue,
    /// CDN purge.
    pub purge: Purge,
    /// What is kept for versions and rollback, and garbage collection.
    pub retention: Retention,
    /// Serving.
    pub serve: Serve,
    /// Serving from an edge Worker that reads object storage.
    pub edge: Edge,
    /// Uploaded images.
    pub media: MediaConfig,
    /// The site-owner dashboard.
    pub dashboard: Dashboard,
    /// Custom domains.
    pub domains: Domains,
}

/// Custom domains (`[domains]`): where owners point their hosts, and how
/// sesame checks that they did.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Domains {
    /// The host a custom subdomain's CNAME names (e.g. `sites.example.net`).
    pub cname_target: Option<String>,
    /// The addresses a custom apex's A / AAAA records hold.
    pub addresses: Vec<std::net::IpAddr>,
    /// The DNS server to ask (`host:port`); none: the system's resolver.
    pub resolver: Option<std::net::SocketAddr>,
    /// Hosts a site may claim.
    pub per_site: u32,
    /// How often claims not live yet are checked again, in seconds.
    pub check_seconds: u64,
    /// Where `serve` and `router` also answer HTTPS for verified domains
    /// with a certificate (e.g. `0.0.0.0:443`); none: no HTTPS.
    pub https_listen: Option<std::net::SocketAddr>,
    /// Certificates ordered from an ACME authority; none: certificates come
    /// from elsewhere (or there is no HTTPS).
    pub acme: Option<Acme>,
}

/// Ordering certificates for verified custom domains (`[domains.acme]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Acme {
    /// The authority's directory URL.
    pub directory: String,
    /// Contact addresses for the account (`mailto:…`).
    pub contact: Vec<String>,
    /// A PEM file of the authority that signs the directory's HTTPS
    /// certificate, when it is not publicly trusted (a test authority
    /// such as Pebble); relative to the project directory or absolute.
    pub root_certificate: Option<PathBuf>,
    /// Orders placed at most per `window_hours`, across all hosts.
    pub orders_per_window: u32,
    /// The budget's window, in hours.
    pub window_hours: u32,
    /// How many days before expiry a certificate is renewed.
    pub renew_days: u32,
    /// The wait after a host's first failed order, in seconds; doubled
    /// after each further failure, up to a day.
    pub retry_seconds: u64,
    /// How a host's control is proven to the authority.
    pub challenge: AcmeChallenge,
}

/// The ACME challenge answered (`[domains.acme] challenge`); the router
/// answers either itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum AcmeChallenge {
    /// A file at `http://<host>/.well-known/acme-challenge/` (port 80).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A certificate offered in the TLS handshake (port 443), for where port 80 is closed.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            contact: Vec::new(),
            root_certificate: None,
            orders_per_window: 100,
            window_hours: 3,
            renew_days: 30,
            retry_seconds: 300,
            challenge: AcmeChallenge::Http01,
        }
    }
}

impl Default for Domains {
    fn default() -> Self {
        Domains {
            cname_target: None,
            addresses: Vec::new(),
            resolver: None,
            per_site: 4,
            check_seconds: 60,
            https_listen: None,
            acme: None,
        }
    }
}

impl Domains {
    /// Whether owners may attach domains: the platform says where to point them.
    pub fn enabled(&self) -> bool {
        self.cname_target.is_some() || !self.addresses.is_empty()
    }
}

/// The site-owner dashboard (`[dashboard]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dashboard {
    /// Who may sign in.
    pub access: DashboardAccess,
    /// Where it is mounted: `/NAME/`, a first path segment no route uses.
    pub path: String,
    /// How long a sign-in lasts, in hours.
    pub session_hours: u32,
    /// Sign-in attempts per hour, per client address and per handle.
    pub logins_per_hour: u32,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard { access: DashboardAccess::Admins, path: "/_/".into(), session_hours: 24 * 14, logins_per_hour: 20 }
    }
}

/// Who may sign in to the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DashboardAccess {
    /// Nobody: the dashboard is not mounted.
    Off,
    /// Admin accounts only (the moderation console); nobody signs up.
    Admins,
    /// Everyone: people sign up and edit their own site (needs `[api] sites`).
    Everyone,
}

/// Uploaded images (`[media]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest accepted upload, in bytes (413 beyond).
    pub max_bytes: usize,
    /// Bytes of media an account may own (422 beyond).
    pub quota_mb: u64,
    /// Largest accepted image, in pixels (width × height).
    pub max_pixels: u64,
    /// Uploads per account and hour.
    pub uploads_per_hour: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig { max_bytes: 10 << 20, quota_mb: 200, max_pixels: 40_000_000, uploads_per_hour: 120 }
    }
}

/// A secret string: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The HTTP API (`[api]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Collection holding one site document per account, with the account's
    /// handle as id and owner (enables `/api/sites/{handle}`).
    pub sites: Option<String>,
    /// Accepted writes per account and hour; past it, 429 with `Retry-After`.
    pub max_updates_per_hour: u32,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Admin token (prefer `SESAME_ADMIN_TOKEN`).
    pub admin_token: Option<Secret>,
    /// Handles nobody may sign up with, besides the built-in ones and the first
    /// path segments of the site's routes.
    pub reserved_handles: Vec<String>,
    /// Sign-ups per client address and hour.
    pub signups_per_hour: u32,
    /// CDN invalidations an account may ask for per hour (each costs purge calls).
    pub invalidations_per_hour: u32,
    /// Change-status reads per account and minute (clients poll them).
    pub status_reads_per_minute: u32,
    /// Page previews per account and minute.
    pub previews_per_minute: u32,
    /// Site archives (exports and imports) per account and hour.
    pub archives_per_hour: u32,
    /// Largest archive an import accepts, in MiB (it unpacks to at most twice as much).
    pub archive_max_mb: u64,
    /// Longest an archive's upload may take, in seconds (a restore runs at a
    /// time, so a slow upload holds the others off this long at most).
    pub archive_upload_seconds: u64,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            sites: None,
            max_updates_per_hour: 600,
            max_body_bytes: 1 << 20,
            admin_token: None,
            reserved_handles: Vec::new(),
            signups_per_hour: 30,
            invalidations_per_hour: 12,
            status_reads_per_minute: 600,
            previews_per_minute: 120,
            archives_per_hour: 4,
            archive_max_mb: 256,
            archive_upload_seconds: 600,
        }
    }
}

/// The change queue (`[queue]`): when a change is published.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Queue {
    /// A document is published after this long without further changes.
    pub quiet_ms: u64,
    /// ... and at the latest this long after its first unpublished change.
    pub max_wait_ms: u64,
    /// Most events in one batch.
    pub batch_limit: u32,
}

impl Default for Queue {
    fn default() -> Self {
        Queue { quiet_ms: 2000, max_wait_ms: 60_000, batch_limit: 10_000 }
    }
}

/// Where changed URLs are purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeKind {
    /// No purge (the default).
    #[default]
    None,
    /// The Cloudflare `purge_cache` API (`url` is the zone's purge endpoint).
    Cloudflare,
    /// A generic webhook receiving `{"generation", "urls", "tags"}`.
    Webhook,
}

/// CDN purge (`[purge]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Purge {
    /// Which API.
    pub kind: PurgeKind,
    /// Endpoint, e.g. `https://api.cloudflare.com/client/v4/zones/ZONE/purge_cache`.
    pub url: Option<String>,
    /// Environment variable holding the bearer token.
    pub token_env: String,
    /// URLs (or tags) per call: Cloudflare accepts 30 on most plans.
    pub batch: u32,
    /// Attempts per call before it is counted as failed.
    pub attempts: u32,
}

impl Default for Purge {
    fn default() -> Self {
        Purge { kind: PurgeKind::None, url: None, token_env: "SESAME_PURGE_TOKEN".into(), batch: 30, attempts: 5 }
    }
}

/// Retention and garbage collection (`[retention]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Keep at least the newest N generations.
    pub generations: u32,
    /// Keep every generation younger than this many days.
    pub days: u32,
    /// An object unreferenced for less than this long is never deleted, so a
    /// reader in flight always finds it.
    pub grace_seconds: u64,
    /// How often `serve` collects garbage.
    pub gc_interval_seconds: u64,
    /// How often `serve` also sweeps storage for files no record refers to
    /// (it lists every object, so not at every collection).
    pub sweep_interval_hours: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            generations: 100,
            days: 30,
            grace_seconds: 3600,
            gc_interval_seconds: 600,
            sweep_interval_hours: 24,
        }
    }
}

/// The manifest's layout (`[edge]`): every publish writes the path table
/// into object storage, where the router and a Worker at the CDN read it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Edge {
    /// Ignored: the manifest is always written now (kept so that files
    /// that turned it on still load).
    pub manifest: Option<bool>,
    /// Entries (paths and objects) a manifest shard holds on average; the
    /// number of shards follows the site's size (a power of two).
    pub shard_entries: u32,
    /// Changed entries the root carries itself before they move to the
    /// base's delta.
    pub recent_entries: u32,
    /// Changed entries the base's delta holds before they are folded into the
    /// shards (a checkpoint).
    pub delta_entries: u32,
}

impl Default for Edge {
    fn default() -> Self {
        Edge { manifest: None, shard_entries: 256, recent_entries: 256, delta_entries: 16_384 }
    }
}

/// Default `Content-Security-Policy` of HTML pages: no scripts but the site's
/// own, no plugins, no framing.
pub const DEFAULT_CSP: &str = "default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; \
script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Serving (`[serve]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Serve {
    /// Host mode: requests for `HANDLE.SUFFIX` serve `/HANDLE/…` (recommended:
    /// user content on its own registrable domain).
    pub host_suffix: Option<String>,
    /// Serve `PATH?v=GENERATION` as the page was in that generation.
    pub versioned_urls: bool,
    /// `Content-Security-Policy` sent with HTML pages (empty: none).
    pub csp: String,
    /// Memory for page bodies the router keeps (MiB; 0: read every request
    /// from storage). Objects are immutable, so the cache never goes stale.
    pub cache_mb: u64,
    /// Compress text bodies stored without variants on request (gzip or
    /// brotli, kept in the cache above).
    pub compress: bool,
    /// Memory for pages rendered on request (deep pages and feeds of `head`
    /// listings), MiB. They live only there: nothing is stored.
    pub on_request_cache_mb: u64,
    /// Most HTTP connections open at once (lowered to fit the open-file
    /// limit). Above three quarters of it responses carry `Connection:
    /// close`; at the cap a newcomer takes a slow head's place or waits.
    pub max_connections: usize,
    /// Seconds a client has to send a whole request head once it began.
    pub header_timeout_seconds: u64,
    /// Seconds a connection stays open with nothing moving and no request in flight.
    pub idle_timeout_seconds: u64,
    /// Seconds a client may keep an answered connection for its next
    /// request, announced as `Keep-Alive: timeout=N` (at most the idle
    /// timeout less one).
    pub keep_alive_seconds: u64,
    /// Seconds requests in flight get to finish when the process is stopped.
    pub shutdown_timeout_seconds: u64,
}

impl Default for Serve {
    fn default() -> Self {
        Serve {
            host_suffix: None,
            versioned_urls: true,
            csp: DEFAULT_CSP.to_string(),
            cache_mb: 64,
            compress: true,
            on_request_cache_mb: 16,
            max_connections: 1024,
            header_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            keep_alive_seconds: 5,
            shutdown_timeout_seconds: 10,
        }
    }
}

/// Field roles of a collection: which document field plays which part.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collection {
    /// Field holding the title (may be empty in a document).
    pub title: Option<String>,
    /// Field holding the document date (`YYYY-MM-DD` or RFC 3339).
    pub date: Option<String>,
    /// Field holding a list of tags.
    pub tags: Option<String>,
    /// Field naming the owner's handle; without it the owner comes from the writer.
    pub owner: Option<String>,
    /// Field holding a URL slug.
    pub slug: Option<String>,
    /// Fields holding markdown; `a.b` means field `b` of each element of list `a`.
    pub markdown: Vec<String>,
    /// Which documents an account (not an admin) may create.
    pub create: CreatePolicy,
    /// JSON Schema (draft 2020-12) of the documents, a file relative to the
    /// project directory.
    pub schema: Option<PathBuf>,
}

/// Which new documents of a collection an account may create through the
/// API. Admins may create any; existing documents are edited by the account
/// that owns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CreatePolicy {
    /// Only the document whose id is the account's own handle (one site per
    /// account). The default of the `[api] sites` collection.
    OwnHandle,
    /// Any new id; the account owns what it creates (a gallery's items).
    Any,
    /// None: only admins create documents (the default).
    #[default]
    Admin,
}

/// A route family: a kind of output page.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Stable identifier, used to key persisted state (sequence numbers) and in
    /// template helpers such as `group_url("tags", tag)`.
    pub name: String,
    /// What kind of pages the route produces.
    pub kind: RouteKind,
}

/// The kinds of route families.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteKind {
    /// One page per document.
    Document(DocumentRoute),
    /// Documents of a collection, optionally grouped, in an order, paginated.
    Listing(ListingRoute),
    /// A page that depends only on the configuration and templates (home, 404).
    Page(PageRoute),
    /// The sitemap index and its chunks.
    Sitemap(SitemapRoute),
    /// `robots.txt`.
    Robots(RobotsRoute),
}

/// One page per document of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRoute {
    /// The collection whose documents get pages.
    pub collection: String,
    /// Path pattern such as `/sprites/{id}/` or `/{owner}/`.
    pub path: PathPattern,
    /// Template file name inside `templates/`.
    pub template: String,
    /// Whether the pages are listed in the sitemap.
    pub sitemap: bool,
    /// Feeds of each document's entries (`PAGEindex.xml`, `PAGEindex.json`).
    pub feeds: Vec<FeedFormat>,
    /// The list field whose elements are a document's feed entries (a
    /// micro-site's `sections`): objects (titled by their `heading`,
    /// `title` or `name`) or strings.
    pub feed_entries: Option<String>,
}

/// A paginated listing of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct ListingRoute {
    /// The listed collection.
    pub collection: String,
    /// Path of the first page; contains `{group}` when `group_by` is set.
    pub path: PathPattern,
    /// Template file name inside `templates/`.
    pub template: String,
    /// What to group by: `tags`, `owner`, or a field name.
    pub group_by: Option<GroupBy>,
    /// Display order of documents.
    pub order: Order,
    /// Documents per page.
    pub page_size: u32,
    /// How pages are cut.
    pub scheme: Scheme,
    /// For `offset` listings: a group with more live documents than this moves to
    /// the `stable` scheme for good.
    pub hot_threshold: Option<u32>,
    /// The feeds of each group's newest documents (`BASEindex.xml`,
    /// `BASEindex.json`); none by default.
    pub feeds: Vec<FeedFormat>,
    /// Documents in a feed.
    pub feed_size: u32,
}

/// A feed of a listing group's newest documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// Atom (RFC 4287), at `BASEindex.xml`.
    Atom,
    /// JSON Feed 1.1, at `BASEindex.json`.
    Json,
}

impl FeedFormat {
    /// The feed's file below the group's base path.
    pub fn file(self) -> &'static str {
        match self {
            FeedFormat::Atom => "index.xml",
            FeedFormat::Json => "index.json",
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            FeedFormat::Atom => "application/atom+xml",
            FeedFormat::Json => "application/feed+json",
        }
    }

    /// Its label in dependency keys.
    pub fn tag(self) -> &'static str {
        match self {
            FeedFormat::Atom => "atom",
            FeedFormat::Json => "jsonfeed",
        }
    }
}

/// What a listing groups its documents by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// The collection's tags role: one group per tag.
    Tags,
    /// The document owner: one group per owner.
    Owner,
    /// Any field: one group per value (or per element of a list).
    Field(String),
}

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Newest date first, ties broken by id (descending).
    Newest,
    /// Oldest date first, ties broken by id.
    Oldest,
    /// By title (case-insensitive), ties broken by id.
    Title,
}

/// Pagination scheme of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Page N holds items (N-1)·size..N·size of the order.
    Offset,
    /// Fixed page boundaries from append-only sequence numbers.
    Stable,
    /// Buckets by year and month of the document date.
    Date,
    /// Only the first page is pre-rendered; the rest is served from a cursor.
    Head,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Offset => "offset",
            Scheme::Stable => "stable",
            Scheme::Date => "date",
            Scheme::Head => "head",
        })
    }
}

/// A page rendered from a template that does not depend on content.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRoute {
    /// The page path, e.g. `/` or `/404.html`.
    pub path: String,
    /// Template file name inside `templates/`.
    pub template: String,
}

/// The sitemap: `/sitemap.xml` (an index) and `/sitemaps/N.xml` chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct SitemapRoute {
    /// URLs per chunk file, at most 50,000.
    pub chunk_size: u32,
}

/// `robots.txt`, from a template or a built-in default that names the sitemap.
#[derive(Debug, Clone, PartialEq)]
pub struct RobotsRoute {
    /// Optional template file name inside `templates/`.
    pub template: Option<String>,
}

/// Publishing settings (`[publish]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Store gzip and brotli variants of text pages, compressed once at publish.
    pub compress: bool,
    /// `max-age` (seconds) of pages served at their plain path.
    pub max_age: u32,
    /// `stale-while-revalidate` (seconds) of pages served at their plain path.
    pub stale_while_revalidate: u32,
    /// The publish lease's time: a publisher that dies (even by `kill -9`)
    /// is taken over within it. Its holder renews it every third of it.
    pub lease_seconds: u32,
    /// Memory (MB) for the rendered partials of `partial_cached`.
    pub partial_cache_mb: u32,
}

impl Default for Publish {
    fn default() -> Self {
        Publish { compress: true, max_age: 60, stale_while_revalidate: 600, lease_seconds: 15, partial_cache_mb: 128 }
    }
}

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {key}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The offending key as a path, e.g. `routes[2].scheme`; `(file)` for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

impl Config {
    /// Reads and validates `sesame.toml` in `project_dir`, then applies `SESAME_*`
    /// environment overrides.
    pub fn load(project_dir: &Path) -> Result<Config, ConfigError> {
        let file = project_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
            line: None,
        })?;
        let mut config = Config::parse(&text, &file)?;
        config.apply_env(|k| std::env::var(k).ok()).map_err(|(key, message)| ConfigError {
            file: file.clone(),
            key,
            message,
            line: None,
        })?;
        Ok(config)
    }

    /// Parses and validates configuration text; `file` is used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        raw::parse(text, file)
    }

    /// Applies environment overrides: `SESAME_BASE_URL`, `SESAME_DATABASE_URL`,
    /// `SESAME_STORAGE_URL`, `SESAME_ADMIN_TOKEN`. `get` looks a variable up (a parameter so that tests
    /// need not touch the process environment). Returns the variable name and
    /// the problem on a bad value.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), (String, String)> {
        if let Some(url) = get("SESAME_BASE_URL") {
            self.base_url = raw::validate_base_url(&url).map_err(|m| ("SESAME_BASE_URL".into(), m))?;
        }
        if let Some(url) = get("SESAME_DATABASE_URL") {
            self.database_url = Some(url);
        }
        if let Some(url) = get("SESAME_STORAGE_URL") {
            self.storage_url = Some(url);
        }
        if let Some(token) = get("SESAME_ADMIN_TOKEN").filter(|t| !t.is_empty()) {
            self.api.admin_token = Some(Secret(token));
        }
        Ok(())
    }

    /// The route named `name`, if any.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}
