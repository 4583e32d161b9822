//! Parity of the pure core: after any sequence of batches, the pages published
//! incrementally (planner candidates, resolved and applied one batch at a time)
//! equal a full build of the final state. Pages are "rendered" to their Debug
//! text, which includes every document field, so a page the planner forgets to
//! revisit shows up as a difference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use sesame_config::Config;
use sesame_model::{AliasRow, Change, DocKey, Document, SeqRow, Status};
use sesame_site::{Body, ListingPage, PageId, Site, SiteState};

/// The site both parity suites build (one file, so that they cannot drift).
const CONFIG: &str = include_str!("parity.toml");

fn site() -> Arc<Site> {
    Site::new(Config::parse(CONFIG, Path::new("sesame.toml")).expect("test config is valid"))
}

/// One user-level event.
#[derive(Debug, Clone)]
enum Op {
    Upsert {
        id: u8,
        title: u8,
        date: Option<u8>,
        tags: Vec<u8>,
        owner: u8,
        slug: Option<u8>,
    },
    Delete(u8),
    Takedown(u8),
    Restore(u8),
    Flag(u8, bool),
    /// The platform sets or clears the custom domain of a document's site.
    Domain(u8, Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..14u8, 0..3u8, prop::option::weighted(0.8, 0..4u8), prop::collection::vec(0..3u8, 0..3), 0..3u8, prop::option::of(0..4u8))
            .prop_map(|(id, title, date, tags, owner, slug)| Op::Upsert { id, title, date, tags, owner, slug }),
        1 => (0..14u8).prop_map(Op::Delete),
        1 => (0..14u8).prop_map(Op::Takedown),
        1 => (0..14u8).prop_map(Op::Restore),
        1 => (0..14u8, any::<bool>()).prop_map(|(id, on)| Op::Flag(id, on)),
        1 => (0..14u8, prop::option::of(0..2u8)).prop_map(|(id, domain)| Op::Domain(id, domain)),
    ]
}

/// The authoritative content, as the store would hold it.
#[derive(Default)]
struct Content {
    docs: BTreeMap<DocKey, Document>,
    clock: i64,
}

impl Content {
    fn key(id: u8) -> DocKey {
        DocKey::new("items", id.to_string())
    }

    /// Applies an op; returns the resulting change, if any.
    fn apply(&mut self, op: &Op) -> Option<Change> {
        self.clock += 1;
        let (key, new) = match op {
            Op::Upsert { id, title, date, tags, owner, slug } => {
                let key = Self::key(*id);
                let mut data = serde_json::Map::new();
                data.insert("title".into(), format!("Title {title}").into());
                if let Some(d) = date {
                    data.insert("date".into(), format!("2024-0{}-1{}", 1 + d / 2, d % 2).into());
                }
                data.insert("tags".into(), tags.iter().map(|t| format!("tag {t}")).collect::<Vec<_>>().into());
                data.insert("owner".into(), format!("u{owner}").into());
                if let Some(s) = slug {
                    data.insert("slug".into(), format!("slug-{s}").into());
                }
                let prev = self.docs.get(&key);
                let doc = Document {
                    key: key.clone(),
                    owner: Some(Arc::from(format!("u{owner}"))),
                    created: prev.map_or(self.clock, |d| d.created),
                    updated: self.clock,
                    status: prev.map_or(Status::Live, |d| d.status),
                    flags: prev.map(|d| d.flags.clone()).unwrap_or_default(),
                    data: data.into(),
                    media: Default::default(),
                    domain: prev.and_then(|d| d.domain.clone()),
                };
                (key, Some(doc))
            }
            Op::Delete(id) => {
                let key = Self::key(*id);
                self.docs.get(&key)?;
                (key, None)
            }
            Op::Takedown(id) | Op::Restore(id) | Op::Flag(id, _) | Op::Domain(id, _) => {
                let key = Self::key(*id);
                let mut doc = self.docs.get(&key)?.clone();
                match op {
                    Op::Takedown(_) => doc.status = Status::Removed,
                    Op::Restore(_) => doc.status = Status::Live,
                    Op::Flag(_, on) => doc.set_flag("adult", *on),
                    Op::Domain(_, d) => doc.domain = d.map(|d| Arc::from(format!("site{d}.test"))),
                    _ => unreachable!(),
                }
                doc.updated = self.clock;
                (key, Some(doc))
            }
        };
        match &new {
            Some(d) => self.docs.insert(key.clone(), d.clone()),
            None => self.docs.remove(&key),
        };
        Some(Change { key, new: new.map(Arc::new) })
    }
}

