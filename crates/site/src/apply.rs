//! The fan-out planner: applies a batch of document changes to the state and
//! returns the pages whose content may have changed.
//!
//! The planner compares, for every listing group a change touches, the group's
//! layout before and after (see [`Layout`]) instead of reasoning about single
//! events, so a batch of many changes is planned as precisely as one. The
//! candidate set is a superset of the pages that changed; pages that resolve to
//! the same bytes are dropped later by hash. Parity tests check that nothing
//! that changed is ever left out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sesame_model::{AliasRow, Change, DocKey, Document, SeqRow};

use crate::group::Lane;
use crate::order::Bucket;
use crate::page::{ListingPage, PageId};
use crate::site::RouteIx;
use crate::state::{Layout, SiteState, pages_for};

/// The outcome of applying a batch.
#[derive(Debug, Default)]
pub struct Applied {
    /// Pages that may have changed, appeared or disappeared.
    pub candidates: BTreeSet<PageId>,
    /// Sequence numbers assigned in this batch (to persist).
    pub new_seqs: Vec<SeqRow>,
    /// Former paths recorded in this batch (to persist).
    pub added_aliases: Vec<AliasRow>,
    /// Former paths dropped in this batch (to persist).
    pub removed_aliases: Vec<AliasRow>,
    /// Every listing group the batch touched, with the ids of the changed
    /// documents that were or are in it (for invalidating pages rendered on
    /// request).
    pub touched: BTreeMap<(RouteIx, Arc<str>), Vec<Arc<str>>>,
}

/// How one changed document sits in one group: the month it occupied before
/// and after, `None` when it was not (is not) a member. For schemes without
/// months the bucket is carried along and ignored.
struct Membership {
    id: Arc<str>,
    before: Option<Bucket>,
    after: Option<Bucket>,
}

/// A group touched by the batch: its layout before the batch and the changes.
struct Touched {
    before: Layout,
    members: Vec<Membership>,
}

/// Keeps the first position and the last state of each document.
fn coalesce(changes: &[Change]) -> Vec<(DocKey, Option<Arc<Document>>)> {
    let mut order: Vec<DocKey> = Vec::new();
    let mut last: HashMap<&DocKey, &Option<Arc<Document>>> = HashMap::new();
    for c in changes {
        if last.insert(&c.key, &c.new).is_none() {
            order.push(c.key.clone());
        }
    }
    order
        .into_iter()
        .map(|k| {
            let new = last[&k].clone();
            (k, new)
        })
        .collect()
}

