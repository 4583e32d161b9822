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
use std::time::Instant;

use sesame_model::{Change, SeqRow};
use sesame_render::{Output, content_type_for};
use sesame_site::{PageId, SiteState};
use sesame_store::{Commit, EventsDone, Pointer, Target};

use crate::publish::{Outcome, Rendered, Stats, Written, differs, render_pages, rendered, write_objects};
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
    /// Sequence numbers assigned while loading (after a configuration change)
    /// that the next commit persists.
    unsaved: Vec<SeqRow>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("documents", &self.state.len()).finish()
    }
}

/// Renders every page of `state` and every static file, handing them to `sink`
/// a chunk at a time. Rendering runs on blocking threads, in parallel.
pub(crate) async fn render_all(
    project: &Project,
    state: &Arc<SiteState>,
    progress: &dyn Progress,
    mut sink: impl AsyncFnMut(Vec<Rendered>) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let compress = project.site.config.publish.compress;
    let pages = state.all_pages();
    let assets = project.assets()?;
    progress.stage("rendering", (pages.len() + assets.len()) as u64);
    let assets: Vec<Rendered> = assets
        .into_iter()
        .map(|a| {
            let output = Output::Page { bytes: a.bytes, content_type: content_type_for(&a.path) };
            rendered(a.path, output, String::new(), compress)
        })
        .collect();
    progress.advance(assets.len() as u64);
    sink(assets).await?;
    for chunk in pages.chunks(CHUNK) {
        let outcomes = render_blocking(project, state, chunk.to_vec()).await?;
        let batch = outcomes
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Page(p) => Some(*p),
                Outcome::Absent(path) => {
                    tracing::warn!(%path, "a listed page does not resolve; skipped");
                    None
                }
            })
            .collect();
        sink(batch).await?;
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(())
}

async fn render_blocking(
    project: &Project,
    state: &Arc<SiteState>,
    ids: Vec<PageId>,
) -> Result<Vec<Outcome>, EngineError> {
    let (st, renderer) = (state.clone(), project.renderer.clone());
    let compress = project.site.config.publish.compress;
    tokio::task::spawn_blocking(move || render_pages(&st, &renderer, &ids, compress))
        .await
        .map_err(|e| EngineError::Invalid(format!("render task failed: {e}")))?
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
    changed: Vec<(String, Target, String)>,
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
                self.changed.push((page.path.clone(), page.target.clone(), page.deps.clone()));
                fresh.push(page);
            }
        }
        let fresh: Vec<&Rendered> = fresh.iter().collect();
        write_objects(project.store.as_ref(), &project.objects, &fresh, &mut self.written, &mut self.objects).await
    }
}

impl Publisher {
    /// Loads the published state.
    pub async fn load(project: &Project) -> Result<Publisher, EngineError> {
        let started = Instant::now();
        let snapshot = project.store.published_snapshot().await?;
        let (state, unsaved) = SiteState::load(project.site.clone(), snapshot.docs, snapshot.seqs, snapshot.aliases);
        tracing::info!(documents = state.len(), elapsed = ?started.elapsed(), "published state loaded");
        Ok(Publisher { state: Arc::new(state), unsaved })
    }

    /// The published site model.
    pub fn state(&self) -> &SiteState {
        &self.state
    }

    pub(crate) fn shared_state(&self) -> &Arc<SiteState> {
        &self.state
    }

    /// Publishes up to `limit` pending events as one generation. With
    /// [`Scope::Changed`] and nothing pending, does nothing and returns `None`.
    /// On failure nothing is committed and the in-memory state is reloaded
    /// from the store, so the next call starts from what is published.
    pub async fn publish(
        &mut self,
        project: &Project,
        scope: Scope,
        limit: u32,
        progress: &dyn Progress,
    ) -> Result<Option<Stats>, EngineError> {
        let result = self.try_publish(project, scope, limit, progress).await;
        if result.is_err() {
            match Publisher::load(project).await {
                Ok(fresh) => *self = fresh,
                Err(e) => tracing::error!(error = %e, "cannot reload the published state after a failed publish"),
            }
        }
        result
    }

    async fn try_publish(
        &mut self,
        project: &Project,
        scope: Scope,
        limit: u32,
        progress: &dyn Progress,
    ) -> Result<Option<Stats>, EngineError> {
        let started = Instant::now();
        let store = project.store.as_ref();
        let pending = store.pending(limit).await?;
        if pending.events.is_empty() && scope == Scope::Changed {
            return Ok(None);
        }
        let changes: Vec<Change> = pending
            .events
            .iter()
            .map(|(_, key)| Change { key: key.clone(), new: pending.docs.get(key).cloned().flatten().map(Arc::new) })
            .collect();
        let state = Arc::get_mut(&mut self.state)
            .ok_or_else(|| EngineError::Invalid("the site state is still in use by a render".into()))?;
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
                        Outcome::Page(p) => p.path.clone(),
                        Outcome::Absent(path) => path.clone(),
                    })
                    .collect();
                let current: HashMap<String, Pointer> =
                    store.pointers_at(&paths).await?.into_iter().map(|p| (p.path.clone(), p)).collect();
                let mut pages = Vec::new();
                for o in outcomes {
                    match o {
                        Outcome::Page(p) => pages.push(*p),
                        Outcome::Absent(path) if current.contains_key(&path) => c.removed.push(path),
                        Outcome::Absent(_) => {}
                    }
                }
                c.take(project, &current, pages).await?;
            }
            Scope::Everything => {
                let current: HashMap<String, Pointer> =
                    store.pointers().await?.into_iter().map(|p| (p.path.clone(), p)).collect();
                render_all(project, &self.state, progress, async |batch| c.take(project, &current, batch).await)
                    .await?;
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
        stats.seconds = started.elapsed().as_secs_f64();
        let mut seen = HashSet::new();
        let published = changes
            .iter()
            .filter(|ch| seen.insert(ch.key.clone()))
            .map(|ch| (ch.key.clone(), ch.new.clone()))
            .collect();
        let commit = Commit {
            kind: match scope {
                Scope::Changed => "apply",
                Scope::Everything => "build",
            },
            summary: serde_json::to_value(&stats).unwrap_or_default(),
            objects: c.objects.rows,
            pointers: c.changed,
            removed: c.removed,
            published,
            seqs,
            aliases_added: applied.added_aliases,
            aliases_removed: applied.removed_aliases,
            events: EventsDone::Ids(pending.events.iter().map(|(id, _)| *id).collect()),
        };
        stats.generation = store.commit(commit).await?;
        stats.seconds = started.elapsed().as_secs_f64();
        tracing::info!(generation = stats.generation, elapsed = ?started.elapsed(), "generation committed");
        Ok(Some(stats))
    }
}

/// Publishes every pending change and re-renders every page: a full build.
pub async fn build(project: &Project, progress: &dyn Progress) -> Result<Stats, EngineError> {
    let mut publisher = Publisher::load(project).await?;
    let stats = publisher.publish(project, Scope::Everything, u32::MAX, progress).await?;
    Ok(stats.unwrap_or_default())
}
