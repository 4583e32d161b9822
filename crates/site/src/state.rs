//! [`SiteState`]: the published content in memory, indexed for answering
//! "what is on this page" in microseconds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sesame_config::{RouteKind, Scheme};
use sesame_model::{AliasRow, Dep, Deps, DocKey, Document, SeqRow, Status};

use crate::group::{Group, Lane};
use crate::nav;
use crate::order::{Bucket, IdOrd, MemberKey};
use crate::page::{Body, Item, Link, ListingPage, PageId, Resolved};
use crate::site::{RouteIx, Site};

/// A document's claim on a path. Ordering decides who wins a contested path:
/// taken-down documents first, then route order, then key. A taken-down
/// document keeps its path (answering 410) until an admin restores or
/// deletes it: no other document can take a moderated page over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Claim {
    pub live: bool,
    pub route: RouteIx,
    pub doc: DocKey,
}

/// The documents claiming one path, in [`Claim`] order: the first wins.
/// Nearly every path has one claimant, so a sorted vector: a `BTreeSet`
/// would take a node of eleven slots for each of a site's paths.
#[derive(Debug, Default)]
pub(crate) struct Claims(Vec<Claim>);

impl Claims {
    pub fn insert(&mut self, claim: Claim) {
        if let Err(at) = self.0.binary_search(&claim) {
            self.0.insert(at, claim);
        }
    }

    pub fn remove(&mut self, claim: &Claim) {
        if let Ok(at) = self.0.binary_search(claim) {
            self.0.remove(at);
        }
    }

