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
}

impl Default for Publish {
    fn default() -> Self {
        Publish { compress: true, max_age: 60, stale_while_revalidate: 600 }
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
    /// `SESAME_STORAGE_URL`. `get` looks a variable up (a parameter so that tests
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
        Ok(())
    }

    /// The route named `name`, if any.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}
