//! Publishing: pending changes become a generation.
//!
//! A [`Publisher`] holds the published site model in memory. Each call to
//! [`Publisher::publish`] takes the pending events, applies their documents to
//! the model (which yields the candidate pages, new sequence numbers and former
//! paths), renders either the candidates or every page, writes new objects,
//! syncs, and commits it all as one generation. A full build is the same
//! operation with [`Scope::Everything`], so both produce the same state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sesame_model::{Change, Deps, DocKey, SeqRow};
use sesame_render::{Output, content_type_for};
use sesame_site::{PageId, SiteState};
use sesame_store::{Commit, Pending, Pointer, PointerChange};

use crate::publish::{RenderOutcome, Rendered, Stats, Written, differs, render_pages, rendered, write_objects};
use crate::{EngineError, Progress, Project};

/// Pages rendered per step of a full build: bounds memory (rendered bytes are
/// dropped once their objects are written) while keeping both cores busy.
const CHUNK: usize = 4096;

/// Which pages a publish renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The pages the pending changes may affect (incremental).
    Changed,
    /// Every page (a full build, e.g. after a template change).
    Everything,
}

/// The published site model, ready to publish the next batch.
pub struct Publisher {
    state: Arc<SiteState>,
    /// The generation `state` reflects.
    generation: u64,
    /// Sequence numbers assigned while loading (after a configuration change)
    /// that the next commit persists.
    unsaved: Vec<SeqRow>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("documents", &self.state.len()).finish()
    }
}

/// Every page of a state and every static file, rendered a chunk at a time
/// on blocking threads, in parallel.
pub(crate) struct RenderAll<'a> {
    project: &'a Project,
    state: &'a Arc<SiteState>,
    progress: &'a dyn Progress,
    pages: Vec<PageId>,
    done: usize,
    assets: Option<Vec<Rendered>>,
}

impl<'a> RenderAll<'a> {
    pub(crate) fn new(
        project: &'a Project,
        state: &'a Arc<SiteState>,
        progress: &'a dyn Progress,
    ) -> Result<Self, EngineError> {
        let compress = project.site.config.publish.compress;
        let pages = state.all_pages();
        let assets: Vec<Rendered> = project
            .assets()?
            .into_iter()
            .map(|a| {
                let output = Output::Page { bytes: a.bytes, content_type: content_type_for(&a.path) };
                rendered(a.path, output, Deps::default(), compress)
            })
            .collect();
        progress.stage("rendering", (pages.len() + assets.len()) as u64);
        Ok(RenderAll { project, state, progress, pages, done: 0, assets: Some(assets) })
    }

    /// The next chunk, or `None` when every page was handed out.
    pub(crate) async fn next(&mut self) -> Option<Result<Vec<Rendered>, EngineError>> {
        if let Some(assets) = self.assets.take() {
            self.progress.advance(assets.len() as u64);
            return Some(Ok(assets));
        }
        if self.done >= self.pages.len() {
            self.progress.finish();
            return None;
        }
        let end = (self.done + CHUNK).min(self.pages.len());
        let ids = self.pages[self.done..end].to_vec();
        self.done = end;
        let outcomes = match render_blocking(self.project, self.state, ids).await {
            Ok(o) => o,
            Err(e) => return Some(Err(e)),
        };
        self.progress.advance(outcomes.len() as u64);
        Some(Ok(outcomes
            .into_iter()
            .filter_map(|o| match o {
                RenderOutcome::Page(p) => Some(*p),
                RenderOutcome::Absent(path) => {
                    tracing::warn!(%path, "a listed page does not resolve; skipped");
                    None
                }
            })
            .collect()))
    }
}

async fn render_blocking(
    project: &Project,
    state: &Arc<SiteState>,
    ids: Vec<PageId>,
) -> Result<Vec<RenderOutcome>, EngineError> {
    let (st, renderer) = (state.clone(), project.renderer.clone());
    let compress = project.site.config.publish.compress;
    tokio::task::spawn_blocking(move || render_pages(&st, &renderer, &ids, compress))
        .await
        .map_err(|e| EngineError::Internal(format!("render task failed: {e}")))?
}

/// Remembers which page produced each path and refuses a second one.
#[derive(Default)]
pub(crate) struct Paths(HashMap<String, Option<PageId>>);