    /// The claim that wins the path.
    pub fn first(&self) -> Option<&Claim> {
        self.0.first()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'c> IntoIterator for &'c Claims {
    type Item = &'c Claim;
    type IntoIter = std::slice::Iter<'c, Claim>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The groups of one listing route.
#[derive(Debug)]
pub(crate) struct Listing {
    pub collection: Arc<str>,
    pub groups: HashMap<Arc<str>, Group>,
}

/// A lane member without a sequence number yet.
#[derive(Debug)]
pub(crate) struct Joiner {
    route: RouteIx,
    group: Arc<str>,
    /// The month, for `date` lanes.
    bucket: Option<Bucket>,
    member: MemberKey,
}

/// A document taken out of the indexes, with the paths it held per route.
pub(crate) type Detached = (Arc<Document>, Vec<(RouteIx, Arc<str>)>);

/// How a group is currently paginated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effective {
    Offset,
    Head,
    Stable,
    Date,
}

/// The published content, indexed for resolving pages.
///
/// Everything here is a function of the published documents plus the persisted
/// state that records history (sequence numbers and former paths), which is
/// what makes a full build and an incremental one comparable byte for byte.
#[derive(Debug)]
pub struct SiteState {
    pub(crate) site: Arc<Site>,
    pub(crate) docs: HashMap<DocKey, Arc<Document>>,
    pub(crate) listings: HashMap<RouteIx, Listing>,
    /// Current path of each document under each of its document routes.
    pub(crate) doc_paths: HashMap<(RouteIx, DocKey), Arc<str>>,
    /// Documents claiming each path; the first one wins.
    pub(crate) claims: HashMap<Arc<str>, Claims>,
    /// Documents that formerly lived at each path.
    pub(crate) aliases: HashMap<Arc<str>, BTreeSet<(RouteIx, DocKey)>>,
    pub(crate) aliases_by_doc: HashMap<DocKey, BTreeSet<(RouteIx, Arc<str>)>>,
    /// Sitemap positions of documents.
    pub(crate) sitemap: Lane<DocKey>,
}

impl SiteState {
    /// An empty site.
    pub fn new(site: Arc<Site>) -> SiteState {
        let listings = site
            .listing_routes()
            .iter()
            .map(|&ix| {
                let collection = Arc::from(site.listing_route(ix).collection.as_str());
                (ix, Listing { collection, groups: HashMap::new() })
            })
            .collect();
        SiteState {
            site,
            docs: HashMap::new(),
            listings,
            doc_paths: HashMap::new(),
            claims: HashMap::new(),
            aliases: HashMap::new(),
            aliases_by_doc: HashMap::new(),
            sitemap: Lane::default(),
        }
    }

    /// Builds the state from published documents and persisted history. Documents
    /// that joined a `stable`/`date` lane or the sitemap without a number get one
    /// now, oldest first; those new assignments are returned to be persisted.
    pub fn load(
        site: Arc<Site>,
        docs: impl IntoIterator<Item = Document>,
        seqs: impl IntoIterator<Item = SeqRow>,
        aliases: impl IntoIterator<Item = AliasRow>,
    ) -> (SiteState, Vec<SeqRow>) {
        let mut state = SiteState::new(site);
        for row in seqs {
            state.restore_seq(row);
        }
        let joiners = state.attach_all(docs.into_iter().map(Arc::new));
        for row in aliases {
            if let Some(ix) = state.doc_route_ix(&row.route) {
                state.add_alias(ix, Arc::from(row.path.as_str()), row.doc);
            }
        }
        let mut new_seqs = Vec::new();
        state.number_all(joiners, &mut new_seqs);
        (state, new_seqs)
    }

    /// Adds documents in bulk (a load, or a batch on a blank state), the
    /// maps sized once for all of them (a path each, under most sites' one
    /// document route) rather than grown by doubling. Returns the lane
    /// members left to number ([`SiteState::number_all`]).
    pub(crate) fn attach_all(&mut self, docs: impl IntoIterator<Item = Arc<Document>>) -> Vec<Joiner> {
        let docs = docs.into_iter();
        let n = docs.size_hint().0;
        self.docs.reserve(n);
        self.doc_paths.reserve(n);
        if self.site.pages_documents() {
            self.claims.reserve(n);
        }
        let mut joiners = Vec::new();
        for doc in docs {
            self.attach(doc, &mut joiners);
        }
        joiners
    }

    /// After a bulk attach: numbers the newcomers of lanes, switches the
    /// groups past their hot threshold, and numbers the sitemap, oldest
    /// first; the new numbers go to `new_seqs`.
    pub(crate) fn number_all(&mut self, joiners: Vec<Joiner>, new_seqs: &mut Vec<SeqRow>) {
        self.number(joiners, new_seqs);
        let site = self.site.clone();
        for &ix in site.listing_routes() {
            let mut groups: Vec<Arc<str>> = self.listings[&ix].groups.keys().cloned().collect();
            groups.sort();
            for g in groups {
                self.switch_if_hot(ix, &g, new_seqs);
            }
        }
        let keys: Vec<DocKey> = self.docs.keys().cloned().collect();
        self.refresh_sitemap(keys, new_seqs);
    }

    /// The compiled configuration.
    pub fn site(&self) -> &Arc<Site> {
        &self.site
    }

    /// A published document.
    pub fn doc(&self, key: &DocKey) -> Option<&Arc<Document>> {
        self.docs.get(key)
    }

    /// Every document, in no particular order.
    pub fn documents(&self) -> impl Iterator<Item = &Arc<Document>> {
        self.docs.values()
    }

    /// Number of published documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document is published.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Every persisted sequence number, for comparing states in tests and tools.
    pub fn seq_rows(&self) -> Vec<SeqRow> {
        let mut rows = Vec::new();
        for (&ix, listing) in &self.listings {
            let name = self.site.route_name(ix);
            for (g, group) in &listing.groups {
                let key = |id: &Arc<str>| DocKey { collection: listing.collection.clone(), id: id.clone() };
                if let Some(lane) = &group.stable {
                    rows.extend(lane.assignments().map(|(id, seq)| SeqRow {
                        route: name.into(),
                        group: g.to_string(),
                        doc: key(id),
                        seq,
                    }));
                }
                for (b, lane) in &group.buckets {
                    let gk = format!("{g}@{}", b.key());
                    rows.extend(lane.assignments().map(|(id, seq)| SeqRow {
                        route: name.into(),
                        group: gk.clone(),
                        doc: key(id),
                        seq,
                    }));
                }
            }
        }
        if let Some(ix) = self.site.sitemap_route() {
            let name = self.site.route_name(ix);
            rows.extend(self.sitemap.assignments().map(|(k, seq)| SeqRow {
                route: name.into(),
                group: String::new(),
                doc: k.clone(),
                seq,
            }));
        }
        rows.sort();
        rows
    }

    /// Every persisted former path, sorted.
    pub fn alias_rows(&self) -> Vec<AliasRow> {
        let mut rows: Vec<AliasRow> = self
            .aliases_by_doc
            .iter()
            .flat_map(|(doc, set)| {
                set.iter().map(|(ix, path)| AliasRow {
                    route: self.site.route_name(*ix).into(),
                    path: path.to_string(),
                    doc: doc.clone(),
                })
            })
            .collect();
        rows.sort();
        rows
    }

    fn doc_route_ix(&self, name: &str) -> Option<RouteIx> {
        self.site
            .config
            .routes
            .iter()
            .position(|r| r.name == name && matches!(r.kind, RouteKind::Document(_)))
            .map(|i| i as RouteIx)
    }

    fn restore_seq(&mut self, row: SeqRow) {
        let Some(ix) = self.site.config.routes.iter().position(|r| r.name == row.route).map(|i| i as RouteIx) else {
            return; // state of a route that no longer exists
        };
        match self.site.route(ix) {
            // A site narrowed to pages on request keeps no sitemap lane.
            RouteKind::Sitemap(_) if self.site.sitemap_route() == Some(ix) => self.sitemap.restore(row.doc, row.seq),
            RouteKind::Listing(l) => {
                let Some(listing) = self.listings.get_mut(&ix) else {
                    return;
                };
                let (group, bucket) = match row.group.split_once('@') {
                    Some((g, b)) => (g, Bucket::parse_key(b)),
                    None => (row.group.as_str(), None),
                };
                // A group's name is allocated once, not once per row.
                if !listing.groups.contains_key(group) {
                    listing.groups.insert(Arc::from(group), Group::default());
                }
                let group = listing.groups.get_mut(group).expect("just made sure");
                match (l.scheme, bucket) {
                    (Scheme::Date, Some(b)) => group.buckets.entry(b).or_default().restore(row.doc.id, row.seq),
                    // An `offset` route keeps numbers only once a group turned
                    // hot; without a threshold they are left from an earlier scheme.
                    (Scheme::Stable, None) | (Scheme::Offset, None)
                        if l.scheme == Scheme::Stable || l.hot_threshold.is_some() =>
                    {
                        group.stable.get_or_insert_default().restore(row.doc.id, row.seq)
                    }
                    _ => {} // the route changed scheme: its old numbers no longer apply
                }
            }
            _ => {}
        }
    }

    pub(crate) fn effective(&self, ix: RouteIx, group: Option<&Group>) -> Effective {
        match self.site.listing_route(ix).scheme {
            Scheme::Offset if group.is_some_and(|g| g.stable.is_some()) => Effective::Stable,
            Scheme::Offset => Effective::Offset,
            Scheme::Head => Effective::Head,
            Scheme::Stable => Effective::Stable,
            Scheme::Date => Effective::Date,
        }
    }

    /// Adds a document to every index. Lane members that have no sequence
    /// number yet are added to `joiners`, for [`SiteState::number`].
    pub(crate) fn attach(&mut self, doc: Arc<Document>, joiners: &mut Vec<Joiner>) {
        let site = self.site.clone();
        // The document's month, the same under every route.
        let bucket = site.bucket(&doc);
        for &ix in site.listing_routes() {
            let groups = site.groups_of(ix, &doc);
            if groups.is_empty() {
                continue;
            }
            let member = (site.sort_key(ix, &doc), doc.key.id.clone());
            for g in groups {
                let scheme = self.effective(ix, self.listings[&ix].groups.get(&g));
                let listing = self.listings.get_mut(&ix).expect("every listing route has an index");
                let group = listing.groups.entry(g.clone()).or_default();
                group.insert(member.clone());
                let (lane, bucket) = match scheme {
                    Effective::Stable => (group.stable.get_or_insert_default(), None),
                    Effective::Date => (group.buckets.entry(bucket).or_default(), Some(bucket)),
                    Effective::Offset | Effective::Head => continue,
                };
                if !lane.show(&doc.key.id) {
                    joiners.push(Joiner { route: ix, group: g, bucket, member: member.clone() });
                }
            }
        }
        for &ix in site.doc_routes(&doc.key.collection) {
            if let Some(path) = site.doc_path(ix, &doc).filter(|p| !site.reserved_by_route(p)) {
                let path: Arc<str> = Arc::from(path);
                if site.pages_documents() {
                    self.claims.entry(path.clone()).or_default().insert(Claim {
                        live: doc.status == Status::Live,
                        route: ix,
                        doc: doc.key.clone(),
                    });
                }
                self.doc_paths.insert((ix, doc.key.clone()), path);
            }
        }
        self.docs.insert(doc.key.clone(), doc);
    }

    /// Removes a document from every index (its sequence numbers and aliases
    /// stay). Returns it with the paths it held, per document route.
    pub(crate) fn detach(&mut self, key: &DocKey) -> Option<Detached> {
        let doc = self.docs.remove(key)?;
        let site = self.site.clone();
        let bucket = site.bucket(&doc);
        for &ix in site.listing_routes() {
            let groups = site.groups_of(ix, &doc);
            if groups.is_empty() {
                continue;
            }
            let member = (site.sort_key(ix, &doc), doc.key.id.clone());
            let listing = self.listings.get_mut(&ix).expect("every listing route has an index");
            for g in groups {
                let Some(group) = listing.groups.get_mut(&g) else {
                    continue;
                };
                group.remove(&member);
                if let Some(lane) = &mut group.stable {
                    lane.hide(&doc.key.id);
                }
                if let Some(lane) = group.buckets.get_mut(&bucket) {
                    lane.hide(&doc.key.id);
                }
                if group.members.is_empty() && group.stable.is_none() && group.buckets.is_empty() {
                    listing.groups.remove(&g);
                }
            }
        }
        let mut paths = Vec::new();
        for &ix in site.doc_routes(&doc.key.collection) {
            if let Some(path) = self.doc_paths.remove(&(ix, key.clone())) {
                let claim = Claim { live: doc.status == Status::Live, route: ix, doc: key.clone() };
                if let Some(set) = self.claims.get_mut(&path) {
                    set.remove(&claim);
                    if set.is_empty() {
                        self.claims.remove(&path);
                    }
                }
                paths.push((ix, path));
            }
        }
        Some((doc, paths))
    }

    pub(crate) fn add_alias(&mut self, ix: RouteIx, path: Arc<str>, doc: DocKey) -> bool {
        self.aliases_by_doc.entry(doc.clone()).or_default().insert((ix, path.clone()));
        self.aliases.entry(path).or_default().insert((ix, doc))
    }

    pub(crate) fn remove_alias(&mut self, ix: RouteIx, path: &Arc<str>, doc: &DocKey) -> bool {
        if let Some(set) = self.aliases_by_doc.get_mut(doc) {
            set.remove(&(ix, path.clone()));
            if set.is_empty() {
                self.aliases_by_doc.remove(doc);
            }
        }
        match self.aliases.get_mut(path) {
            Some(set) => {
                let removed = set.remove(&(ix, doc.clone()));
                if set.is_empty() {
                    self.aliases.remove(path);
                }
                removed
            }
            None => false,
        }
    }

    /// Gives lane joiners their sequence numbers, oldest first within each lane
    /// (so a batch of adds, like a bulk import, is numbered in date order), and
    /// shows them.
    pub(crate) fn number(&mut self, mut joiners: Vec<Joiner>, rows: &mut Vec<SeqRow>) {
        joiners.sort_by(|a, b| {
            (a.route, &a.group, a.bucket).cmp(&(b.route, &b.group, b.bucket)).then_with(|| b.member.cmp(&a.member))
        });
        for j in joiners {
            let name = self.site.route_name(j.route).to_string();
            let listing = self.listings.get_mut(&j.route).expect("every listing route has an index");
            let Some(group) = listing.groups.get_mut(&j.group) else { continue };
            let (lane, lane_group) = match j.bucket {
                Some(b) => (group.buckets.entry(b).or_default(), format!("{}@{}", j.group, b.key())),
                None => (group.stable.get_or_insert_default(), j.group.to_string()),
            };
            let id = &j.member.1;
            if let Some(seq) = lane.assign(id) {
                let doc = DocKey { collection: listing.collection.clone(), id: id.clone() };
                rows.push(SeqRow { route: name, group: lane_group, doc, seq });
            }
            lane.show(id);
        }
    }

    /// Moves an `offset` group past its hot threshold to fixed boundaries,
    /// numbering its members oldest first.
    pub(crate) fn switch_if_hot(&mut self, ix: RouteIx, g: &Arc<str>, rows: &mut Vec<SeqRow>) {
        let route = self.site.listing_route(ix);
        let (Scheme::Offset, Some(threshold)) = (route.scheme, route.hot_threshold) else {
            return;
        };
        let name = self.site.route_name(ix).to_string();
        let listing = self.listings.get_mut(&ix).expect("every listing route has an index");
        let Some(group) = listing.groups.get_mut(g) else {
            return;
        };
        if group.stable.is_some() || group.members.len() <= threshold as usize {
            return;
        }
        let lane = group.stable.insert(Lane::default());
        for (_, id) in group.members.iter().rev() {
            if let Some(seq) = lane.assign(id) {
                let doc = DocKey { collection: listing.collection.clone(), id: id.clone() };
                rows.push(SeqRow { route: name.clone(), group: g.to_string(), doc, seq });
            }
            lane.show(id);
        }
    }

    /// Updates the sitemap presence of these documents; those listed for the
    /// first time are numbered in creation order (then by key).
    pub(crate) fn refresh_sitemap(&mut self, keys: impl IntoIterator<Item = DocKey>, rows: &mut Vec<SeqRow>) {
        let Some(ix) = self.site.sitemap_route() else {
            return;
        };
        let mut keys: Vec<(i64, DocKey, IdOrd)> = keys
            .into_iter()
            .map(|k| (self.docs.get(&k).map_or(0, |d| d.created), IdOrd::new(&k.id), k))
            .map(|(created, id, k)| (created, k, id))
            .collect();
        keys.sort_by(|a, b| (a.0, &a.1.collection, &a.2).cmp(&(b.0, &b.1.collection, &b.2)));
        keys.dedup_by(|a, b| a.1 == b.1);
        for (_, key, _) in keys {
            if self.sitemap_paths(&key).is_empty() {
                self.sitemap.hide(&key);
                continue;
            }
            if let Some(seq) = self.sitemap.assign(&key) {
                rows.push(SeqRow {
                    route: self.site.route_name(ix).into(),
                    group: String::new(),
                    doc: key.clone(),
                    seq,
                });
            }
            self.sitemap.show(&key);
        }
    }

    /// Paths under which a document is listed in the sitemap: the paths it wins
    /// under document routes that are in the sitemap, if it is indexable.
    pub(crate) fn sitemap_paths(&self, key: &DocKey) -> Vec<&Arc<str>> {
        let Some(doc) = self.docs.get(key).filter(|d| d.indexable()) else {
            return Vec::new();
        };
        self.site
            .doc_routes(&key.collection)
            .iter()
            .filter(|&&ix| self.site.document_route(ix).sitemap)
            .filter_map(|&ix| self.doc_paths.get(&(ix, doc.key.clone())))
            .filter(|path| self.claims.get(*path).and_then(|c| c.first()).is_some_and(|c| c.doc == *key))
            .collect()
    }

    /// Documents per sitemap file: the chunk size divided by the most URLs one
    /// document can contribute, so no file passes the limit.
    pub(crate) fn sitemap_capacity(&self) -> u32 {
        let per_doc = self
            .site
            .config
            .collections
            .keys()
            .map(|c| self.site.doc_routes(c).iter().filter(|&&ix| self.site.document_route(ix).sitemap).count())
            .max()
            .unwrap_or(1)
            .max(1) as u32;
        (self.site.sitemap_chunk_size().unwrap_or(1) / per_doc).max(1)
    }

    /// The path a page lives at (whether or not it currently exists).
    pub fn path_of(&self, id: &PageId) -> String {
        match id {
            PageId::DocPath(p) => p.to_string(),
            PageId::DocFeed(p, format) => format!("{p}{}", format.file()),
            PageId::Listing { route, group, page } => {
                format!("{}{}", self.site.group_base(*route, group), page.suffix())
            }
            PageId::Static(ix) => match self.site.route(*ix) {
                RouteKind::Page(p) => p.path.clone(),
                _ => "/robots.txt".into(),
            },
            PageId::SitemapIndex => "/sitemap.xml".into(),
            PageId::SitemapPages => "/sitemaps/pages.xml".into(),
            PageId::SitemapChunk(n) => format!("/sitemaps/{n}.xml"),
        }
    }

    /// Every page of the site, for a full build.
    pub fn all_pages(&self) -> Vec<PageId> {
        let mut pages: Vec<PageId> = Vec::with_capacity(self.docs.len() * 2);
        // A former path whose document no longer has a page under that route
        // leads nowhere and is not a page.
        let former =
            self.aliases.keys().filter(|p| !self.claims.contains_key(*p) && self.resolve_doc_path(p).is_some());
        let doc_paths: BTreeSet<&Arc<str>> = self.claims.keys().chain(former).collect();
        pages.extend(doc_paths.into_iter().map(|p| PageId::DocPath(p.clone())));
        for (path, claims) in &self.claims {
            let Some(claim) = claims.first() else { continue };
            if self.docs.get(&claim.doc).is_some_and(|d| d.status == Status::Live) {
                let feeds = &self.site.document_route(claim.route).feeds;
                pages.extend(feeds.iter().map(|&f| PageId::DocFeed(path.clone(), f)));
            }
        }
        for &ix in self.site.listing_routes() {
            let listing = &self.listings[&ix];
            let mut groups: Vec<&Arc<str>> = listing.groups.keys().collect();
            let ungrouped: Arc<str> = Arc::from("");
            if self.site.listing_route(ix).group_by.is_none() && !listing.groups.contains_key("") {
                groups.push(&ungrouped);
            }
            for g in groups {
                let layout = self.layout(ix, g);
                let route = self.site.listing_route(ix);
                let feeds = route.feeds.iter().filter(|_| layout != Layout::Absent).map(|&f| ListingPage::Feed(f));
                pages.extend(layout.pages(route.page_size).into_iter().chain(feeds).map(|page| PageId::Listing {
                    route: ix,
                    group: g.clone(),
                    page,
                }));
            }
        }
        for (i, r) in self.site.config.routes.iter().enumerate() {
            if matches!(r.kind, RouteKind::Page(_) | RouteKind::Robots(_)) {
                pages.push(PageId::Static(i as RouteIx));
            }
        }
        if self.site.sitemap_route().is_some() {
            pages.push(PageId::SitemapIndex);
            pages.push(PageId::SitemapPages);
            pages.extend((1..=self.sitemap.pages(self.sitemap_capacity())).map(PageId::SitemapChunk));
        }
        pages
    }

    /// Whether the page exists now (cheaper than resolving it).
    pub fn exists(&self, id: &PageId) -> bool {
        match id {
            PageId::Listing { route, group, page } => {
                let size = self.site.listing_route(*route).page_size;
                match (self.layout(*route, group), page) {
                    (Layout::Absent, _) => false,
                    (_, ListingPage::First) => true,
                    (_, ListingPage::Feed(f)) => self.site.listing_route(*route).feeds.contains(f),
                    (Layout::Offset(ids), ListingPage::Number(n)) => (2..=pages_for(ids.len(), size)).contains(n),
                    (Layout::Stable { top }, ListingPage::Number(n)) => (1..=top).contains(n),
                    (Layout::Date(months), ListingPage::Bucket(b, n)) => months.get(b).is_some_and(|top| n <= top),
                    _ => false,
                }
            }
            other => self.resolve(other).is_some(),
        }
    }

    /// The page's current content, or `None` if no such page exists now.
    pub fn resolve(&self, id: &PageId) -> Option<Resolved<'_>> {
        let path = self.path_of(id);
        let (body, deps) = match id {
            PageId::DocPath(p) => self.resolve_doc_path(p)?,
            PageId::DocFeed(p, format) => match self.resolve_doc_path(p)? {
                // Only a live document's own page has feeds (not a former path).
                (Body::Document { route, doc }, deps) if self.site.document_route(route).feeds.contains(format) => {
                    (Body::DocumentFeed { route, doc, page: p.clone(), format: *format }, deps)
                }
                _ => return None,
            },
            PageId::Listing { route, group, page } => self.resolve_listing(*route, group, *page)?,
            PageId::Static(ix) => (Body::Static(*ix), Deps::default()),
            PageId::SitemapIndex => {
                self.site.sitemap_route()?;
                let chunks = self.sitemap.pages(self.sitemap_capacity());
                let mut files = vec![self.path_of(&PageId::SitemapPages)];
                files.extend((1..=chunks).map(|n| self.path_of(&PageId::SitemapChunk(n))));
                (Body::SitemapIndex(files), Deps::new([Dep::SitemapIndex]))
            }
            PageId::SitemapPages => {
                self.site.sitemap_route()?;
                (
                    Body::SitemapUrls(self.site_pages().into_iter().map(|p| (self.site.absolute(&p), None)).collect()),
                    Deps::new([Dep::SitemapIndex]),
                )
            }
            PageId::SitemapChunk(n) => {
                let cap = u64::from(self.sitemap_capacity());
                if *n == 0 || *n > self.sitemap.pages(cap as u32) {
                    return None;
                }
                let lo = u64::from(n - 1) * cap;
                let mut urls = Vec::new();
                for (_, key) in self.sitemap.live_range(lo..lo + cap) {
                    let Some(doc) = self.docs.get(key) else { continue };
                    let paths = self.sitemap_paths(key).into_iter();
                    urls.extend(paths.map(|p| (self.site.doc_url(doc, p), Some(doc.updated))));
                }
                (Body::SitemapUrls(urls), Deps::new([Dep::SitemapChunk(*n)]))
            }
        };
        Some(Resolved { path, body, deps })
    }

    /// Non-document pages worth indexing: HTML `page` routes and the first page
    /// of ungrouped listings.
    fn site_pages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, r) in self.site.config.routes.iter().enumerate() {
            match &r.kind {
                RouteKind::Page(p)
                    if (p.path.ends_with('/') || p.path.ends_with(".html"))
                        && !p.path.starts_with("/404")
                        && !p.path.starts_with("/410") =>
                {
                    out.push(p.path.clone());
                }
                RouteKind::Listing(l) if l.group_by.is_none() => out.push(self.site.group_base(i as RouteIx, "")),
                _ => {}
            }
        }
        out
    }

    fn resolve_doc_path(&self, path: &Arc<str>) -> Option<(Body<'_>, Deps)> {
        if let Some(claim) = self.claims.get(path).and_then(|c| c.first()) {
            let doc = self.docs.get(&claim.doc)?;
            let deps = Deps::new([Dep::doc(&doc.key)]);
            return Some(match doc.status {
                Status::Removed => (Body::Gone, deps),
                Status::Live => (Body::Document { route: claim.route, doc }, deps),
            });
        }
        let (ix, key) = self.aliases.get(path)?.first()?;
        let doc = self.docs.get(key)?;
        let deps = Deps::new([Dep::doc(&doc.key)]);
        match doc.status {
            Status::Removed => Some((Body::Gone, deps)),
            Status::Live => {
                let current = self.doc_paths.get(&(*ix, key.clone()))?;
                (current != path).then(|| (Body::Redirect(current.to_string()), deps))
            }
        }
    }

    /// Path of a document's own page (under its collection's first document route).
    pub(crate) fn item_path(&self, key: &DocKey) -> Option<&str> {
        let ix = *self.site.doc_routes(&key.collection).first()?;
        self.doc_paths.get(&(ix, key.clone())).map(|p| &**p)
    }

    /// A listing page's dependency keys: the page itself, then what it shows.
    pub(crate) fn listing_deps(&self, ix: RouteIx, group: &str, page: &str, items: &[Item<'_>]) -> Deps {
        let route = self.site.route_tag(ix);
        let own = Dep::Listing { route: &route, group, page };
        Deps::new(std::iter::once(own).chain(items.iter().map(|i| Dep::doc(&i.doc.key))))
    }

    pub(crate) fn items<'a, 'i>(
        &'a self,
        collection: &Arc<str>,
        ids: impl Iterator<Item = &'i Arc<str>>,
    ) -> Vec<Item<'a>> {
        ids.filter_map(|id| {
            let key = DocKey { collection: collection.clone(), id: id.clone() };
            let (key, doc) = self.docs.get_key_value(&key)?;
            Some(Item { doc, path: self.item_path(key) })
        })
        .collect()
    }

    fn resolve_listing(&self, ix: RouteIx, g: &Arc<str>, page: ListingPage) -> Option<(Body<'_>, Deps)> {
        let route = self.site.listing_route(ix);
        let listing = &self.listings[&ix];
        let group = listing.groups.get(g);
        let ungrouped = route.group_by.is_none();
        if ungrouped != g.is_empty() {
            return None;
        }
        if let ListingPage::Feed(format) = page {
            // The newest documents: the first in display order (feeds need
            // order = "newest"), whatever the scheme cuts pages by.
            if !route.feeds.contains(&format) || self.layout(ix, g) == Layout::Absent {
                return None;
            }
            let newest = group.into_iter().flat_map(|gr| gr.members.iter().take(route.feed_size as usize));
            let items = self.items(&listing.collection, newest.map(|(_, id)| id));
            let deps = self.listing_deps(ix, g, format.tag(), &items);
            return Some((Body::Syndication { route: ix, group: g.clone(), format, items }, deps));
        }
        let size = route.page_size;
        let base = self.site.group_base(ix, g);
        let empty = Group::default();
        let grp = group.unwrap_or(&empty);
        let mut buckets = Vec::new();
        let (items, pagination) = match (self.layout(ix, g), page) {
            (Layout::Absent, _) => return None,
            (Layout::Offset(ids), page) => {
                let total = pages_for(ids.len(), size);
                let n = match page {
                    ListingPage::First => 1,
                    ListingPage::Number(n) if (2..=total).contains(&n) => n,
                    _ => return None,
                };
                let lo = ((n - 1) * size) as usize;
                let hi = (lo + size as usize).min(ids.len());
                (self.items(&listing.collection, ids[lo..hi].iter()), nav::offset(&base, n, total))
            }
            (Layout::Head(_), ListingPage::First) => {
                let (ids, next) = self.head_slice(ix, g, None)?;
                (self.items(&listing.collection, ids.iter()), nav::head(&base, true, next))
            }
            (Layout::Stable { top }, page) => {
                let n = match page {
                    ListingPage::First => None,
                    ListingPage::Number(n) if (1..=top).contains(&n) => Some(n),
                    _ => return None,
                };
                let lane = grp.stable.as_ref();
                let shown = n.unwrap_or(top);
                let ids = lane.into_iter().flat_map(|l| l.page_items(shown, size));
                (self.items(&listing.collection, ids), nav::lane("stable", &base, n, top))
            }
            (Layout::Date(months), ListingPage::First) => {
                buckets = months
                    .iter()
                    .rev()
                    .map(|(b, _)| Link { label: b.to_string(), href: format!("{base}{}", b.path()) })
                    .collect();
                let label = "Archive".to_string();
                (Vec::new(), crate::page::Pagination { scheme: "date", label, ..Default::default() })
            }
            (Layout::Date(months), ListingPage::Bucket(b, n)) => {
                let top = *months.get(&b)?;
                if n > top {
                    return None;
                }
                let n = (n > 0).then_some(n);
                let landing = format!("{base}{}", b.path());
                let ids = grp.buckets.get(&b).into_iter().flat_map(|l| l.page_items(n.unwrap_or(top), size));
                let mut nav = nav::lane("date", &landing, n, top);
                nav.label = match n {
                    Some(k) => format!("{b}, page {k}"),
                    None => b.to_string(),
                };
                nav.up = Some(Link { label: "All months".into(), href: base.clone() });
                (self.items(&listing.collection, ids), nav)
            }
            _ => return None,
        };
        let deps = self.listing_deps(ix, g, &page.tag(), &items);
        Some((Body::Listing { route: ix, group: g.clone(), items, pagination, buckets }, deps))
    }

    /// The current layout of a listing group: what decides which pages it has.
    pub(crate) fn layout(&self, ix: RouteIx, g: &str) -> Layout {
        let route = self.site.listing_route(ix);
        let group = self.listings[&ix].groups.get(g);
        let ungrouped = route.group_by.is_none();
        match self.effective(ix, group) {
            Effective::Offset => match group {
                Some(gr) if !gr.members.is_empty() => Layout::Offset(gr.sorted()),
                _ if ungrouped => Layout::Offset(Arc::from(Vec::new())),
                _ => Layout::Absent,
            },
            // Only the first page (and whether more follows) is pre-rendered.
            Effective::Head => match group {
                Some(gr) if !gr.members.is_empty() => {
                    let first = gr.members.iter().take(route.page_size as usize + 1).map(|(_, id)| id.clone());
                    Layout::Head(first.collect())
                }
                _ if ungrouped => Layout::Head(Arc::from(Vec::new())),
                _ => Layout::Absent,
            },
            Effective::Stable => match group.and_then(|gr| gr.stable.as_ref()) {
                Some(lane) if lane.is_used() => Layout::Stable { top: lane.pages(route.page_size) },
                _ if ungrouped => Layout::Stable { top: 0 },
                _ => Layout::Absent,
            },
            Effective::Date => {
                let months: std::collections::BTreeMap<Bucket, u32> = group
                    .map(|gr| {
                        gr.buckets
                            .iter()
                            .filter(|(_, l)| l.is_used())
                            .map(|(b, l)| (*b, l.pages(route.page_size)))
                            .collect()
                    })
                    .unwrap_or_default();
                if months.is_empty() && !ungrouped { Layout::Absent } else { Layout::Date(months) }
            }
        }
    }
}

