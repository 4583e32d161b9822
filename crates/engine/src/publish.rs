//! The publish pipeline shared by full and incremental builds: render pages,
//! compare them with the live pointers, and write the objects that are new.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use sesame_model::Deps;
use sesame_objects::{Encoded, Encoding, ObjectStorage, compressible, object_key};
use sesame_render::{Output, Renderer};
use sesame_site::{PageId, SiteState};
use sesame_store::{MetaStore, ObjectRow, Pointer, Target, encodings};

use crate::EngineError;

/// Counters of one publish.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Change events published.
    pub events: u64,
    /// Distinct documents they changed (events minus coalesced ones).
    pub documents: u64,
    /// Pages the planner selected.
    pub planned: u64,
    /// Pages rendered (planned pages that exist).
    pub rendered: u64,
    /// Paths whose content changed, appeared or disappeared.
    pub changed: u64,
    /// Objects written (variants included).
    pub objects: u64,
    /// Bytes written to object storage.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// The committed generation (0 if nothing was committed).
    pub generation: u64,
}

/// A page ready to publish.
pub(crate) struct Rendered {
    /// The page it was rendered from (`None` for static files).
    pub source: Option<PageId>,
    pub path: String,
    pub target: Target,
    pub deps: Deps,
    /// Bytes to store, for pages: hashed at once, compressed only once it is
    /// known that the store lacks them (see [`write_objects`]).
    pub encoded: Option<Encoded>,
    /// Whether the object should get compressed variants.
    pub compress: bool,
}

impl Rendered {
    /// Adds the compressed variants, if wanted (once).
    pub fn add_variants(&mut self) {
        if let (Some(enc), Target::Page { object, content_type }) = (&mut self.encoded, &mut self.target)
            && self.compress
        {
            enc.add_variants(content_type);
            *object = object_row(enc);
        }
        self.compress = false;
    }
}

/// The store's record of an object.
fn object_row(enc: &Encoded) -> ObjectRow {
    let mut encodings = 0;
    if enc.gzip.is_some() {
        encodings |= encodings::GZIP;
    }
    if enc.brotli.is_some() {
        encodings |= encodings::BROTLI;
    }
    ObjectRow { hash: enc.hash.clone(), size: enc.identity.len() as u64, encodings }
}

/// What a planned page turned into.
pub(crate) enum RenderOutcome {
    /// The page exists with this content.
    Page(Box<Rendered>),
    /// The page no longer exists.
    Absent(String),
}

/// Renders pages in parallel. Pure CPU work: meant for a blocking thread.
pub(crate) fn render_pages(
    state: &SiteState,
    renderer: &Renderer,
    ids: &[PageId],
    compress: bool,
) -> Result<Vec<RenderOutcome>, EngineError> {
    ids.par_iter()
        .map(|id| {
            let Some(page) = state.resolve(id) else { return Ok(RenderOutcome::Absent(state.path_of(id))) };
            let output = renderer.render(&page)?;
            let mut page = rendered(page.path, output, page.deps, compress);
            page.source = Some(id.clone());
            Ok(RenderOutcome::Page(Box::new(page)))
        })
        .collect()
}

/// Wraps a renderer output (or a static file) into a publishable page.
/// `compress`: whether pages get compressed variants (when their type suits).
pub(crate) fn rendered(path: String, output: Output, deps: Deps, compress: bool) -> Rendered {
    let (target, encoded, compress) = match output {
        Output::Page { bytes, content_type } => {
            let encoded = Encoded::plain(bytes);
            let compress = compress && compressible(content_type, encoded.identity.len() as u64);
            (Target::Page { object: object_row(&encoded), content_type: content_type.into() }, Some(encoded), compress)
        }
        Output::Redirect(to) => (Target::Redirect(to), None, false),
        Output::Gone => (Target::Gone, None, false),
    };
    Rendered { source: None, path, target, deps, encoded, compress }
}

/// Whether a rendered page differs from what its path serves now.
pub(crate) fn differs(current: Option<&Pointer>, page: &Rendered) -> bool {
    let Some(current) = current else { return true };
    let same_target = match (&current.target, &page.target) {
        (Target::Page { object: a, content_type: ca }, Target::Page { object: b, content_type: cb }) => {
            a.hash == b.hash && ca == cb
        }
        (a, b) => a == b,
    };
    !same_target || current.deps != page.deps
}

/// Objects written by [`write_objects`].
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Rows to record in the commit.
    pub rows: Vec<ObjectRow>,
    /// Files written (variants included).
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes the objects of `pages` that the store does not hold yet (and that
/// this publish has not written already), compressing them first. Objects are
/// not durable until [`ObjectStorage::sync`].
pub(crate) async fn write_objects(
    store: &dyn MetaStore,
    objects: &Arc<dyn ObjectStorage>,
    pages: Vec<Rendered>,
    written: &mut HashSet<String>,
    out: &mut Written,
) -> Result<(), EngineError> {
    let mut by_hash: HashMap<String, Rendered> = HashMap::new();
    for page in pages {
        if let Some(enc) = &page.encoded
            && !written.contains(&enc.hash)
        {
            by_hash.insert(enc.hash.clone(), page);
        }
    }
    let hashes: Vec<String> = by_hash.keys().cloned().collect();
    let missing: Vec<Rendered> =
        store.missing_objects(&hashes).await?.iter().filter_map(|h| by_hash.remove(h)).collect();
    // Most pages of a rebuild are held already: only what is missing is worth
    // compressing.
    let missing = if missing.iter().any(|p| p.compress) {
        tokio::task::spawn_blocking(move || {
            let mut missing = missing;
            missing.par_iter_mut().for_each(Rendered::add_variants);
            missing
        })
        .await
        .map_err(|e| EngineError::Internal(format!("compression task failed: {e}")))?
    } else {
        missing
    };
    let mut puts = Vec::new();
    for page in missing {
        let Some(enc) = page.encoded else { continue };
        let variants = [
            (Encoding::Identity, Some(&enc.identity)),
            (Encoding::Gzip, enc.gzip.as_ref()),
            (Encoding::Brotli, enc.brotli.as_ref()),
        ];
        for (encoding, body) in variants {
            if let Some(body) = body {
                out.bytes += body.len() as u64;
                out.files += 1;
                puts.push((object_key(&enc.hash, encoding), body.clone()));
            }
        }
        out.rows.push(object_row(&enc));
        written.insert(enc.hash);
    }
    objects.put_many(puts).await?;
    Ok(())
}