impl Paths {
    pub fn claim(&mut self, page: &Rendered) -> Result<(), EngineError> {
        match self.0.insert(page.path.clone(), page.source.clone()) {
            None => Ok(()),
            Some(first) => {
                let describe =
                    |s: &Option<PageId>| s.as_ref().map_or_else(|| "a static file".to_string(), |id| format!("{id:?}"));
                Err(EngineError::PathCollision {
                    path: page.path.clone(),
                    first: describe(&first),
                    second: describe(&page.source),
                })
            }
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }
}

/// Pages to commit, collected while rendering.
#[derive(Default)]
struct Collected {
    stats: Stats,
    paths: Paths,
    changed: Vec<PointerChange>,
    removed: Vec<String>,
    written: HashSet<String>,
    objects: Written,
}

impl Collected {
    /// Keeps the pages that differ from `current` and writes their new objects.
    async fn take(
        &mut self,
        project: &Project,
        current: &HashMap<String, Pointer>,
        batch: Vec<Rendered>,
    ) -> Result<(), EngineError> {
        let mut fresh = Vec::new();
        for page in batch {
            self.paths.claim(&page)?;
            self.stats.rendered += 1;
            if differs(current.get(&page.path), &page) {
                self.changed.push(PointerChange {
                    path: page.path.clone(),
                    target: page.target.clone(),
                    deps: page.deps.clone(),
                });
                fresh.push(page);
            }
        }
        write_objects(project.store.as_ref(), &project.objects, fresh, &mut self.written, &mut self.objects).await
    }
}

impl Publisher {
    /// Loads the published state.
    pub async fn load(project: &Project) -> Result<Publisher, EngineError> {
        let started = Instant::now();
        let generation = project.store.latest_generation().await?;
        let snapshot = project.store.published_snapshot().await?;
        let (state, unsaved) = SiteState::load(project.site.clone(), snapshot.docs, snapshot.seqs, snapshot.aliases);
        tracing::info!(documents = state.len(), elapsed = ?started.elapsed(), "published state loaded");
        Ok(Publisher { state: Arc::new(state), generation, unsaved })
    }

    /// The published site model.
    pub fn state(&self) -> &SiteState {
        &self.state
    }

    pub(crate) fn shared_state(&self) -> &Arc<SiteState> {
        &self.state
    }

    /// Publishes a batch of pending events as one generation. With
    /// [`Scope::Changed`] and an empty batch, does nothing and returns `None`.
    ///
    /// The caller holds the publish lease and must have read `pending` while
    /// holding it: a batch read earlier could carry a document state older
    /// than one another process published meanwhile. On failure nothing is
    /// committed and the in-memory state is reloaded from the store, so the
    /// next call starts from what is published.
    pub async fn publish(
        &mut self,
        project: &Project,
        _lease: &PublishLease,
        scope: Scope,
        pending: Pending,
        progress: &dyn Progress,
    ) -> Result<Option<Outcome>, EngineError> {
        if pending.events.is_empty() && scope == Scope::Changed {
            return Ok(None);
        }
        // Another process may have published since this state was loaded.
        if project.store.latest_generation().await? != self.generation {
            *self = Publisher::load(project).await?;
        }
        let result = self.try_publish(project, scope, pending, progress).await;
        if result.is_err() {
            match Publisher::load(project).await {
                Ok(fresh) => *self = fresh,
                Err(e) => tracing::error!(error = %e, "cannot reload the published state after a failed publish"),
            }
        }
        result
    }

    /// Publishes everything pending, due or not.
    pub async fn publish_all(
        &mut self,
        project: &Project,
        lease: &PublishLease,
        scope: Scope,
        progress: &dyn Progress,
    ) -> Result<Option<Outcome>, EngineError> {
        let pending = project.store.pending(u32::MAX, i64::MAX).await?;
        self.publish(project, lease, scope, pending, progress).await
    }

