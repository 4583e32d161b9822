//! Pages rendered on request: the deep pages of `head` listings and their
//! JSON feeds.
//!
//! [`OnDemand`] keeps its own copy of the published site model, brought up to
//! date by following generations (the documents each one published). Every
//! input is bounded:
//!
//! - only canonical cursors of members are rendered; any other cursor is
//!   redirected to the nearest member's (so the pages of a listing are at most
//!   its members, whatever clients send);
//! - pages live in memory only, in a cache bounded in bytes
//!   (`[serve] on_request_cache_mb`): nothing is written to storage, so
//!   nothing needs collecting;
//! - rendering runs on the blocking pool, one render per page at a time
//!   (concurrent requests for it wait for that one), and at most as many at
//!   once as there are cores.
//!
//! A cached page is dropped exactly when a generation changes what it shows:
//! its items, their content, or whether a page follows it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use quick_cache::Weighter;
use quick_cache::sync::Cache;
use sesame_model::{Change, OnDemandPage, OnDemandReply};
use sesame_objects::{Encoded, compressible};
use sesame_render::Output;
use sesame_site::{Body, RouteIx, Site, SiteState};
use sesame_store::{GenerationWatch, MetaStore};
use tokio::sync::Semaphore;

use crate::{EngineError, Project};

/// Identifies a page rendered on request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    route: RouteIx,
    group: Arc<str>,
    feed: bool,
    /// A canonical cursor (`None`: the feed's first page).
    cursor: Option<String>,
}

/// A rendered page with what it shows, to tell whether a change concerns it.
#[derive(Debug)]
struct Cached {
    page: Arc<OnDemandPage>,
    ids: Vec<Arc<str>>,
    next: Option<String>,
}

/// Weighs cached pages by the memory they hold.
#[derive(Clone)]
struct ByMemory;

impl Weighter<Key, Arc<Cached>> for ByMemory {
    fn weight(&self, key: &Key, c: &Arc<Cached>) -> u64 {
        let p = &c.page;
        let bytes =
            p.identity.len() + p.gzip.as_ref().map_or(0, |b| b.len()) + p.brotli.as_ref().map_or(0, |b| b.len());
        let text = p.deps.len() + p.hash.len() + key.cursor.as_ref().map_or(0, String::len);
        (bytes + text + c.ids.iter().map(|id| id.len() + 32).sum::<usize>() + 256) as u64
    }
}

/// Typical weight of a page, for sizing the cache's index.
const TYPICAL_PAGE: u64 = 16 * 1024;

/// Renders and caches pages that are not pre-rendered.
pub struct OnDemand {
    /// The project's site narrowed to what these pages read
    /// ([`Site::for_pages_on_request`]): the model holds only their indexes.
    site: Arc<Site>,
    /// Renders with the project's templates, followed after full builds.
    project: Arc<Project>,
    store: Arc<dyn MetaStore>,
    state: RwLock<SiteState>,
    generation: AtomicU64,
    /// Bumped by every refresh: a render that started before one is not cached.
    epoch: AtomicU64,
    refreshing: tokio::sync::Mutex<()>,
    cache: Cache<Key, Arc<Cached>, ByMemory>,
    renders: Semaphore,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand").field("generation", &self.generation.load(Ordering::Acquire)).finish()
    }
}

impl OnDemand {
    /// Loads the published state; pages are cached in up to `cache_bytes`.
    pub async fn load(project: &Arc<Project>, cache_bytes: u64) -> Result<Arc<OnDemand>, EngineError> {
        // The generation is read first: a commit landing in between is then
        // applied again by the next refresh, which changes nothing.
        let generation = project.store.latest_generation().await?;
        let site = project.site.for_pages_on_request();
        let state = Self::published(project.store.as_ref(), &site).await?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let capacity = cache_bytes.max(TYPICAL_PAGE);
        Ok(Arc::new(OnDemand {
            site,
            project: project.clone(),
            store: project.store.clone(),
            state: RwLock::new(state),
            generation: AtomicU64::new(generation),
            epoch: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            cache: Cache::with_weighter((capacity / TYPICAL_PAGE).max(16) as usize, capacity, ByMemory),
            renders: Semaphore::new(cores),
        }))
    }

    /// The published documents in the narrowed model: its `head` listings
    /// number nothing and it has no sitemap, and its pages' items link to
    /// current paths, so no sequence number or former path is read.
    async fn published(store: &dyn MetaStore, site: &Arc<Site>) -> Result<SiteState, EngineError> {
        let docs = store.published_documents().await?;
        Ok(SiteState::load(site.clone(), docs, [], []).0)
    }

    /// Whether the site has any `head` listing (otherwise there is nothing to serve).
    pub fn needed(site: &Site) -> bool {
        site.listing_routes().iter().any(|&ix| site.listing_route(ix).scheme == sesame_config::Scheme::Head)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SiteState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the generations committed since the last refresh and drops the
    /// cached pages they change.
    pub async fn refresh(&self) -> Result<(), EngineError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let known = self.generation.load(Ordering::Acquire);
        let changes = self.store.published_changes(known).await?;
        if changes.latest == known {
            return Ok(());
        }
        // A full build may have rendered with other templates: follow them
        // (every cached page is dropped below anyway).
        if changes.full {
            self.project.follow_rendering().await?;
        }
        let fresh = if changes.full { Some(Self::published(self.store.as_ref(), &self.site).await?) } else { None };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match fresh {
            Some(fresh) => {
                let previous = std::mem::replace(&mut *state, fresh);
                self.cache.clear();
                // Freed after the lock: dropping a whole site model takes a while.
                drop(state);
                drop(previous);
                self.generation.store(changes.latest, Ordering::Release);
                return Ok(());
            }
            None => {
                let batch: Vec<Change> =
                    changes.docs.into_iter().map(|(key, doc)| Change { key, new: doc.map(Arc::new) }).collect();
                let applied = state.apply(&batch);
                self.invalidate(&state, &applied.touched);
            }
        }
        self.generation.store(changes.latest, Ordering::Release);
        Ok(())
    }

