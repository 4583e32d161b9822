//! The stages a publish runs between applying its changes and committing:
//! render on blocking threads, keep the pages whose bytes changed and write
//! their objects (`Collected::take`), then build the one commit
//! (`Collected::commit`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use sesame_render::Renderer;
use sesame_site::{PageId, SiteState};
use sesame_store::{Pointer, PointerChange, Target};

use crate::manifest::{Decoded, Root};
use crate::publish::{RenderOutcome, Rendered, Stats, Written, differs, objects_to_write, render_pages};
use crate::{EngineError, Project};

/// Renders pages with `renderer` on a blocking thread (rendering is CPU work).
pub(crate) async fn render_blocking(
    project: &Project,
    renderer: Arc<Renderer>,
    state: &Arc<SiteState>,
    ids: Vec<PageId>,
) -> Result<Vec<RenderOutcome>, EngineError> {
    let st = state.clone();
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
pub(super) struct Collected {
    pub stats: Stats,
    pub paths: Paths,
    pub changed: Vec<PointerChange>,
    pub removed: Vec<String>,
    written: HashSet<String>,
    pub objects: Written,
    /// What the rendered paths served before: the candidates' (an
    /// incremental publish), or the whole previous table (a full build).
    pub live: HashMap<String, Pointer>,
    /// Whether `live` is the whole previous table.
    pub whole: bool,
    /// Whether objects wait to be written with the manifest, in one write
    /// (an incremental publish: few of them); a full build writes each chunk's.
    pub defer_writes: bool,
    /// The objects waiting.
    pub unwritten: Vec<(String, Bytes)>,
}

impl Collected {
    /// What the manifest's staging can take from this publish instead of
    /// reading shards: the paths' previous pointers, and the objects new to
    /// storage (no manifest entry can name them).
    pub fn known(&self) -> crate::manifest::Known<'_> {
        crate::manifest::Known {
            live: &self.live,
            whole: self.whole,
            new_objects: self.objects.hashes.iter().map(String::as_str).collect(),
        }
    }

    /// The path table's changes as generation `generation` commits them at
    /// `created` (removed paths as tombstones), moved out of `changed` and
    /// `removed`: a template change's are every page.
    pub fn take_table_changes(&mut self, generation: u64, created: i64) -> Vec<Pointer> {
        let pointer = |path, target, deps| Pointer { path, target, deps, generation, modified: created };
        let changed = std::mem::take(&mut self.changed).into_iter().map(|p| pointer(p.path, p.target, p.deps));
        let removed = std::mem::take(&mut self.removed).into_iter();
        changed.chain(removed.map(|path| pointer(path, Target::Removed, Default::default()))).collect()
    }

    /// Keeps the pages that differ from what their paths served and writes
    /// their objects that the previous root does not name (`named`).
    pub async fn take(
        &mut self,
        project: &Project,
        batch: Vec<Rendered>,
        named: &mut Named<'_>,
    ) -> Result<(), EngineError> {
        let mut fresh = Vec::new();
        for page in batch {
            self.paths.claim(&page)?;
            self.stats.rendered += 1;
            if differs(self.live.get(&page.path), &page) {
                self.changed.push(PointerChange {
                    path: page.path.clone(),
                    target: page.target.clone(),
                    deps: page.deps.clone(),
                });
                fresh.push(page);
            }
        }
        let hashes: Vec<&str> = fresh.iter().filter_map(|p| p.encoded.as_ref()).map(|e| e.hash.as_str()).collect();
        let stored = named.of(project, &hashes).await?;
        let puts = objects_to_write(fresh, &stored, &mut self.written, &mut self.objects);
        if self.defer_writes {
            self.unwritten.extend(puts);
        } else {
            project.objects.put_many(puts).await?;
        }
        Ok(())
    }
}

/// Which objects the previous root names: storage holds them.
pub(super) enum Named<'a> {
    /// Those of its table, read whole (a full build).
    Table(HashSet<String>),
    /// Looked up in its levels (an incremental publish).
    Levels(&'a Root, &'a mut Decoded),
    /// None: there is no previous root.
    Nothing,
}

impl Named<'_> {
    /// The objects of the pages of `table`.
    pub fn table(table: &HashMap<String, Pointer>) -> Named<'static> {
        Named::Table(table.values().filter_map(super::full::object_of).map(str::to_string).collect())
    }

    async fn of(&mut self, project: &Project, hashes: &[&str]) -> Result<HashSet<String>, EngineError> {
        match self {
            Named::Table(all) => Ok(hashes.iter().filter(|h| all.contains(**h)).map(|h| h.to_string()).collect()),
            Named::Levels(root, decoded) => crate::manifest::named(project, root, decoded, hashes).await,
            Named::Nothing => Ok(HashSet::new()),
        }
    }
}
