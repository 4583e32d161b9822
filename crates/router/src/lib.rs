//! The router: serves the current generation over HTTP.
//!
//! Paths resolve through an in-memory table of pointers (path → object hash,
//! redirect or gone), loaded from the metadata store and kept current by
//! applying the pointers each new generation changed. A generation's changes
//! are applied under one write lock, so a reader sees all of a batch or none.
//! Bodies come from object storage by hash (small ones through an in-memory
//! cache; objects never change, so it needs no invalidation); nothing is ever
//! read by request path, so no request can reach outside the store.

mod bodies;
mod plan;
mod respond;
mod rfc;
pub mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::extract::State;
use axum::response::Response;
use sesame_model::{Deps, OnDemandReply, ServeRules};
use sesame_objects::ObjectStorage;
use sesame_store::{GenerationWatch, MetaStore, ObjectRow, Pointer, StoreError, Target};

/// What the router serves for one path.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Target of the pointer.
    pub target: Target,
    /// Dependency keys.
    pub deps: Deps,
    /// Last content change, Unix seconds.
    pub modified: i64,
    /// Response headers derived from the fields above, built on first use.
    headers: OnceLock<respond::EntryHeaders>,
}

impl Entry {
    /// An entry for a pointer's target, dependency keys and modification time.
    pub fn new(target: Target, deps: Deps, modified: i64) -> Entry {
        Entry { target, deps, modified, headers: OnceLock::new() }
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target && self.deps == other.deps && self.modified == other.modified
    }
}

impl Eq for Entry {}

/// A source of pages rendered on request. The router asks it only for
/// requests with an `after=` query or for a `feed.json` path.
#[async_trait::async_trait]
pub trait Dynamic: Send + Sync {
    /// The page for `path` and `query`, if this source renders it.
    async fn page(&self, path: &str, query: Option<&str>) -> Option<OnDemandReply>;
}

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How the site is answered (shared with the edge Worker).
    pub rules: ServeRules,
    /// Memory for hot object bodies, in bytes (0: none).
    pub cache_bytes: u64,
    /// Compress text objects stored without variants on request. Meant for
    /// sites that store none (`[publish] compress = false`): where variants
    /// follow a publish, the router waits for them, as the Worker does.
    pub compress_on_request: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig { rules: ServeRules::default(), cache_bytes: 64 * 1024 * 1024, compress_on_request: false }
    }
}

/// Path → entry, and hash → object for `/_v/<hash>` URLs.
#[derive(Debug, Default)]
struct Maps {
    paths: HashMap<Box<str>, Arc<Entry>>,
    /// Objects referenced by current pointers: reference count, row, media type.
    hashes: HashMap<Box<str>, (u32, ObjectRow, Arc<str>)>,
}

impl Maps {
    fn unref(&mut self, entry: &Entry) {
        if let Target::Page { object, .. } = &entry.target
            && let Some(slot) = self.hashes.get_mut(object.hash.as_str())
        {
            slot.0 -= 1;
            if slot.0 == 0 {
                self.hashes.remove(object.hash.as_str());
            }
        }
    }

    fn reference(&mut self, entry: &Entry) {
        if let Target::Page { object, content_type } = &entry.target {
            let slot = self
                .hashes
                .entry(object.hash.as_str().into())
                .or_insert_with(|| (0, object.clone(), Arc::from(content_type.as_str())));
            slot.0 += 1;
        }
    }
}

/// The maps plus the generation they reflect.
#[derive(Debug, Default)]
struct Table {
    maps: RwLock<Maps>,
    generation: AtomicU64,
}

impl Table {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, path: &str) -> Option<Arc<Entry>> {
        self.read().paths.get(path).cloned()
    }

    /// The object with this hash, if a current pointer references it.
    fn object(&self, hash: &str) -> Option<(ObjectRow, Arc<str>)> {
        self.read().hashes.get(hash).map(|(_, row, ct)| (row.clone(), ct.clone()))
    }

    /// Applies a generation's pointers atomically with respect to readers.
    fn apply(&self, generation: u64, pointers: Vec<Pointer>) {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        for p in pointers {
            if let Some(old) = maps.paths.remove(p.path.as_str()) {
                maps.unref(&old);
            }
            if p.target != Target::Removed {
                let entry = Arc::new(Entry::new(p.target, p.deps, p.modified));
                maps.reference(&entry);
                maps.paths.insert(p.path.into(), entry);
            }
        }
        self.generation.store(generation, Ordering::Release);
    }
}

/// The serving side of sesame.
pub struct Router {
    table: Table,
    store: Arc<dyn MetaStore>,
    objects: Arc<dyn ObjectStorage>,
    config: RouterConfig,
    dynamic: Option<Arc<dyn Dynamic>>,
    bodies: Option<bodies::Bodies>,
    /// Header values fixed by the configuration.
    fixed: respond::FixedHeaders,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("generation", &self.generation()).field("paths", &self.len()).finish()
    }
}

impl Router {
    /// Loads the current pointers. `dynamic` serves pages rendered on request.
    pub async fn load(
        store: Arc<dyn MetaStore>,
        objects: Arc<dyn ObjectStorage>,
        config: RouterConfig,
        dynamic: Option<Arc<dyn Dynamic>>,
    ) -> Result<Arc<Router>, StoreError> {
        let bodies = bodies::Bodies::new(config.cache_bytes);
        let fixed = respond::FixedHeaders::new(&config);
        let router = Arc::new(Router { table: Table::default(), store, objects, config, dynamic, bodies, fixed });
        router.refresh().await?;
        Ok(router)
    }

    /// Applies generations committed since the last refresh; returns the
    /// generation now served.
    pub async fn refresh(&self) -> Result<u64, StoreError> {
        let known = self.table.generation.load(Ordering::Acquire);
        let latest = self.store.latest_generation().await?;
        if latest == known && known != 0 {
            return Ok(known);
        }
        let (latest, changed) = self.store.pointers_since(known).await?;
        self.table.apply(latest, changed);
        Ok(latest)
    }

    /// The generation being served.
    pub fn generation(&self) -> u64 {
        self.table.generation.load(Ordering::Acquire)
    }

    /// Number of paths served.
    pub fn len(&self) -> usize {
        self.table.read().paths.len()
    }

    /// Whether nothing is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for a path.
    pub fn entry(&self, path: &str) -> Option<Arc<Entry>> {
        self.table.get(path)
    }

    /// Follows generations committed by other processes: at once when the
    /// store announces them (PostgreSQL), and by polling every `interval` in
    /// case an announcement is missed (or the store cannot announce). In-process
    /// publishers call [`Router::refresh`] directly right after committing.
    pub fn follow(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let router = Arc::downgrade(self);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut watch = GenerationWatch::new(store.as_ref(), interval).await;
            loop {
                watch.next().await;
                let Some(router) = router.upgrade() else { return };
                if let Err(e) = router.refresh().await {
                    tracing::warn!(error = %e, "cannot refresh pointers; serving the previous generation");
                }
            }
        })
    }

    /// An axum service answering every path.
    pub fn app(self: &Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(serve).with_state(self.clone())
    }
}

async fn serve(State(router): State<Arc<Router>>, request: Request) -> Response {
    // The request's parts by reference: extracting them one by one would copy them.
    let (parts, _) = request.into_parts();
    respond::respond(&router, &parts.method, &parts.uri, &parts.headers).await
}
