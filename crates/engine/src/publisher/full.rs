//! The full-build path: every page of the state and every static file,
//! rendered a chunk at a time (memory stays bounded), and `sesame build`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sesame_model::Deps;
use sesame_render::{Output, Renderer, content_type_for};
use sesame_site::{PageId, SiteState};
use sesame_store::Pointer;

use super::pipeline::{Collected, Named, render_blocking};
use super::{PublishLease, Publisher, Scope};
use crate::publish::{RenderOutcome, Rendered, Stats, rendered};
use crate::variants::{VariantReport, add_variants};
use crate::{EngineError, Progress, Project, manifest};

/// Pages rendered per step of a full build: bounds memory (rendered bytes are
/// dropped once their objects are written) while keeping both cores busy.
const CHUNK: usize = 4096;

/// Every page of a state and every static file, rendered a chunk at a time
/// on blocking threads, in parallel.
pub(crate) struct RenderAll<'a> {
    project: &'a Project,
    renderer: Arc<Renderer>,
    state: &'a Arc<SiteState>,
    progress: &'a dyn Progress,
    pages: Vec<PageId>,
    done: usize,
    assets: Option<Vec<Rendered>>,
}

impl<'a> RenderAll<'a> {
    pub(crate) fn new(
        project: &'a Project,
        renderer: Arc<Renderer>,
        state: &'a Arc<SiteState>,
        progress: &'a dyn Progress,
    ) -> Result<Self, EngineError> {
        let compress = project.site.config.publish.compress;
        let pages = state.all_pages();
        // Each static file at its plain path and at its fingerprinted one
        // (what templates link, cached for good).
        let assets: Vec<Rendered> = project
            .assets()?
            .into_iter()
            .flat_map(|a| {
                let content_type = content_type_for(&a.path);
                let page = |path: String, bytes: Vec<u8>| {
                    rendered(path, Output::Page { bytes, content_type }, Deps::default(), compress)
                };
                [page(a.fingerprinted, a.bytes.clone()), page(a.path, a.bytes)]
            })
            .collect();
        progress.stage("rendering", (pages.len() + assets.len()) as u64);
        Ok(RenderAll { project, renderer, state, progress, pages, done: 0, assets: Some(assets) })
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
        let outcomes = match render_blocking(self.project, self.renderer.clone(), self.state, ids).await {
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

/// The render and write stages of a full build: every page, compared with
/// the whole table of `root`; a path no page produced any more is removed.
pub(super) async fn render_everything(
    project: &Project,
    state: &Arc<SiteState>,
    root: Option<&manifest::Root>,
    progress: &dyn Progress,
    c: &mut Collected,
) -> Result<(), EngineError> {
    // A table that cannot be read is written whole again, of every page.
    c.live = match manifest::table(project, root).await {
        Err(EngineError::Corrupt(e)) => {
            tracing::error!(error = %e, "cannot read the published table; writing it whole");
            HashMap::new()
        }
        table => table?,
    };
    c.whole = true;
    let mut named = Named::table(&c.live);
    let mut all = RenderAll::new(project, project.renderer(), state, progress)?;
    // The next chunk renders (on rayon's threads) while this one's objects
    // are written (on a blocking thread): either alone leaves a core idle.
    let mut rendered = all.next().await;
    while let Some(batch) = rendered {
        let (next, taken) = tokio::join!(all.next(), c.take(project, batch?, &mut named));
        taken?;
        rendered = next;
    }
    let live = &c.live;
    c.removed = live.keys().filter(|p| !c.paths.contains(p) && !replaced_asset(live, p)).cloned().collect();
    c.stats.planned = c.stats.rendered;
    Ok(())
}

/// The object a live page serves.
pub(super) fn object_of(p: &Pointer) -> Option<&str> {
    match &p.target {
        sesame_store::Target::Page { object, .. } => Some(&object.hash),
        _ => None,
    }
}

/// For a live fingerprinted version of a static file, its plain path and
/// the object it serves.
pub(crate) fn asset_version<'l>(live: &'l HashMap<String, Pointer>, path: &str) -> Option<(String, &'l str)> {
    let hash = live.get(path).and_then(object_of)?;
    let plain = sesame_model::serve::unfingerprinted(path, hash)?;
    plain.starts_with(sesame_site::STATIC_PREFIX).then_some((plain, hash))
}

/// Whether a live path is the fingerprinted version of a static file that
/// this build replaces (its plain path serves the same object until now):
/// it is kept for one build more, so pages cached anywhere from before the
/// build still find their stylesheet. Older versions go.
fn replaced_asset(live: &HashMap<String, Pointer>, path: &str) -> bool {
    asset_version(live, path).is_some_and(|(plain, hash)| live.get(&plain).and_then(object_of) == Some(hash))
}

/// What `sesame build` did.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// The generation: live once this is known.
    pub stats: Stats,
    /// The compressed variants that followed it.
    pub variants: VariantReport,
    /// What the edge manifest's update wrote (`[edge] manifest`).
    pub manifest: Option<crate::manifest::ManifestReport>,
}

/// Publishes every pending change and re-renders every page: a full build.
/// Waits (up to ten minutes) for another publisher to finish. Compressed
/// variants of the new objects follow the commit, after the lease is given
/// back.
pub async fn build(project: &Project, progress: &dyn Progress) -> Result<Built, EngineError> {
    let lease = PublishLease::wait(project, Duration::from_secs(600)).await?;
    let mut publisher = Publisher::load(project).await?;
    let outcome = publisher.publish_all(project, &lease, Scope::Everything, progress).await;
    if outcome.is_ok()
        && let Err(e) = project.record_rendering().await
    {
        // Publishers elsewhere keep their templates until they restart.
        tracing::warn!(error = %e, "the generation is live, but what it rendered with could not be recorded");
    }
    lease.release(project).await;
    // The published state is not needed any more: give its memory back
    // before compressing.
    drop(publisher);
    let Some(outcome) = outcome? else { return Ok(Built::default()) };
    // The generation is live whatever happens now: a failure to compress is
    // worth a warning, not a failed build (routers compress on request).
    let generation = outcome.stats.generation;
    let variants = match add_variants(project, outcome.uncompressed, crate::Compress::Now, progress).await {
        Ok(report) => {
            // Every generation before it had its variants: so does this one.
            match crate::variants::variants_through(project).await {
                Ok(through) if through + 1 >= generation => {
                    crate::variants::record_variants_through(project, generation).await.ok();
                }
                _ => {}
            }
            report
        }
        Err(e) => {
            tracing::warn!(error = %e, "the generation is live, but its compressed variants could not be stored");
            VariantReport::default()
        }
    };
    Ok(Built { stats: outcome.stats, variants, manifest: outcome.manifest })
}
