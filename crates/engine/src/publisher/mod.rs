//! Publishing: pending changes become a generation.
//!
//! A [`Publisher`] holds the published site model in memory. Each call to
//! [`Publisher::publish`] runs these stages, and commits nothing unless all
//! succeed:
//!
//! 1. **apply**: the batch's documents go into the site model, which yields
//!    the candidate pages, new sequence numbers and former paths;
//! 2. **render**: the candidates ([`Scope::Changed`]) or every page
//!    ([`Scope::Everything`], a chunk at a time: `full.rs`);
//! 3. **write**: pages whose bytes differ from what is live get their objects
//!    written (`pipeline.rs`; a full build's chunk by chunk, an incremental
//!    publish's with the manifest);
//! 4. **manifest**: the generation's path table is staged over the previous
//!    root (`manifest.rs`) and its blobs written;
//! 5. **sync**: the objects and the manifest are made durable;
//! 6. **commit**: the root's name, published documents, sequence numbers,
//!    aliases and events, in one transaction fenced by the base generation
//!    (the path table is the manifest: no row per page); then the root is
//!    published for the Worker.
//!
//! A full build is the same operation with [`Scope::Everything`], so both
//! produce the same state. Only one process publishes at a time
//! ([`PublishLease`], `lease.rs`).

mod full;
pub(crate) use full::asset_version;
mod lease;
mod pipeline;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use sesame_model::{Change, DocKey, SeqRow};
use sesame_site::{PageId, SiteState};
use sesame_store::{Commit, Debounce, Pending};

pub(crate) use full::RenderAll;
pub use full::{Built, build};
pub(crate) use lease::LeaseGate;
pub use lease::PublishLease;
pub(crate) use pipeline::Paths;
use pipeline::{Collected, Named, render_blocking};

use crate::change::{By, Missing, WriteError};
use crate::events::{Ingested, Located, ingest};
use crate::manifest::{self, ManifestReport};
use crate::publish::{RenderOutcome, Stats, Uncompressed};
use crate::{EngineError, Progress, Project};

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
    /// Its manifest root (`None`: none recorded, or unreadable; the next
    /// publish writes the manifest whole).
    root: Option<manifest::Root>,
    /// The manifest's blobs decoded by earlier publishes.
    decoded: manifest::Decoded,
    /// Sequence numbers assigned while loading (after a configuration change)
    /// that the next commit persists.
    unsaved: Vec<SeqRow>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("documents", &self.state.len()).finish()
    }
}

