//! The configuration compiled for fast lookups, and the questions about paths
//! and fields that depend only on configuration.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sesame_config::{Collection, Config, DocumentRoute, GroupBy, ListingRoute, Order, Placeholder, RouteKind, Scheme};
use sesame_model::slug::{slugify, validate_id};
use sesame_model::{Document, time};

use crate::order::{Bucket, IdOrd, SortKey};
use crate::schema::{Schema, SchemaError};

/// Index of a route in `Config::routes`.
pub type RouteIx = u16;

/// Path prefix under which files of the project's `static/` folder are published.
pub const STATIC_PREFIX: &str = "/static/";

/// A validated configuration plus lookup tables derived from it.
#[derive(Debug)]
pub struct Site {
    /// The configuration.
    pub config: Config,
    doc_routes: HashMap<String, Vec<RouteIx>>,
    listing_routes: Vec<RouteIx>,
    sitemap: Option<RouteIx>,
    /// Whether documents' own pages are resolved (and so who wins a
    /// contested path is tracked); not for pages on request.
    pages_documents: bool,
    /// Compiled JSON Schemas of the collections that declare one.
    pub(crate) schemas: BTreeMap<String, Schema>,
}

impl Site {
    /// Compiles a configuration and the JSON Schemas of its collections (by
    /// collection name; each as read from the file the collection names).
    pub fn with_schemas(
        config: Config,
        schemas: BTreeMap<String, serde_json::Value>,
    ) -> Result<Arc<Site>, SchemaError> {
        let mut site = Arc::into_inner(Site::new(config)).expect("a new site has no other owner");
        for (collection, source) in schemas {
            let schema = Schema::compile(&collection, source)?;
            site.schemas.insert(collection, schema);
        }
        Ok(Arc::new(site))
    }

    /// The JSON Schema of a collection's documents, as declared.
    pub fn schema(&self, collection: &str) -> Option<&serde_json::Value> {
        self.schemas.get(collection).map(|s| &s.source)
    }

    /// The schema a merge patch of the collection's documents must match
    /// (derived from its declared schema), if it declares one.
    pub fn patch_schema(&self, collection: &str) -> Option<&serde_json::Value> {
        self.schemas.get(collection).map(|s| &s.patch_source)
    }

    /// Compiles a configuration without schemas.
    pub fn new(config: Config) -> Arc<Site> {
        let mut doc_routes: HashMap<String, Vec<RouteIx>> = HashMap::new();
        let mut listing_routes = Vec::new();
        let mut sitemap = None;
        for (i, r) in config.routes.iter().enumerate() {
            let ix = i as RouteIx;
            match &r.kind {
                RouteKind::Document(d) => doc_routes.entry(d.collection.clone()).or_default().push(ix),
                RouteKind::Listing(_) => listing_routes.push(ix),
                RouteKind::Sitemap(_) => sitemap = Some(ix),
                RouteKind::Page(_) | RouteKind::Robots(_) => {}
            }
        }
        Arc::new(Site { config, doc_routes, listing_routes, sitemap, pages_documents: true, schemas: BTreeMap::new() })
    }

    /// The same site narrowed to what pages rendered on request read: its
    /// `head` listings and document routes (for their items' paths), with
    /// no other listing, no sitemap, no document page (so no path claims)
    /// and no schema (nothing is written through it). Routes keep their
    /// indexes, so pages resolved by a [`SiteState`](crate::SiteState) over
    /// it render with this site's templates; the model it holds skips every
    /// index those pages never read.
    pub fn for_pages_on_request(&self) -> Arc<Site> {
        let head = |ix: &&RouteIx| self.listing_route(**ix).scheme == Scheme::Head;
        Arc::new(Site {
            config: self.config.clone(),
            doc_routes: self.doc_routes.clone(),
            listing_routes: self.listing_routes.iter().filter(head).copied().collect(),
            sitemap: None,
            pages_documents: false,
            schemas: BTreeMap::new(),
        })
    }