/// The "rendered" pages of a full build of `state`.
fn full_build(state: &SiteState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in state.all_pages() {
        let r = state.resolve(&id).unwrap_or_else(|| panic!("listed page {id:?} does not resolve"));
        let previous = out.insert(r.path.clone(), format!("{:?}", r.body));
        assert!(previous.is_none(), "two pages at {}", r.path);
    }
    out
}

/// Applies a batch's candidates to a published map.
fn publish(state: &SiteState, candidates: &BTreeSet<PageId>, published: &mut BTreeMap<String, String>) {
    let mut seen = BTreeSet::new();
    for id in candidates {
        assert_eq!(state.exists(id), state.resolve(id).is_some(), "exists() disagrees with resolve() for {id:?}");
        match state.resolve(id) {
            Some(r) => {
                assert!(seen.insert(r.path.clone()), "two candidates at {}", r.path);
                published.insert(r.path, format!("{:?}", r.body));
            }
            None => {
                published.remove(&state.path_of(id));
            }
        }
    }
}

/// Every navigation link of every listing page points at a published page.
fn assert_links_resolve(state: &SiteState) {
    let full = full_build(state);
    for id in state.all_pages() {
        let Some(r) = state.resolve(&id) else {
            continue;
        };
        if let Body::Listing { pagination, buckets, .. } = &r.body {
            let links = [&pagination.newest, &pagination.newer, &pagination.older, &pagination.oldest, &pagination.up]
                .into_iter()
                .flatten()
                .chain(pagination.jumps.iter())
                .chain(buckets.iter());
            for l in links {
                if l.href.contains('?') {
                    continue; // cursor links are served on demand
                }
                assert!(full.contains_key(&l.href), "{} links to missing {}", r.path, l.href);
            }
        }
    }
}

/// Following "Older" cursors from the first page of the `head` listing visits
/// every member once, in the same order as the `offset` listing, and the JSON
/// feed chain agrees.
fn assert_head_chain_matches_offset(state: &SiteState) {
    let titles = |body: &Body| match body {
        Body::Listing { items, .. } | Body::Feed { items, .. } => {
            items.iter().map(|i| i.doc.key.id.to_string()).collect::<Vec<_>>()
        }
        other => panic!("not a listing: {other:?}"),
    };
    let (ix, group, _) = state.head_listing("/head/").expect("head listing");
    let mut expected = Vec::new();
    let mut n = 1;
    loop {
        let id = if n == 1 {
            PageId::Listing { route: 2, group: Arc::from(""), page: sesame_site::ListingPage::First }
        } else {
            PageId::Listing { route: 2, group: Arc::from(""), page: sesame_site::ListingPage::Number(n) }
        };
        let Some(page) = state.resolve(&id) else { break };
        expected.extend(titles(&page.body));
        n += 1;
    }
    let first = state
        .resolve(&PageId::Listing { route: ix, group: group.clone(), page: sesame_site::ListingPage::First })
        .expect("first page");
    let mut walked = titles(&first.body);
    let mut older = match &first.body {
        Body::Listing { pagination, .. } => pagination.older.clone(),
        _ => None,
    };
    while let Some(link) = older {
        let cursor = link.href.split_once("?after=").expect("cursor link").1.to_string();
        assert_eq!(state.locate_cursor(ix, &group, &cursor), Some(Ok(())), "links carry canonical cursors");
        let page = state.resolve_after(ix, &group, &cursor).expect("page after cursor");
        walked.extend(titles(&page.body));
        older = match &page.body {
            Body::Listing { pagination, .. } => pagination.older.clone(),
            _ => None,
        };
    }
    assert_eq!(walked, expected, "head pages walked by cursor");
    let mut fed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = state.resolve_feed(ix, &group, cursor.as_deref()).expect("feed page");
        fed.extend(titles(&page.body));
        match &page.body {
            Body::Feed { next: Some(next), .. } => {
                cursor = Some(next.split_once("?after=").expect("cursor").1.to_string())
            }
            _ => break,
        }
    }
    assert_eq!(fed, expected, "feed pages walked by cursor");
    assert!(state.resolve_after(ix, &group, "garbage").is_none());
    assert!(state.resolve_after(ix, &group, "n!../x").is_none());
    assert_eq!(state.locate_cursor(ix, &group, "garbage"), None);
    // A cursor naming no member leads to the nearest member before it, whose
    // page shows the same items: the pages a client can reach stay bounded.
    for made_up in ["0!zz-gone", "99999999999!a", "-5!m", "0007!x"] {
        let Some(Err(nearest)) = state.locate_cursor(ix, &group, made_up) else { continue };
        let shown = titles(&state.resolve_after(ix, &group, made_up).expect("made-up cursor").body);
        let canonical = match &nearest {
            Some(c) => titles(&state.resolve_after(ix, &group, c).expect("nearest cursor").body),
            None => titles(&first.body),
        };
        assert_eq!(shown, canonical, "{made_up} → {nearest:?}");
    }
}