impl Publisher {
    /// Loads the published state.
    pub async fn load(project: &Project) -> Result<Publisher, EngineError> {
        let started = Instant::now();
        let generation = project.store.latest_generation().await?;
        let snapshot = project.store.published_snapshot().await?;
        let (state, unsaved) = SiteState::load(project.site.clone(), snapshot.docs, snapshot.seqs, snapshot.aliases);
        let root = match manifest::latest_root(project).await {
            Ok(root) => root.filter(|r| r.generation == generation),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the published manifest; the next publish renders every page");
                None
            }
        };
        tracing::info!(documents = state.len(), elapsed = ?started.elapsed(), "published state loaded");
        Ok(Publisher { state: Arc::new(state), generation, root, decoded: Default::default(), unsaved })
    }

    /// Reads what the next publish needs of the held manifest beyond its
    /// root (the objects it names), so that the first publish of a long-running
    /// publisher does not wait for it.
    pub(crate) async fn prepare(&mut self, project: &Project) -> Result<(), EngineError> {
        match &self.root {
            Some(root) => manifest::prepare(project, root, &mut self.decoded).await,
            None => Ok(()),
        }
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

    /// Writes the newest generation's manifest root where the Worker reads
    /// it (`sesame edge sync`: after a crash between a commit and that
    /// write); with `whole`, rewrites every shard of its table.
    pub async fn publish_manifest(
        &mut self,
        project: &Project,
        _lease: &PublishLease,
        whole: bool,
    ) -> Result<ManifestReport, EngineError> {
        if project.store.latest_generation().await? != self.generation {
            *self = Publisher::load(project).await?;
        }
        let report = manifest::sync(project, &self.state, whole).await?;
        self.root = manifest::latest_root(project).await?;
        Ok(report)
    }

    /// The operator's batch (`sesame apply`, `sesame moderate`): ingests
    /// `events` through the one door and publishes everything pending
    /// under `lease`, so that no other publisher takes the batch in between.
    pub async fn apply_events(
        &mut self,
        project: &Project,
        lease: &PublishLease,
        events: &[Located],
        on_missing: Missing,
        progress: &dyn Progress,
    ) -> Result<(Ingested, Option<Outcome>), WriteError> {
        let ingested = ingest(project, events, By::Operator(None), on_missing, Debounce::NONE).await?;
        let outcome = self.publish_all(project, lease, Scope::Changed, progress).await?;
        Ok((ingested, outcome))
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
        // The documents go into the model as they were read: shared, not copied.
        let changes: Vec<Change> = pending
            .events
            .iter()
            .map(|e| Change { key: e.key.clone(), new: pending.docs.get(&e.key).cloned().flatten() })
            .collect();
        let state = Arc::get_mut(&mut self.state)
            .ok_or_else(|| EngineError::Internal("the site state is still in use by a render".into()))?;
        // Apply: the batch's documents enter the model, which plans the pages.
        let applied = state.apply(&changes);
        tracing::info!(events = pending.events.len(), candidates = applied.candidates.len(), elapsed = ?started.elapsed(), "changes applied");

        // Render, and write the objects of the pages that changed. Without
        // the previous table, every page is rendered and the table written whole.
        let scope = if self.root.is_none() && self.generation > 0 { Scope::Everything } else { scope };
        let mut c = Collected::default();
        match scope {
            Scope::Changed => {
                let ids: Vec<PageId> = applied.candidates.iter().cloned().collect();
                render_changed(project, &self.state, ids, self.root.as_ref(), &mut self.decoded, &mut c).await?;
            }
            Scope::Everything => {
                full::render_everything(project, &self.state, self.root.as_ref(), progress, &mut c).await?
            }
        }
        tracing::info!(rendered = c.stats.rendered, elapsed = ?started.elapsed(), "pages rendered and written");
        crate::testing::pause_point("pages rendered");

        // The manifest: the new generation's path table over the previous root.
        let created = sesame_model::time::now();
        let generation = self.generation + 1;
        let manifest_started = Instant::now();
        let mut docs: Vec<DocKey> = pending.events.iter().map(|e| e.key.clone()).collect();
        docs.sort();
        docs.dedup();
        // What the outcome reports of the changed paths, taken before the
        // changes move into the manifest.
        let changed_count = (c.changed.len() + c.removed.len()) as u64;
        let changed_paths: Vec<String> =
            c.changed.iter().map(|p| p.path.clone()).chain(c.removed.iter().cloned()).collect();
        let changed_tags: Vec<String> = c.changed.iter().filter_map(|p| p.deps.own()).map(str::to_string).collect();
        let table_changes = c.take_table_changes(generation, created);
        let batch = manifest::Batch { changed: table_changes, state: &self.state, docs: &docs, known: c.known() };
        let staged = manifest::stage(project, self.root.as_ref(), generation, batch, &mut self.decoded).await?;
        manifest::write_staged(project, &staged, std::mem::take(&mut c.unwritten)).await?;
        let manifest = staged.report(manifest_started);
        tracing::info!(elapsed = ?started.elapsed(), "manifest written");
        crate::testing::pause_point("manifest written");

        // Sync: nothing is committed that could be lost.
        project.objects.sync().await?;
        tracing::info!(elapsed = ?started.elapsed(), "objects synced");
        let mut seqs = std::mem::take(&mut self.unsaved);
        seqs.extend(applied.new_seqs);
        let mut stats = c.stats;
        stats.changed = changed_count;
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
        let mut seen = HashSet::new();
        let published = changes
            .iter()
            .filter(|ch| seen.insert(ch.key.clone()))
            .map(|ch| (ch.key.clone(), ch.new.clone()))
            .collect();
        // Commit: one transaction, fenced by the generation it builds on.
        let uncompressed = std::mem::take(&mut c.objects.uncompressed);
        let commit = Commit {
            base: self.generation,
            kind: match scope {
                Scope::Changed => "apply",
                Scope::Everything => "build",
            },
            created,
            root: Some(staged.name.clone()),
            summary: serde_json::to_value(&stats).unwrap_or_default(),
            published,
            seqs,
            aliases_added: applied.added_aliases,
            aliases_removed: applied.removed_aliases,
            events: pending.events.iter().map(|e| e.id).collect(),
        };
        stats.generation = store.commit(commit).await?;
        self.generation = stats.generation;
        crate::testing::pause_point("generation committed");
        // The Worker follows: a failure here leaves it on the previous root,
        // whole, until the next publish or `sesame edge sync` writes it.
        if let Err(e) = manifest::publish_root(project, &staged).await {
            tracing::warn!(error = %e, "cannot write the manifest root for the edge; the next publish does");
        }
        self.root = Some(staged.root);
        stats.seconds = started.elapsed().as_secs_f64();
        tracing::info!(generation = stats.generation, elapsed = ?started.elapsed(), "generation committed");
        crate::metrics::published(&stats, &pending.events);
        let tags = changed_tags;
        Ok(Some(Outcome {
            stats,
            paths: changed_paths,
            tags,
            docs,
            accepted: pending.events.iter().map(|e| e.accepted).collect(),
            uncompressed,
            manifest: Some(manifest),
        }))
    }
}

/// The render and write stages of an incremental publish: the candidate
/// pages, compared with what their paths serve in `root`; a candidate that
/// no longer resolves removes its path.
async fn render_changed(
    project: &Project,
    state: &Arc<SiteState>,
    ids: Vec<PageId>,
    root: Option<&manifest::Root>,
    decoded: &mut manifest::Decoded,
    c: &mut Collected,
) -> Result<(), EngineError> {
    c.stats.planned = ids.len() as u64;
    c.defer_writes = true;
    // What the candidates' paths serve now is read while they render: a page
    // renders at the path the model names for it (`SiteState::resolve`).
    let paths: Vec<String> = ids.iter().map(|id| state.path_of(id)).collect();
    let live = async {
        match root {
            Some(root) => manifest::lookup(project, root, decoded, &paths).await,
            None => Ok(HashMap::new()),
        }
    };
    let (outcomes, live) = tokio::join!(render_blocking(project, project.renderer(), state, ids), live);
    let outcomes = outcomes?;
    c.live = live?;
    let mut pages = Vec::new();
    for o in outcomes {
        match o {
            RenderOutcome::Page(p) => pages.push(*p),
            RenderOutcome::Absent(path) if c.live.contains_key(&path) => c.removed.push(path),
            RenderOutcome::Absent(_) => {}
        }
    }
    let mut named = match root {
        Some(root) => Named::Levels(root, decoded),
        None => Named::Nothing,
    };
    c.take(project, pages, &mut named).await
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
    /// Objects written without their compressed variants, which follow
    /// ([`crate::add_variants`]).
    pub uncompressed: Vec<Uncompressed>,
    /// What the manifest's update wrote.
    pub manifest: Option<ManifestReport>,
}