    /// Whether a model over this site resolves documents' own pages (and so
    /// tracks who wins each contested path): not when narrowed to pages on
    /// request.
    pub fn pages_documents(&self) -> bool {
        self.pages_documents
    }

    /// Route name of route `ix`.
    pub fn route_name(&self, ix: RouteIx) -> &str {
        &self.config.routes[ix as usize].name
    }

    /// A short name of a listing route for dependency keys.
    pub fn route_tag(&self, ix: RouteIx) -> String {
        slugify(self.route_name(ix)).unwrap_or_else(|| format!("r{ix}"))
    }

    /// The tags of the `head` listing routes, whose deep pages are rendered
    /// on request.
    pub fn head_route_tags(&self) -> Vec<String> {
        let head = |ix: &&RouteIx| self.listing_route(**ix).scheme == Scheme::Head;
        self.listing_routes.iter().filter(head).map(|&ix| self.route_tag(ix)).collect()
    }

    /// Every feed format some document route publishes.
    pub fn document_feeds(&self) -> std::collections::BTreeSet<sesame_config::FeedFormat> {
        let feeds = self.config.routes.iter().filter_map(|r| match &r.kind {
            RouteKind::Document(d) => Some(d.feeds.iter().copied()),
            _ => None,
        });
        feeds.flatten().collect()
    }

    /// The kind of route `ix`.
    pub fn route(&self, ix: RouteIx) -> &RouteKind {
        &self.config.routes[ix as usize].kind
    }

    /// Document route `ix`; panics if `ix` is not one (an internal invariant).
    pub fn document_route(&self, ix: RouteIx) -> &DocumentRoute {
        match self.route(ix) {
            RouteKind::Document(d) => d,
            other => unreachable!("route {ix} is not a document route: {other:?}"),
        }
    }

    /// Listing route `ix`; panics if `ix` is not one (an internal invariant).
    pub fn listing_route(&self, ix: RouteIx) -> &ListingRoute {
        match self.route(ix) {
            RouteKind::Listing(l) => l,
            other => unreachable!("route {ix} is not a listing route: {other:?}"),
        }
    }

    /// Document routes of a collection, in declaration order.
    pub fn doc_routes(&self, collection: &str) -> &[RouteIx] {
        self.doc_routes.get(collection).map(Vec::as_slice).unwrap_or_default()
    }

    /// All listing routes in declaration order.
    pub fn listing_routes(&self) -> &[RouteIx] {
        &self.listing_routes
    }

    /// The sitemap route, if declared.
    pub fn sitemap_route(&self) -> Option<RouteIx> {
        self.sitemap
    }

    /// The sitemap route's URLs per chunk, if declared.
    pub fn sitemap_chunk_size(&self) -> Option<u32> {
        match self.sitemap.map(|ix| self.route(ix)) {
            Some(RouteKind::Sitemap(s)) => Some(s.chunk_size),
            _ => None,
        }
    }

    /// The collection's field roles (empty roles for an undeclared collection).
    pub fn collection(&self, name: &str) -> &Collection {
        static EMPTY: std::sync::OnceLock<Collection> = std::sync::OnceLock::new();
        self.config.collections.get(name).unwrap_or_else(|| EMPTY.get_or_init(Collection::default))
    }

    /// Absolute URL of a site path.
    pub fn absolute(&self, path: &str) -> String {
        format!("{}{}", self.config.base_url, path)
    }

    /// Absolute URL of `path`, a page of `doc`: at the custom domain of the
    /// document's site when it has one and the path is under the site's
    /// `/{id}/` (with `base_url`'s scheme), else as [`Site::absolute`].
    pub fn doc_url(&self, doc: &Document, path: &str) -> String {
        let under = |domain| Some((domain, path.strip_prefix('/')?.strip_prefix(&*doc.key.id)?.strip_prefix('/')?));
        match doc.domain.as_deref().and_then(under) {
            Some((domain, rest)) => {
                let scheme = self.config.base_url.split_once("://").map_or("https", |(scheme, _)| scheme);
                format!("{scheme}://{domain}/{rest}")
            }
            None => self.absolute(path),
        }
    }