/// What pages rendered on request show: every page of the `head` listing
/// (its first page, each page after a cursor, reached by "Older" links, and
/// the JSON feed's pages), with their dependency keys, and where made-up
/// cursors lead.
fn head_pages(state: &SiteState) -> Vec<String> {
    let (ix, group, _) = state.head_listing("/head/").expect("head listing");
    let older = |body: &Body| match body {
        Body::Listing { pagination, .. } => pagination.older.as_ref().map(|l| l.href.clone()),
        Body::Feed { next, .. } => next.clone(),
        _ => None,
    };
    let cursor = |href: String| href.split_once("?after=").expect("cursor link").1.to_string();
    let first = PageId::Listing { route: ix, group: group.clone(), page: ListingPage::First };
    let mut page = state.resolve(&first);
    let mut shown = Vec::new();
    while let Some(p) = page {
        shown.push(format!("{} {:?} {:?}", p.path, p.body, p.deps));
        page = older(&p.body).map(cursor).and_then(|c| state.resolve_after(ix, &group, &c));
    }
    let mut feed = state.resolve_feed(ix, &group, None);
    while let Some(p) = feed {
        shown.push(format!("{} {:?} {:?}", p.path, p.body, p.deps));
        feed = older(&p.body).map(cursor).and_then(|c| state.resolve_feed(ix, &group, Some(&c)));
    }
    for made_up in ["0!zz-gone", "99999999999!a", "-5!m", "0007!x", "garbage"] {
        shown.push(format!("{made_up} → {:?}", state.locate_cursor(ix, &group, made_up)));
    }
    shown
}