impl SiteState {
    /// Applies a batch of changes (in event order) and plans its pages.
    pub fn apply(&mut self, changes: &[Change]) -> Applied {
        let batch = coalesce(changes);
        if self.docs.is_empty() && self.aliases.is_empty() {
            return self.apply_to_blank(batch);
        }
        let site = self.site.clone();
        let mut out = Applied::default();

        // Before: the layout of every touched group, the paths at stake and
        // what the sitemap says about everyone who claims them.
        let mut touched: BTreeMap<(RouteIx, Arc<str>), Touched> = BTreeMap::new();
        for &ix in site.listing_routes() {
            for (key, new) in &batch {
                let old = self.docs.get(key);
                let before = old.map(|d| (site.groups_of(ix, d), site.bucket(d)));
                let after = new.as_ref().map(|d| (site.groups_of(ix, d), site.bucket(d)));
                let groups: BTreeSet<&Arc<str>> = before.iter().chain(after.iter()).flat_map(|(gs, _)| gs).collect();
                for g in groups {
                    let entry = touched
                        .entry((ix, g.clone()))
                        .or_insert_with(|| Touched { before: self.layout(ix, g), members: Vec::new() });
                    let side = |s: &Option<(Vec<Arc<str>>, Bucket)>| {
                        s.as_ref().filter(|(gs, _)| gs.contains(g)).map(|(_, b)| *b)
                    };
                    entry.members.push(Membership { id: key.id.clone(), before: side(&before), after: side(&after) });
                }
            }
        }
        let mut paths: BTreeSet<Arc<str>> = BTreeSet::new();
        for (key, new) in &batch {
            self.paths_at_stake(key, new.as_deref(), &mut paths);
        }
        let claimants_before = self.claimants(&paths);
        let sitemap_before: HashMap<DocKey, Vec<String>> = claimants_before
            .iter()
            .chain(batch.iter().map(|(k, _)| k))
            .map(|k| (k.clone(), self.sitemap_paths(k).into_iter().map(|p| p.to_string()).collect()))
            .collect();
        let chunks_before = self.sitemap.pages(self.sitemap_capacity());

        // Change the state.
        let mut joiners = Vec::new();
        for (key, new) in &batch {
            let old_paths = self.detach(key).map(|(_, paths)| paths).unwrap_or_default();
            match new {
                Some(doc) => {
                    self.attach(doc.clone(), &mut joiners);
                    for &ix in site.doc_routes(&key.collection) {
                        let route = site.route_name(ix).to_string();
                        let new_path = self.doc_paths.get(&(ix, key.clone())).cloned();
                        let old_path = old_paths.iter().find(|(r, _)| *r == ix).map(|(_, p)| p.clone());
                        if let (Some(old_path), Some(new_path)) = (&old_path, &new_path)
                            && old_path != new_path
                            && self.add_alias(ix, old_path.clone(), key.clone())
                        {
                            out.added_aliases.push(AliasRow {
                                route: route.clone(),
                                path: old_path.to_string(),
                                doc: key.clone(),
                            });
                        }
                        if let Some(new_path) = &new_path
                            && self.remove_alias(ix, new_path, key)
                        {
                            out.removed_aliases.push(AliasRow { route, path: new_path.to_string(), doc: key.clone() });
                        }
                    }
                }
                None => {
                    let former: Vec<(RouteIx, Arc<str>)> =
                        self.aliases_by_doc.get(key).map(|s| s.iter().cloned().collect()).unwrap_or_default();
                    for (ix, path) in former {
                        self.remove_alias(ix, &path, key);
                        out.removed_aliases.push(AliasRow {
                            route: site.route_name(ix).into(),
                            path: path.to_string(),
                            doc: key.clone(),
                        });
                    }
                }
            }
        }
        self.number(joiners, &mut out.new_seqs);
        for (ix, g) in touched.keys() {
            self.switch_if_hot(*ix, g, &mut out.new_seqs);
        }

        // After: documents' paths, the sitemap, then listings.
        let claimants_after = self.claimants(&paths);
        out.candidates.extend(paths.iter().map(|p| PageId::DocPath(p.clone())));
        // A document's feeds live below its page and change with it.
        for format in self.site.document_feeds() {
            out.candidates.extend(paths.iter().map(|p| PageId::DocFeed(p.clone(), format)));
        }
        if self.site.sitemap_route().is_some() {
            let cap = self.sitemap_capacity();
            let in_batch: HashSet<&DocKey> = batch.iter().map(|(k, _)| k).collect();
            let concerned: BTreeSet<DocKey> = batch
                .iter()
                .map(|(k, _)| k)
                .chain(claimants_before.iter())
                .chain(claimants_after.iter())
                .cloned()
                .collect();
            self.refresh_sitemap(concerned.iter().cloned(), &mut out.new_seqs);
            for key in &concerned {
                let now: Vec<String> = self.sitemap_paths(key).into_iter().map(|p| p.to_string()).collect();
                let was = sitemap_before.get(key).cloned().unwrap_or_default();
                let listed = !was.is_empty() || !now.is_empty();
                if listed
                    && (was != now || in_batch.contains(key))
                    && let Some(seq) = self.sitemap.seq(key)
                {
                    out.candidates.insert(PageId::SitemapChunk(Lane::<DocKey>::page_of(seq, cap)));
                }
            }
            if self.sitemap.pages(cap) != chunks_before {
                out.candidates.insert(PageId::SitemapIndex);
            }
        }
        for ((ix, g), t) in &touched {
            let after = self.layout(*ix, g);
            self.diff(*ix, g, t, &after, &mut out.candidates);
        }
        out.touched = touched.into_iter().map(|(k, t)| (k, t.members.into_iter().map(|m| m.id).collect())).collect();
        out
    }

    /// [`SiteState::apply`] to a state with no document and no former path
    /// (a first build): the batch can only add, and every page is new, so
    /// the documents are attached and numbered as [`SiteState::load`] does,
    /// without comparing each group's layout before and after, and every
    /// page is a candidate.
    fn apply_to_blank(&mut self, batch: Vec<(DocKey, Option<Arc<Document>>)>) -> Applied {
        let site = self.site.clone();
        let mut out = Applied::default();
        let docs: Vec<Arc<Document>> = batch.into_iter().filter_map(|(_, doc)| doc).collect();
        for doc in &docs {
            for &ix in site.listing_routes() {
                for g in site.groups_of(ix, doc) {
                    out.touched.entry((ix, g)).or_default().push(doc.key.id.clone());
                }
            }
        }
        let joiners = self.attach_all(docs);
        self.number_all(joiners, &mut out.new_seqs);
        out.candidates = self.all_pages().into_iter().collect();
        out
    }

    /// The paths a change can affect: the document's current and new paths and
    /// its former paths.
    fn paths_at_stake(&self, key: &DocKey, new: Option<&Document>, out: &mut BTreeSet<Arc<str>>) {
        for &ix in self.site.doc_routes(&key.collection) {
            if let Some(p) = self.doc_paths.get(&(ix, key.clone())) {
                out.insert(p.clone());
            }
            if let Some(p) = new.and_then(|d| self.site.doc_path(ix, d)).filter(|p| !self.site.reserved_by_route(p)) {
                out.insert(Arc::from(p));
            }
        }
        // Former paths redirect to the current path or answer 410: they only
        // change when the document moves, is taken down or restored, or is deleted.
        let old = self.docs.get(key);
        let moved = match (old, new) {
            (Some(o), Some(n)) => {
                o.status != n.status
                    || self
                        .site
                        .doc_routes(&key.collection)
                        .iter()
                        .any(|&ix| self.site.doc_path(ix, o) != self.site.doc_path(ix, n))
            }
            _ => true,
        };
        if moved && let Some(former) = self.aliases_by_doc.get(key) {
            out.extend(former.iter().map(|(_, p)| p.clone()));
        }
    }

