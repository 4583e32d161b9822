//! `verify`: a full build into scratch space, compared with the published
//! table (the newest generation's manifest).

use std::sync::Arc;
use std::time::Instant;

use sesame_store::Target;

use crate::publisher::{Paths, Publisher, RenderAll};
use crate::{EngineError, Progress, Project};

/// A path where the live site and a full build disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path.
    pub path: String,
    /// What a full build produces there (`None`: nothing).
    pub expected: Option<String>,
    /// What is served there (`None`: nothing).
    pub live: Option<String>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Pages the full build produced.
    pub pages: u64,
    /// Where it disagrees with the published table, sorted by path.
    pub differences: Vec<Difference>,
    /// Generation verified.
    pub generation: u64,
    /// Where the copy of the root the Worker reads (`current`) disagrees
    /// with the root the generation recorded.
    pub manifest: Vec<Difference>,
    /// Events not yet published (they are not part of the comparison).
    pub pending: u64,
    /// Wall time.
    pub seconds: f64,
}

/// A short description of what a path serves.
fn describe(target: &Target) -> String {
    match target {
        Target::Page { object, content_type } => {
            format!("{} ({content_type})", &object.hash[..object.hash.len().min(12)])
        }
        Target::Redirect(to) => format!("301 to {to}"),
        Target::Gone => "410 gone".into(),
        Target::Removed => "nothing".into(),
    }
}

fn same(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::Page { object: x, content_type: cx }, Target::Page { object: y, content_type: cy }) => {
            x.hash == y.hash && cx == cy
        }
        _ => a == b,
    }
}

/// Renders every page of the published state (writing nothing) and compares
/// the path set, the bytes (by hash) and the dependency keys with what the
/// published table serves.
pub async fn verify(project: &Project, progress: &dyn Progress) -> Result<VerifyReport, EngineError> {
    let started = Instant::now();
    let store = project.store.as_ref();
    let publisher = Publisher::load(project).await?;
    let root = crate::manifest::latest_root(project).await?;
    let generation = root.as_ref().map_or(0, |r| r.generation);
    let live = crate::manifest::table(project, root.as_ref()).await?;
    let mut report = VerifyReport { generation, ..VerifyReport::default() };
    let mut paths = Paths::default();
    // With nothing kept from earlier renders: a stale partial would be
    // spliced into the published page and the full build alike.
    let renderer = Arc::new(project.renderer().cold()?);
    let mut all = RenderAll::new(project, renderer, publisher.shared_state(), progress)?;
    while let Some(batch) = all.next().await {
        for page in batch? {
            paths.claim(&page)?;
            report.pages += 1;
            let expected = Some(describe(&page.target));
            match live.get(&page.path) {
                Some(p) if same(&p.target, &page.target) && p.deps == page.deps => {}
                Some(p) => {
                    report.differences.push(Difference { path: page.path, expected, live: Some(describe(&p.target)) })
                }
                None => report.differences.push(Difference { path: page.path, expected, live: None }),
            }
        }
    }
    for (path, p) in &live {
        // The previous version of a static file stays one build more.
        if !paths.contains(path) && crate::publisher::asset_version(&live, path).is_none() {
            report.differences.push(Difference { path: path.clone(), expected: None, live: Some(describe(&p.target)) });
        }
    }
    report.differences.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(root) = &root {
        report.manifest = crate::manifest::compare_copies(project, root).await?;
    }
    report.pending = store.pending_events().await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