fn alias_rows(state: &SiteState) -> Vec<AliasRow> {
    state.alias_rows()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_full_build(
        initial in prop::collection::vec(op(), 0..8),
        batches in prop::collection::vec(prop::collection::vec(op(), 1..4), 1..12),
    ) {
        let site = site();
        let mut content = Content::default();
        for op in &initial {
            content.apply(op);
        }
        let (mut state, _) = SiteState::load(site.clone(), content.docs.values().cloned(), [], []);
        // The narrower model the router keeps for pages rendered on request,
        // loaded and followed the same way, shows the same pages.
        let (mut on_request, _) =
            SiteState::load(site.for_pages_on_request(), content.docs.values().cloned(), [], []);
        prop_assert_eq!(head_pages(&on_request), head_pages(&state));
        let mut published = full_build(&state);
        for batch in &batches {
            let changes: Vec<Change> = batch.iter().filter_map(|op| content.apply(op)).collect();
            let applied = state.apply(&changes);
            publish(&state, &applied.candidates, &mut published);
            on_request.apply(&changes);
            prop_assert_eq!(head_pages(&on_request), head_pages(&state), "pages on request after {:?}", batch);

            let (fresh, missing) = SiteState::load(site.clone(), content.docs.values().cloned(), state.seq_rows(), alias_rows(&state));
            // Loaded as the router loads it, from the documents alone (no
            // sequence number, no former path), it shows the same pages.
            let (on_request_fresh, _) =
                SiteState::load(site.for_pages_on_request(), content.docs.values().cloned(), [], []);
            prop_assert_eq!(head_pages(&on_request_fresh), head_pages(&state));
            prop_assert!(missing.is_empty(), "incremental state lacks sequence numbers: {missing:?}");
            prop_assert_eq!(fresh.seq_rows(), state.seq_rows());
            let expected = full_build(&fresh);
            for (path, body) in &expected {
                prop_assert_eq!(published.get(path), Some(body), "page {} differs after {:?}", path, batch);
            }
            for path in published.keys() {
                prop_assert!(expected.contains_key(path), "stale page {} after {:?}", path, batch);
            }
        }
        assert_links_resolve(&state);
        assert_head_chain_matches_offset(&state);
    }

    /// A batch applied to an empty site equals loading the same documents:
    /// both number newcomers oldest first, so a bulk import published
    /// incrementally and a full build agree.
    #[test]
    fn one_batch_equals_load(ops in prop::collection::vec(op(), 0..24)) {
        let site = site();
        let mut content = Content::default();
        let changes: Vec<Change> = ops.iter().filter_map(|op| content.apply(op)).collect();
        let mut incremental = SiteState::new(site.clone());
        let mut applied = incremental.apply(&changes);
        let (loaded, _) = SiteState::load(site, content.docs.values().cloned(), [], []);
        prop_assert_eq!(incremental.seq_rows(), loaded.seq_rows());
        // Every number is new, and is handed back to be persisted.
        applied.new_seqs.sort();
        prop_assert_eq!(applied.new_seqs, incremental.seq_rows());
        // Every page is new.
        let pages: BTreeSet<PageId> = loaded.all_pages().into_iter().collect();
        prop_assert_eq!(applied.candidates, pages);
        prop_assert_eq!(full_build(&incremental), full_build(&loaded));
    }

    /// One event at a time, `stable` and `date` listings re-render a bounded
    /// number of pages per group the document is in: its page, the top page
    /// and the landing (plus the previous top page when a page rolls over); a
    /// `date` change may touch the old month and the new month and the index.
    /// (And the group's feeds, one page each.)
    #[test]
    fn stable_and_date_fan_out_is_bounded(
        initial in prop::collection::vec(op(), 0..10),
        ops in prop::collection::vec(op(), 1..20),
    ) {
        let site = site();
        let mut content = Content::default();
        for op in &initial {
            content.apply(op);
        }
        let (mut state, _) = SiteState::load(site.clone(), content.docs.values().cloned(), [], []);
        for op in &ops {
            let Some(change) = content.apply(op) else { continue };
            let former_paths = state.alias_rows().iter().filter(|a| a.doc == change.key).count();
            let applied = state.apply(&[change]);
            let mut per_group: BTreeMap<(u16, Arc<str>), usize> = BTreeMap::new();
            for c in &applied.candidates {
                match c {
                    // A group's feeds are re-rendered with any change it sees.
                    PageId::Listing { route, page: ListingPage::Feed(f), .. } => {
                        prop_assert!(site.listing_route(*route).feeds.contains(f), "{c:?}: not a configured feed");
                    }
                    PageId::Listing { route, group, .. } => {
                        *per_group.entry((*route, group.clone())).or_default() += 1;
                    }
                    _ => {}
                }
            }
            for ((route, group), n) in per_group {
                let name = site.route_name(route);
                let bound = match name {
                    "stable" | "owners" => 3,
                    "date" | "owner-months" => 6,
                    _ => continue,
                };
                prop_assert!(n <= bound, "{name}/{group}: {n} pages for {op:?}");
            }
            let docs = applied.candidates.iter().filter(|c| matches!(c, PageId::DocPath(_))).count();
            // Old and new path under each of the two document routes, plus former paths.
            prop_assert!(docs <= 4 + former_paths, "{docs} document paths for {op:?}");
        }
    }
}