    async fn try_publish(
        &mut self,
        project: &Project,
        scope: Scope,
        pending: Pending,
        progress: &dyn Progress,
    ) -> Result<Option<Outcome>, EngineError> {
        let started = Instant::now();
        let store = project.store.as_ref();
        let changes: Vec<Change> = pending
            .events
            .iter()
            .map(|e| Change { key: e.key.clone(), new: pending.docs.get(&e.key).cloned().flatten().map(Arc::new) })
            .collect();
        let state = Arc::get_mut(&mut self.state)
            .ok_or_else(|| EngineError::Internal("the site state is still in use by a render".into()))?;
        let applied = state.apply(&changes);
        tracing::info!(events = pending.events.len(), candidates = applied.candidates.len(), elapsed = ?started.elapsed(), "changes applied");

        let mut c = Collected::default();
        match scope {
            Scope::Changed => {
                let ids: Vec<PageId> = applied.candidates.iter().cloned().collect();
                c.stats.planned = ids.len() as u64;
                let outcomes = render_blocking(project, &self.state, ids).await?;
                let paths: Vec<String> = outcomes
                    .iter()
                    .map(|o| match o {
                        RenderOutcome::Page(p) => p.path.clone(),
                        RenderOutcome::Absent(path) => path.clone(),
                    })
                    .collect();
                let current: HashMap<String, Pointer> =
                    store.pointers_at(&paths).await?.into_iter().map(|p| (p.path.clone(), p)).collect();
                let mut pages = Vec::new();
                for o in outcomes {
                    match o {
                        RenderOutcome::Page(p) => pages.push(*p),
                        RenderOutcome::Absent(path) if current.contains_key(&path) => c.removed.push(path),
                        RenderOutcome::Absent(_) => {}
                    }
                }
                c.take(project, &current, pages).await?;
            }
            Scope::Everything => {
                let current: HashMap<String, Pointer> =
                    store.pointers().await?.into_iter().map(|p| (p.path.clone(), p)).collect();
                let mut all = RenderAll::new(project, &self.state, progress)?;
                while let Some(batch) = all.next().await {
                    c.take(project, &current, batch?).await?;
                }
                c.removed = current.keys().filter(|p| !c.paths.contains(p)).cloned().collect();
                c.stats.planned = c.stats.rendered;
            }
        }
        tracing::info!(rendered = c.stats.rendered, elapsed = ?started.elapsed(), "pages rendered and written");

        if c.objects.files > 0 {
            project.objects.sync().await?;
        }
        let mut seqs = std::mem::take(&mut self.unsaved);
        seqs.extend(applied.new_seqs);
        let mut stats = c.stats;
        stats.changed = (c.changed.len() + c.removed.len()) as u64;
        stats.objects = c.objects.files;
        stats.bytes = c.objects.bytes;
        stats.events = pending.events.len() as u64;
        stats.documents = {
            let mut keys: Vec<&DocKey> = pending.events.iter().map(|e| &e.key).collect();
            keys.sort();
            keys.dedup();
            keys.len() as u64
        };
        stats.seconds = started.elapsed().as_secs_f64();
        let changed_paths: Vec<String> =
            c.changed.iter().map(|p| p.path.clone()).chain(c.removed.iter().cloned()).collect();
        let changed_tags: Vec<String> = c.changed.iter().filter_map(|p| p.deps.own()).map(str::to_string).collect();
        let mut seen = HashSet::new();
        let published = changes
            .iter()
            .filter(|ch| seen.insert(ch.key.clone()))
            .map(|ch| (ch.key.clone(), ch.new.clone()))
            .collect();
        let commit = Commit {
            base: self.generation,
            kind: match scope {
                Scope::Changed => "apply",
                Scope::Everything => "build",
            },
            summary: serde_json::to_value(&stats).unwrap_or_default(),
            objects: c.objects.rows,
            pointers: c.changed.clone(),
            removed: c.removed.clone(),
            published,
            seqs,
            aliases_added: applied.added_aliases,
            aliases_removed: applied.removed_aliases,
            events: pending.events.iter().map(|e| e.id).collect(),
        };
        stats.generation = store.commit(commit).await?;
        self.generation = stats.generation;
        stats.seconds = started.elapsed().as_secs_f64();
        tracing::info!(generation = stats.generation, elapsed = ?started.elapsed(), "generation committed");
        crate::metrics::published(&stats, &pending.events);
        let mut docs: Vec<DocKey> = pending.events.iter().map(|e| e.key.clone()).collect();
        docs.sort();
        docs.dedup();
        let tags = changed_tags;
        Ok(Some(Outcome {
            stats,
            paths: changed_paths,
            tags,
            docs,
            accepted: pending.events.iter().map(|e| e.accepted).collect(),
        }))
    }
}

/// What a publish did, for whoever follows it (router, purge, metrics).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Counters.
    pub stats: Stats,
    /// Paths whose content changed, appeared or disappeared.
    pub paths: Vec<String>,
    /// The cache tag naming each changed page.
    pub tags: Vec<String>,
    /// Documents the batch published.
    pub docs: Vec<DocKey>,
    /// When each published event was acknowledged (ms).
    pub accepted: Vec<i64>,
}