/// Number of offset pages for `n` items (an empty listing still has page 1).
pub(crate) fn pages_for(n: usize, size: u32) -> u32 {
    (n.div_ceil(size as usize) as u32).max(1)
}

/// What decides the set of pages of a listing group and their boundaries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Layout {
    /// The group has no pages.
    Absent,
    /// Member ids in display order.
    Offset(Arc<[Arc<str>]>),
    /// The first `page_size + 1` member ids (one more tells whether a next
    /// page exists); only the first page is pre-rendered.
    Head(Arc<[Arc<str>]>),
    /// Number of numbered pages.
    Stable { top: u32 },
    /// Number of pages per month.
    Date(std::collections::BTreeMap<Bucket, u32>),
}

impl Layout {
    /// Every page of the layout.
    pub fn pages(&self, size: u32) -> Vec<ListingPage> {
        let mut pages = Vec::new();
        match self {
            Layout::Absent => {}
            Layout::Offset(ids) => {
                pages.push(ListingPage::First);
                pages.extend((2..=pages_for(ids.len(), size)).map(ListingPage::Number));
            }
            Layout::Head(_) => pages.push(ListingPage::First),
            Layout::Stable { top } => {
                pages.push(ListingPage::First);
                pages.extend((1..=*top).map(ListingPage::Number));
            }
            Layout::Date(months) => {
                pages.push(ListingPage::First);
                for (b, top) in months {
                    pages.push(ListingPage::Bucket(*b, 0));
                    pages.extend((1..=*top).map(|n| ListingPage::Bucket(*b, n)));
                }
            }
        }
        pages
    }
}
