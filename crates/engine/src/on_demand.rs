//! Pages rendered on request: the deep pages of `head` listings and their
//! JSON feeds.
//!
//! [`OnDemand`] keeps its own copy of the published site model, brought up to
//! date by following generations (the documents each one published). Rendered
//! pages are stored as objects (content-addressed, like published pages) and
//! remembered per (listing, group, cursor). A cached page is dropped exactly
//! when a generation changes what it shows: its items, their content, or
//! whether a page follows it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sesame_model::Change;
use sesame_objects::{Encoding, object_key};
use sesame_render::Renderer;
use sesame_site::{Body, RouteIx, Site, SiteState};
use sesame_store::{GenerationWatch, MetaStore, ObjectRow, Target};

use crate::publish::rendered;
use crate::{EngineError, Project};

/// Identifies a page rendered on request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    route: RouteIx,
    group: Arc<str>,
    feed: bool,
    cursor: Option<String>,
}

/// A page rendered on request and stored.
#[derive(Debug, Clone)]
pub struct OnDemandPage {
    /// The stored object.
    pub object: ObjectRow,
    /// `Content-Type`.
    pub content_type: String,
    /// Dependency keys, space-separated.
    pub deps: String,
    /// When it was rendered.
    pub modified: i64,
    /// The identity bytes, when they could not be stored (read-only storage
    /// credentials): served from memory.
    pub inline: Option<bytes::Bytes>,
}

#[derive(Debug, Clone)]
struct Cached {
    page: OnDemandPage,
    /// What it shows, to tell whether a change concerns it.
    ids: Vec<Arc<str>>,
    next: Option<String>,
}

/// Renders and caches pages that are not pre-rendered.
pub struct OnDemand {
    site: Arc<Site>,
    renderer: Arc<Renderer>,
    store: Arc<dyn MetaStore>,
    objects: Arc<dyn sesame_objects::ObjectStorage>,
    state: RwLock<SiteState>,
    generation: AtomicU64,
    refreshing: tokio::sync::Mutex<()>,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand").field("generation", &self.generation.load(Ordering::Acquire)).finish()
    }
}

impl OnDemand {
    /// Loads the published state.
    pub async fn load(project: &Project) -> Result<Arc<OnDemand>, EngineError> {
        // The generation is read first: a commit landing in between is then
        // applied again by the next refresh, which changes nothing.
        let generation = project.store.latest_generation().await?;
        let state = Self::published(project.store.as_ref(), &project.site).await?;
        Ok(Arc::new(OnDemand {
            site: project.site.clone(),
            renderer: project.renderer.clone(),
            store: project.store.clone(),
            objects: project.objects.clone(),
            state: RwLock::new(state),
            generation: AtomicU64::new(generation),
            refreshing: tokio::sync::Mutex::new(()),
            cache: Mutex::new(HashMap::new()),
        }))
    }

    async fn published(store: &dyn MetaStore, site: &Arc<Site>) -> Result<SiteState, EngineError> {
        let snapshot = store.published_snapshot().await?;
        Ok(SiteState::load(site.clone(), snapshot.docs, snapshot.seqs, snapshot.aliases).0)
    }

    /// Whether the site has any `head` listing (otherwise there is nothing to serve).
    pub fn needed(site: &Site) -> bool {
        site.listing_routes().iter().any(|&ix| site.listing_route(ix).scheme == sesame_config::Scheme::Head)
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
        if changes.full {
            let state = Self::published(self.store.as_ref(), &self.site).await?;
            *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        } else {
            let batch: Vec<Change> =
                changes.docs.into_iter().map(|(key, doc)| Change { key, new: doc.map(Arc::new) }).collect();
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let applied = state.apply(&batch);
            self.invalidate(&state, &applied.touched);
        }
        self.generation.store(changes.latest, Ordering::Release);
        Ok(())
    }

    fn invalidate(&self, state: &SiteState, touched: &BTreeMap<(RouteIx, Arc<str>), Vec<Arc<str>>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|key, cached| {
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
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The page for a request: `BASE?after=CURSOR` of a `head` listing, or its
    /// `BASEfeed.json` (with an optional `after`). `None` for anything else,
    /// including malformed cursors.
    pub async fn page(&self, path: &str, query: Option<&str>) -> Option<OnDemandPage> {
        let cursor =
            query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")).map(|c| c.replace("%21", "!")));
        let (route, group, feed) = self.state.read().unwrap_or_else(|e| e.into_inner()).head_listing(path)?;
        if !feed && cursor.is_none() {
            return None; // the first page is published like any other
        }
        let key = Key { route, group, feed, cursor };
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Some(hit.page.clone());
        }
        let (page, ids, next) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
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
            let output = match self.renderer.render(&resolved) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, path, "cannot render a page on request");
                    return None;
                }
            };
            let compress = self.site.config.publish.compress;
            let mut page = rendered(resolved.path, output, resolved.deps.join(" "), compress);
            page.add_variants();
            (page, ids, next)
        };
        let (Target::Page { object, content_type }, Some(encoded)) = (&page.target, &page.encoded) else { return None };
        let variants = [
            (Encoding::Identity, Some(&encoded.identity)),
            (Encoding::Gzip, encoded.gzip.as_ref()),
            (Encoding::Brotli, encoded.brotli.as_ref()),
        ];
        let mut inline = None;
        for (encoding, body) in variants {
            if let Some(body) = body
                && let Err(e) = self.objects.put(&object_key(&object.hash, encoding), body.clone()).await
            {
                tracing::debug!(error = %e, path, "cannot store a page rendered on request; serving it from memory");
                inline = Some(encoded.identity.clone());
                break;
            }
        }
        let page = OnDemandPage {
            object: object.clone(),
            content_type: content_type.clone(),
            deps: page.deps.clone(),
            modified: sesame_model::time::now(),
            inline,
        };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Cached { page: page.clone(), ids, next });
        Some(page)
    }
}