#[test]
fn frozen_stable_pages_stay_identical_after_later_adds() {
    let site = site();
    let mut content = Content::default();
    let (mut state, _) = SiteState::load(site.clone(), [], [], []);
    let mut published = full_build(&state);
    let mut snapshots: Vec<BTreeMap<String, String>> = Vec::new();
    for id in 0..13u8 {
        let op = Op::Upsert { id, title: 0, date: Some(1), tags: vec![], owner: 0, slug: None };
        let change = content.apply(&op).expect("upsert always changes");
        let applied = state.apply(&[change]);
        publish(&state, &applied.candidates, &mut published);
        snapshots.push(published.clone());
    }
    // After 13 adds at 2 per page, pages 1..=6 are full. Page n is final once
    // page n+1 exists (it gained its "Newer" link), i.e. after add 2n+1.
    let last = snapshots.last().expect("13 snapshots");
    for n in 1..=5u32 {
        let path = format!("/stable/page/{n}/");
        for snap in &snapshots[(2 * n + 1) as usize - 1..] {
            assert_eq!(snap.get(&path), last.get(&path), "{path} changed after it was frozen");
        }
    }
    assert!(last["/stable/page/7/"].contains("Title 0"));
}

#[test]
fn takedown_gives_410_and_slug_change_gives_301() {
    let site = site();
    let mut content = Content::default();
    let (mut state, _) = SiteState::load(site, [], [], []);
    let up = |slug| Op::Upsert { id: 1, title: 0, date: None, tags: vec![], owner: 0, slug: Some(slug) };
    for op in [up(1), up(2)] {
        let c = content.apply(&op).expect("change");
        state.apply(&[c]);
    }
    let redirect = state.resolve(&PageId::DocPath(Arc::from("/s/slug-1/"))).expect("old path answers");
    assert!(matches!(redirect.body, Body::Redirect(ref to) if to == "/s/slug-2/"), "{:?}", redirect.body);
    let c = content.apply(&Op::Takedown(1)).expect("change");
    state.apply(&[c]);
    for path in ["/1/", "/s/slug-2/", "/s/slug-1/"] {
        let r = state.resolve(&PageId::DocPath(Arc::from(path))).expect("path answers");
        assert!(matches!(r.body, Body::Gone), "{path}: {:?}", r.body);
    }
    let c = content.apply(&Op::Restore(1)).expect("change");
    state.apply(&[c]);
    let r = state.resolve(&PageId::DocPath(Arc::from("/1/"))).expect("page");
    assert!(matches!(r.body, Body::Document { .. }));
}

#[test]
fn one_add_rewrites_one_sitemap_chunk_and_the_index_only_for_a_new_chunk() {
    let site = site();
    let mut content = Content::default();
    let (mut state, _) = SiteState::load(site, [], [], []);
    // chunk_size 6 over two document routes in the sitemap: 3 documents a chunk.
    for id in 0..10u8 {
        let op = Op::Upsert { id, title: 0, date: None, tags: vec![], owner: 0, slug: Some(id % 4) };
        let change = content.apply(&op).expect("upsert");
        let applied = state.apply(&[change]);
        let chunks: Vec<&PageId> = applied.candidates.iter().filter(|c| matches!(c, PageId::SitemapChunk(_))).collect();
        let index = applied.candidates.contains(&PageId::SitemapIndex);
        assert_eq!(chunks, vec![&PageId::SitemapChunk(u32::from(id) / 3 + 1)], "add {id}");
        assert_eq!(index, id % 3 == 0, "add {id}: the index changes only with a new chunk");
    }
    // An edit rewrites only the chunk of the edited document, never the index.
    let op = Op::Upsert { id: 4, title: 2, date: None, tags: vec![], owner: 0, slug: Some(0) };
    let applied = state.apply(&[content.apply(&op).expect("edit")]);
    let chunks: Vec<&PageId> =
        applied.candidates.iter().filter(|c| matches!(c, PageId::SitemapChunk(_) | PageId::SitemapIndex)).collect();
    assert_eq!(chunks, vec![&PageId::SitemapChunk(2)]);
    let urls = match state.resolve(&PageId::SitemapChunk(2)).expect("chunk 2").body {
        Body::SitemapUrls(urls) => urls,
        other => panic!("{other:?}"),
    };
    assert!(urls.iter().any(|(url, lastmod)| url.ends_with("/4/") && lastmod.is_some()));
}