    /// The path of `doc` under document route `ix`, or `None` when a
    /// placeholder has no usable value (for example a document without a slug).
    pub fn doc_path(&self, ix: RouteIx, doc: &Document) -> Option<String> {
        let route = self.document_route(ix);
        let roles = self.collection(&doc.key.collection);
        route.path.fill(|ph| match ph {
            Placeholder::Id => validate_id(&doc.key.id).ok().map(|()| doc.key.id.to_string()),
            Placeholder::Owner => doc.owner.as_deref().and_then(slugify),
            Placeholder::Slug => field_str(doc, roles.slug.as_deref()).and_then(|s| slugify(&s)),
            Placeholder::Group => None,
        })
    }

    /// Every page path `doc` would have, one per document route of its
    /// collection, leaving out paths a non-document route reserves.
    pub fn doc_paths(&self, doc: &Document) -> Vec<String> {
        let mut paths: Vec<String> = self
            .doc_routes(&doc.key.collection)
            .iter()
            .filter_map(|&ix| self.doc_path(ix, doc))
            .filter(|p| !self.reserved_by_route(p))
            .collect();
        paths.dedup();
        paths
    }

    /// Identifies the rules that turn documents into paths (every route
    /// takes part: other routes reserve paths). Stored with the path claims
    /// so that they are rebuilt when the rules change.
    pub fn paths_fingerprint(&self) -> String {
        // FNV-1a: a change detector, not a security boundary.
        let text = format!("{:?}{:?}", self.config.collections, self.config.routes);
        let hash =
            text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("routes:{hash:016x}")
    }

    /// Path of the first page of a listing group.
    pub fn group_base(&self, ix: RouteIx, group: &str) -> String {
        let route = self.listing_route(ix);
        route.path.fill(|_| Some(group.to_string())).unwrap_or_else(|| "/".into())
    }

    /// The names the site's own paths begin with, which no account may take
    /// as a handle (a handle is a first path segment, and a host name in
    /// host mode): the first segment of every route's paths, of the sitemap
    /// and its chunks, of static files and media, each with and without its
    /// extension (`sitemap.xml` reserves `sitemap` too: a user's
    /// `/sitemap/` would pass for the site's own).
    pub fn reserved_names(&self) -> BTreeSet<String> {
        let mut firsts: Vec<String> = vec![STATIC_PREFIX.trim_matches('/').into(), "media".into(), "_v".into()];
        for route in &self.config.routes {
            let literal_first = |segments: &[sesame_config::Segment]| match segments.first() {
                Some(sesame_config::Segment::Literal(l)) => Some(l.clone()),
                _ => None,
            };
            match &route.kind {
                RouteKind::Listing(l) => firsts.extend(literal_first(l.path.segments())),
                RouteKind::Document(d) => firsts.extend(literal_first(d.path.segments())),
                RouteKind::Page(p) => {
                    firsts.extend(p.path.trim_start_matches('/').split('/').next().map(str::to_string))
                }
                RouteKind::Sitemap(_) => firsts.extend(["sitemap.xml".to_string(), "sitemaps".to_string()]),
                RouteKind::Robots(_) => firsts.push("robots.txt".into()),
            }
        }
        let mut names = BTreeSet::new();
        for first in firsts.into_iter().filter(|f| !f.is_empty()) {
            if let Some((stem, _)) = first.split_once('.') {
                names.insert(stem.to_ascii_lowercase());
            }
            names.insert(first.to_ascii_lowercase());
        }
        names
    }

    /// Whether a path belongs to a non-document route by its shape alone. Such
    /// paths are never given to documents, whatever the content, so a document
    /// can never shadow a listing page, a sitemap or a static file.
    pub fn reserved_by_route(&self, path: &str) -> bool {
        if path.starts_with(STATIC_PREFIX) {
            return true;
        }
        self.config.routes.iter().any(|r| match &r.kind {
            RouteKind::Document(_) => false,
            RouteKind::Page(p) => p.path == path,
            RouteKind::Robots(_) => path == "/robots.txt",
            RouteKind::Sitemap(_) => path == "/sitemap.xml" || path.starts_with("/sitemaps/"),
            RouteKind::Listing(l) => l.path.match_prefix(path).is_some_and(|rest| listing_shape(l.scheme, &rest)),
        })
    }