    fn claimants(&self, paths: &BTreeSet<Arc<str>>) -> BTreeSet<DocKey> {
        paths.iter().filter_map(|p| self.claims.get(p)).flatten().map(|c| c.doc.clone()).collect()
    }

    /// Adds the pages of one group whose content may differ between `t.before`
    /// and `after`.
    fn diff(&self, ix: RouteIx, g: &Arc<str>, t: &Touched, after: &Layout, out: &mut BTreeSet<PageId>) {
        let size = self.site.listing_route(ix).page_size;
        let mut emit = |page: ListingPage| {
            out.insert(PageId::Listing { route: ix, group: g.clone(), page });
        };
        // A feed shows its group's newest documents: any change the group
        // sees may change it (two small pages per group, at most).
        self.site.listing_route(ix).feeds.iter().for_each(|&f| emit(ListingPage::Feed(f)));
        let group = self.listings[&ix].groups.get(g);
        match (&t.before, after) {
            (Layout::Offset(b), Layout::Offset(a)) => {
                let changed: HashSet<&Arc<str>> = t.members.iter().map(|m| &m.id).collect();
                for n in offset_diff(b, a, size, &changed) {
                    emit(if n == 1 { ListingPage::First } else { ListingPage::Number(n) });
                }
            }
            (Layout::Head(b), Layout::Head(a)) => {
                let s = size as usize;
                let (fb, fa) = (&b[..b.len().min(s)], &a[..a.len().min(s)]);
                let changed = fa.iter().any(|id| t.members.iter().any(|m| &m.id == id));
                if fb != fa || changed || (b.len() > s) != (a.len() > s) {
                    emit(ListingPage::First);
                }
            }
            (Layout::Stable { top: tb }, Layout::Stable { top: ta }) => {
                let lane = group.and_then(|gr| gr.stable.as_ref());
                let mut pages: BTreeSet<u32> = t
                    .members
                    .iter()
                    .filter(|m| m.before.is_some() || m.after.is_some())
                    .filter_map(|m| lane?.seq(&m.id))
                    .map(|seq| Lane::<Arc<str>>::page_of(seq, size))
                    .collect();
                if ta > tb {
                    pages.extend((*tb).max(1)..=*ta);
                }
                if ta != tb || pages.contains(ta) {
                    emit(ListingPage::First);
                }
                pages.into_iter().for_each(|n| emit(ListingPage::Number(n)));
            }
            (Layout::Date(mb), Layout::Date(ma)) => {
                if mb.keys().ne(ma.keys()) {
                    emit(ListingPage::First);
                }
                let mut pages: BTreeMap<Bucket, BTreeSet<u32>> = BTreeMap::new();
                for m in &t.members {
                    for b in [m.before, m.after].into_iter().flatten() {
                        if let Some(seq) = group.and_then(|gr| gr.buckets.get(&b)).and_then(|l| l.seq(&m.id)) {
                            pages.entry(b).or_default().insert(Lane::<Arc<str>>::page_of(seq, size));
                        }
                    }
                }
                for (b, ta) in ma {
                    let tb = mb.get(b).copied().unwrap_or(0);
                    if *ta > tb {
                        pages.entry(*b).or_default().extend(tb.max(1)..=*ta);
                    }
                }
                for (b, ps) in pages {
                    let (tb, ta) = (mb.get(&b).copied().unwrap_or(0), ma.get(&b).copied().unwrap_or(0));
                    if ta != tb || ps.contains(&ta) {
                        emit(ListingPage::Bucket(b, 0));
                    }
                    ps.into_iter().for_each(|n| emit(ListingPage::Bucket(b, n)));
                }
            }
            (before, after) => {
                // The group appeared, disappeared or changed scheme: every page of both.
                before.pages(size).into_iter().chain(after.pages(size)).for_each(emit);
            }
        }
    }
}

/// Offset pages (1-based) whose items or navigation differ between member
/// lists `b` and `a`, or that show a changed document.
fn offset_diff(b: &[Arc<str>], a: &[Arc<str>], size: u32, changed: &HashSet<&Arc<str>>) -> Vec<u32> {
    let (pb, pa) = (pages_for(b.len(), size), pages_for(a.len(), size));
    let s = size as usize;
    (1..=pb.max(pa))
        .filter(|&n| {
            if n > pa || n > pb || pa != pb {
                return true;
            }
            let lo = (n - 1) as usize * s;
            let (sb, sa) = (&b[lo..(lo + s).min(b.len())], &a[lo..(lo + s).min(a.len())]);
            sb != sa || sa.iter().any(|id| changed.contains(id))
        })
        .collect()
}