#[test]
fn a_listing_switched_from_stable_to_offset_forgets_its_old_numbering() {
    let site = site();
    let mut content = Content::default();
    let (mut state, _) = SiteState::load(site.clone(), [], [], []);
    for id in 0..5u8 {
        let op = Op::Upsert { id, title: id, date: Some(1), tags: vec![], owner: 0, slug: None };
        let change = content.apply(&op).expect("upsert always changes");
        state.apply(&[change]);
    }
    // The numbers the `stable` route persisted, now found under the name of
    // the `offset` route (as after editing its scheme in sesame.toml).
    let renamed: Vec<SeqRow> = state
        .seq_rows()
        .into_iter()
        .filter(|r| r.route == "stable")
        .map(|r| SeqRow { route: "offset".into(), ..r })
        .collect();
    assert!(!renamed.is_empty());
    let docs = || content.docs.values().cloned().collect::<Vec<_>>();
    let (with_old_numbers, _) = SiteState::load(site.clone(), docs(), renamed, []);
    let (fresh, _) = SiteState::load(site, docs(), [], []);
    let offset = |build: BTreeMap<String, String>| -> Vec<(String, String)> {
        build.into_iter().filter(|(path, _)| path.starts_with("/offset/")).collect()
    };
    assert_eq!(offset(full_build(&with_old_numbers)), offset(full_build(&fresh)));
}

#[test]
fn feeds_list_the_newest_documents_or_a_documents_entries_and_a_takedown_changes_them_in_the_same_batch() {
    let site = site();
    let mut content = Content::default();
    let (mut state, _) = SiteState::load(site.clone(), [], [], []);
    for id in 1..=5u8 {
        let c = content.apply(&Op::Upsert { id, title: 0, date: None, tags: vec![], owner: 0, slug: None });
        state.apply(&[c.expect("change")]);
    }
    let feed = PageId::Listing {
        route: site.listing_routes().iter().copied().find(|&ix| site.route_name(ix) == "offset").expect("route"),
        group: Arc::from(""),
        page: ListingPage::Feed(sesame_config::FeedFormat::Json),
    };
    let ids = |state: &SiteState| -> Vec<String> {
        match state.resolve(&feed).expect("the feed").body {
            Body::Syndication { items, .. } => items.iter().map(|i| i.doc.key.id.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(state.path_of(&feed), "/offset/index.json");
    assert_eq!(ids(&state), ["5", "4", "3"], "the newest three, newest first");
    // A document's own feed lives below its page, while it is live.
    let own = PageId::DocFeed(Arc::from("/5/"), sesame_config::FeedFormat::Atom);
    assert_eq!(state.path_of(&own), "/5/index.xml");
    assert!(matches!(state.resolve(&own).expect("its feed").body, Body::DocumentFeed { .. }));
    assert!(state.all_pages().contains(&own));
    let applied = state.apply(&[content.apply(&Op::Takedown(5)).expect("change")]);
    assert!(applied.candidates.contains(&feed), "the takedown re-renders the feed");
    assert_eq!(ids(&state), ["4", "3", "2"]);
    assert!(applied.candidates.contains(&own) && state.resolve(&own).is_none(), "a taken-down document has no feed");
}