    /// The group keys `doc` belongs to in a listing (empty when it is not a member).
    pub fn groups_of(&self, ix: RouteIx, doc: &Document) -> Vec<Arc<str>> {
        let route = self.listing_route(ix);
        if *doc.key.collection != *route.collection || doc.status != sesame_model::Status::Live {
            return Vec::new();
        }
        let roles = self.collection(&route.collection);
        let mut groups: Vec<Arc<str>> = match &route.group_by {
            None => return vec![Arc::from("")],
            Some(GroupBy::Owner) => doc.owner.as_deref().and_then(slugify).map(Arc::from).into_iter().collect(),
            Some(GroupBy::Tags) => field_values(doc, roles.tags.as_deref()),
            Some(GroupBy::Field(f)) => field_values(doc, Some(f)),
        };
        groups.sort();
        groups.dedup();
        groups
    }

    /// The date a document sorts and buckets by: the collection's date field,
    /// or its creation time when the collection declares none.
    pub fn sort_date(&self, doc: &Document) -> Option<i64> {
        match &self.collection(&doc.key.collection).date {
            Some(field) => field_str(doc, Some(field)).and_then(|d| time::parse_date(&d)),
            None => Some(doc.created),
        }
    }

    /// The document's title ("" when it has none).
    pub fn title<'d>(&self, doc: &'d Document) -> Cow<'d, str> {
        field_str(doc, self.collection(&doc.key.collection).title.as_deref()).unwrap_or_default()
    }

    /// The key that orders `doc` in a listing.
    pub fn sort_key(&self, ix: RouteIx, doc: &Document) -> SortKey {
        let id = IdOrd::new(&doc.key.id);
        match self.listing_route(ix).order {
            Order::Newest => SortKey::Newest(std::cmp::Reverse((self.sort_date(doc), id))),
            Order::Oldest => SortKey::Oldest((self.sort_date(doc), id)),
            Order::Title => SortKey::Title((self.title(doc).to_lowercase().into(), id)),
        }
    }

    /// The month bucket of `doc` (for `date` listings).
    pub fn bucket(&self, doc: &Document) -> Bucket {
        match self.sort_date(doc) {
            Some(t) => {
                let (y, m) = time::year_month(t);
                Bucket::Month(y, m)
            }
            None => Bucket::Undated,
        }
    }
}

/// Whether the path segments after a listing's base are a page of that scheme.
fn listing_shape(scheme: Scheme, rest: &[&str]) -> bool {
    let is_num = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    let page = |r: &[&str]| matches!(r, []) || matches!(r, ["page", n] if is_num(n));
    match scheme {
        Scheme::Offset | Scheme::Stable | Scheme::Head => page(rest),
        Scheme::Date => match rest {
            [] => true,
            ["undated", tail @ ..] => page(tail),
            [y, m, tail @ ..] => y.len() == 4 && is_num(y) && m.len() == 2 && is_num(m) && page(tail),
            _ => false,
        },
    }
}

/// A string field of the document.
pub fn field_str<'d>(doc: &'d Document, field: Option<&str>) -> Option<Cow<'d, str>> {
    doc.data.get_str(field?)
}

/// The slugified values of a string, number or list field.
fn field_values(doc: &Document, field: Option<&str>) -> Vec<Arc<str>> {
    let one = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => slugify(s),
        serde_json::Value::Number(n) => slugify(&n.to_string()),
        _ => None,
    };
    match field.and_then(|f| doc.data.get(f)) {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(one).map(Arc::from).collect(),
        Some(v) => one(&v).map(Arc::from).into_iter().collect(),
        None => Vec::new(),
    }
}