/// The lease that serializes publishing (and garbage collection) across processes.
const PUBLISH_LEASE: &str = "publish";
/// Lease time. A holder renews it every third of it, so a process that dies
/// (even by SIGKILL) is taken over within this long.
const LEASE_MS: u64 = 15_000;

/// This process's side of the publish lease, one per opened project: the
/// holder name the store knows it by, and a lock so that two tasks of the
/// process (the worker and garbage collection, say) never both hold it.
pub(crate) struct LeaseGate {
    holder: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Default for LeaseGate {
    fn default() -> Self {
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let holder = format!("pid{}-{}-{n}", std::process::id(), sesame_model::time::now_ms());
        LeaseGate { holder, lock: Arc::default() }
    }
}

/// The right to publish (and to collect garbage): one holder at a time across
/// every process sharing the store. Renewed in the background until released
/// or dropped.
pub struct PublishLease {
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
    /// Set when a renewal found the lease taken, or could not renew it for so
    /// long that another process may have taken it.
    lost: Arc<AtomicBool>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for PublishLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishLease").field("holder", &self.holder).finish()
    }
}

impl PublishLease {
    /// Takes the lease or fails with [`EngineError::Busy`].
    pub async fn take(project: &Project) -> Result<PublishLease, EngineError> {
        let gate = project.publishing.lock.clone().try_lock_owned().map_err(|_| EngineError::Busy("publish"))?;
        let store = &project.store;
        let holder = project.publishing.holder.clone();
        if !store.acquire_lease(PUBLISH_LEASE, &holder, LEASE_MS).await? {
            return Err(EngineError::Busy("publish"));
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (store, id, flag) = (store.clone(), holder.clone(), lost.clone());
        let renewal = tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(LEASE_MS / 3)).await;
                match store.acquire_lease(PUBLISH_LEASE, &id, LEASE_MS).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::error!("lost the publish lease to another process");
                        flag.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the publish lease");
                        if renewed.elapsed() >= Duration::from_millis(LEASE_MS) {
                            flag.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        metrics::gauge!("sesame_publish_lease_held").set(1.0);
        Ok(PublishLease { holder, renewal, lost, _gate: gate })
    }

    /// Takes the lease, waiting up to `patience` while another holds it.
    pub async fn wait(project: &Project, patience: Duration) -> Result<PublishLease, EngineError> {
        let deadline = Instant::now() + patience;
        loop {
            match PublishLease::take(project).await {
                Err(EngineError::Busy(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether another process may hold the lease now. Commits stay safe
    /// either way (they are fenced by their base generation); a holder that
    /// lost the lease should stop publishing and let the other one work.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Gives it back (failures are logged: the lease then simply expires).
    pub async fn release(self, project: &Project) {
        self.renewal.abort();
        if let Err(e) = project.store.release_lease(PUBLISH_LEASE, &self.holder).await {
            tracing::warn!(error = %e, "cannot release the publish lease; it will expire");
        }
    }
}

impl Drop for PublishLease {
    fn drop(&mut self) {
        metrics::gauge!("sesame_publish_lease_held").set(0.0);
        self.renewal.abort();
    }
}

/// Publishes every pending change and re-renders every page: a full build.
/// Waits (up to ten minutes) for another publisher to finish.
pub async fn build(project: &Project, progress: &dyn Progress) -> Result<Stats, EngineError> {
    let lease = PublishLease::wait(project, Duration::from_secs(600)).await?;
    let mut publisher = Publisher::load(project).await?;
    let outcome = publisher.publish_all(project, &lease, Scope::Everything, progress).await;
    lease.release(project).await;
    Ok(outcome?.map(|o| o.stats).unwrap_or_default())
}
