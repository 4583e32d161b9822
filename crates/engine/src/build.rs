//! The full build: every page of the latest content, as one generation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use sesame_render::{Output, content_type_for};
use sesame_site::{PageId, SiteState};
use sesame_store::{Commit, EventsDone, Pointer, PublishedDocs};

use crate::publish::{Outcome, Rendered, Stats, Written, differs, render_pages, rendered, write_objects};
use crate::{EngineError, Progress, Project};

/// Pages rendered per step: bounds memory (rendered bytes are dropped once
/// their objects are written) while keeping both cores busy.
const CHUNK: usize = 4096;

/// Builds every page from the latest documents and publishes them as one
/// generation. Unchanged pages keep their pointers; pages that no longer
/// exist are removed; pending events up to the snapshot are completed.
pub async fn build(project: &Project, progress: &dyn Progress) -> Result<Stats, EngineError> {
    let started = Instant::now();
    let store = project.store.as_ref();
    let snapshot = store.latest_snapshot().await?;
    tracing::info!(docs = snapshot.docs.len(), elapsed = ?started.elapsed(), "snapshot loaded");
    let (state, new_seqs) = SiteState::load(project.site.clone(), snapshot.docs, snapshot.seqs, snapshot.aliases);
    let state = Arc::new(state);
    let pages = state.all_pages();
    tracing::info!(pages = pages.len(), elapsed = ?started.elapsed(), "site model built");
    let assets = project.assets()?;
    let current: HashMap<String, Pointer> = store.pointers().await?.into_iter().map(|p| (p.path.clone(), p)).collect();
    tracing::info!(pointers = current.len(), elapsed = ?started.elapsed(), "pointers loaded");
    let (mut render_time, mut write_time) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let compress = project.site.config.publish.compress;

    let mut stats = Stats { planned: (pages.len() + assets.len()) as u64, ..Stats::default() };
    let mut seen: HashMap<String, Option<PageId>> = HashMap::with_capacity(pages.len());
    let mut changed: Vec<(String, sesame_store::Target, String)> = Vec::new();
    let mut written = HashSet::new();
    let mut objects = Written::default();

    progress.stage("rendering", stats.planned);
    let asset_pages: Vec<Rendered> = assets
        .into_iter()
        .map(|a| {
            let output = Output::Page { bytes: a.bytes, content_type: content_type_for(&a.path) };
            rendered(a.path, output, String::new(), compress)
        })
        .collect();
    let mut publish = |batch: Vec<Rendered>| -> Result<Vec<Rendered>, EngineError> {
        let mut fresh = Vec::new();
        for page in batch {
            if let Some(first) = seen.insert(page.path.clone(), page.source.clone()) {
                let describe =
                    |s: &Option<PageId>| s.as_ref().map_or_else(|| "a static file".to_string(), |id| format!("{id:?}"));
                return Err(EngineError::PathCollision {
                    path: page.path,
                    first: describe(&first),
                    second: describe(&page.source),
                });
            }
            stats.rendered += 1;
            if differs(current.get(&page.path), &page) {
                changed.push((page.path.clone(), page.target.clone(), page.deps.clone()));
                fresh.push(page);
            }
        }
        Ok(fresh)
    };

    let fresh = publish(asset_pages)?;
    write_objects(store, &project.objects, &fresh.iter().collect::<Vec<_>>(), &mut written, &mut objects).await?;
    for chunk in pages.chunks(CHUNK) {
        let ids: Vec<PageId> = chunk.to_vec();
        let (st, renderer) = (state.clone(), project.renderer.clone());
        let t = Instant::now();
        let outcomes = tokio::task::spawn_blocking(move || render_pages(&st, &renderer, &ids, compress))
            .await
            .map_err(|e| EngineError::Invalid(format!("render task failed: {e}")))??;
        let batch: Vec<Rendered> = outcomes
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Page(p) => Some(*p),
                Outcome::Absent(path) => {
                    tracing::warn!(%path, "a listed page does not resolve; skipped");
                    None
                }
            })
            .collect();
        render_time += t.elapsed();
        let t = Instant::now();
        let fresh = publish(batch)?;
        write_objects(store, &project.objects, &fresh.iter().collect::<Vec<_>>(), &mut written, &mut objects).await?;
        write_time += t.elapsed();
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    tracing::info!(?render_time, ?write_time, elapsed = ?started.elapsed(), "pages rendered and written");

    let removed: Vec<String> = current.keys().filter(|p| !seen.contains_key(*p)).cloned().collect();
    stats.changed = (changed.len() + removed.len()) as u64;
    stats.objects = objects.files;
    stats.bytes = objects.bytes;
    project.objects.sync().await?;
    tracing::info!(elapsed = ?started.elapsed(), "objects synced");
    let published: Vec<Arc<sesame_model::Document>> = state.documents().cloned().collect();
    stats.seconds = started.elapsed().as_secs_f64();
    let commit = Commit {
        kind: "build",
        summary: serde_json::to_value(&stats).unwrap_or_default(),
        objects: objects.rows,
        pointers: changed,
        removed,
        published: PublishedDocs::Replace(published),
        seqs: new_seqs,
        aliases_added: Vec::new(),
        aliases_removed: Vec::new(),
        events: EventsDone::UpTo(snapshot.watermark),
    };
    stats.generation = store.commit(commit).await?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}