    fn invalidate(&self, state: &SiteState, touched: &BTreeMap<(RouteIx, Arc<str>), Vec<Arc<str>>>) {
        self.cache.retain(|key, cached| {
            let Some(changed) = touched.get(&(key.route, key.group.clone())) else { return true };
            let now = state.head_ids(key.route, &key.group, key.cursor.as_deref());
            let same_items = now.as_ref().is_some_and(|(ids, next)| *ids == cached.ids && *next == cached.next);
            same_items && !cached.ids.iter().any(|id| changed.contains(id))
        });
    }

    /// Follows generations committed by any process (announced by the store,
    /// or polled every `interval`).
    pub fn follow(self: &Arc<Self>, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut watch = GenerationWatch::new(store.as_ref(), interval).await;
            loop {
                watch.next().await;
                let Some(me) = me.upgrade() else { return };
                if let Err(e) = me.refresh().await {
                    tracing::warn!(error = %e, "cannot follow new generations for pages rendered on request");
                }
            }
        })
    }

    /// Number of cached pages.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Bytes the cached pages hold (bounded by the configured capacity).
    pub fn cached_bytes(&self) -> u64 {
        self.cache.weight()
    }

    /// The answer for a request: `BASE?after=CURSOR` of a `head` listing, or
    /// its `BASEfeed.json` (with an optional `after`). A cursor that is not
    /// the canonical cursor of a member is redirected to the one of the
    /// nearest member before it. `None` for anything else, including
    /// malformed cursors.
    pub async fn page(self: &Arc<Self>, path: &str, query: Option<&str>) -> Option<OnDemandReply> {
        let cursor = sesame_model::on_demand::after_cursor(query)
            .and_then(|raw| percent_encoding::percent_decode_str(raw).decode_utf8().ok().map(|c| c.into_owned()));
        let key = {
            let state = self.read();
            let (route, group, feed) = state.head_listing(path)?;
            match cursor {
                None if feed => Key { route, group, feed, cursor: None },
                // The first page is published like any other.
                None => return None,
                Some(cursor) => match state.locate_cursor(route, &group, &cursor)? {
                    Ok(()) => Key { route, group, feed, cursor: Some(cursor) },
                    Err(nearest) => {
                        let to = match nearest {
                            Some(c) => format!("{path}?after={c}"),
                            None => path.to_string(),
                        };
                        return Some(OnDemandReply::Redirect(to));
                    }
                },
            }
        };
        self.cached_page(key).await
    }

    async fn cached_page(self: &Arc<Self>, key: Key) -> Option<OnDemandReply> {
        let guard = match self.cache.get_value_or_guard_async(&key).await {
            Ok(hit) => return Some(OnDemandReply::Page(hit.page.clone())),
            Err(guard) => guard,
        };
        let _slot = self.renders.acquire().await.ok()?;
        let me = self.clone();
        let rendering = key.clone();
        let (cached, epoch) = tokio::task::spawn_blocking(move || me.render(&rendering)).await.ok()??;
        let cached = Arc::new(cached);
        {
            // Under the state lock a refresh cannot run, so the epoch stays
            // what the check sees until the page is in the cache.
            let _state = self.read();
            if self.epoch.load(Ordering::Acquire) == epoch {
                let _ = guard.insert(cached.clone());
            }
        }
        metrics::gauge!("sesame_on_request_cache_bytes").set(self.cache.weight() as f64);
        metrics::gauge!("sesame_on_request_cache_pages").set(self.cache.len() as f64);
        Some(OnDemandReply::Page(cached.page.clone()))
    }

    /// Renders a page (on a blocking thread); with the epoch it reflects.
    fn render(&self, key: &Key) -> Option<(Cached, u64)> {
        let state = self.read();
        let epoch = self.epoch.load(Ordering::Acquire);
        let resolved = if key.feed {
            state.resolve_feed(key.route, &key.group, key.cursor.as_deref())?
        } else {
            state.resolve_after(key.route, &key.group, key.cursor.as_deref()?)?
        };
        let ids: Vec<Arc<str>> = match &resolved.body {
            Body::Listing { items, .. } | Body::Feed { items, .. } => {
                items.iter().map(|i| i.doc.key.id.clone()).collect()
            }
            _ => Vec::new(),
        };
        let next = state.head_ids(key.route, &key.group, key.cursor.as_deref()).and_then(|(_, n)| n);
        let (bytes, content_type) = match self.project.renderer().render(&resolved) {
            Ok(Output::Page { bytes, content_type }) => (bytes, content_type),
            Ok(_) => return None,
            Err(e) => {
                tracing::error!(error = %e, path = %resolved.path, "cannot render a page on request");
                return None;
            }
        };
        let deps = resolved.deps;
        drop(state);
        let mut encoded = Encoded::plain(bytes);
        if compressible(content_type, encoded.identity.len() as u64) {
            encoded.add_variants(content_type);
        }
        let page = OnDemandPage {
            hash: encoded.hash,
            content_type: content_type.to_string(),
            deps,
            modified: sesame_model::time::now(),
            identity: encoded.identity,
            gzip: encoded.gzip,
            brotli: encoded.brotli,
        };
        Some((Cached { page: Arc::new(page), ids, next }, epoch))
    }
}
