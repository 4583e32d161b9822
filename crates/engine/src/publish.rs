//! The publish pipeline shared by full and incremental builds: render pages,
//! compare them with what their paths served, and write the objects that are new.

use std::collections::HashSet;

use bytes::Bytes;
use rayon::prelude::*;
use serde::Serialize;
use sesame_model::Deps;
use sesame_objects::{Encoded, Encoding, compressible, object_key};
use sesame_render::{Output, Renderer};
use sesame_site::{PageId, SiteState};
use sesame_store::{ObjectRow, Pointer, Target};

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
    /// Bytes to store, for pages (hashed at once).
    pub encoded: Option<Encoded>,
    /// Whether the object should get compressed variants once it is live
    /// (`crate::variants`).
    pub compress: bool,
}

/// The store's record of an object, as published: identity bytes only (its
/// variants follow, `crate::variants`).
fn object_row(enc: &Encoded) -> ObjectRow {
    ObjectRow { hash: enc.hash.clone(), size: enc.identity.len() as u64, encodings: 0 }
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
    /// The objects written (new to storage).
    pub hashes: Vec<String>,
    /// Files written (variants included).
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Objects written without the compressed variants they should get.
    pub uncompressed: Vec<Uncompressed>,
}

/// An object to compress once its generation is live (`crate::variants`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncompressed {
    /// Its hash.
    pub hash: String,
    /// The media type it is served as.
    pub content_type: String,
}

/// The objects of `pages` that storage does not hold (`stored`) and that
/// this publish has not taken already, identity bytes only, to write:
/// compressing waits until the generation is live. Objects are not durable
/// until [`ObjectStorage::sync`].
pub(crate) fn objects_to_write(
    pages: Vec<Rendered>,
    stored: &HashSet<String>,
    written: &mut HashSet<String>,
    out: &mut Written,
) -> Vec<(String, Bytes)> {
    let mut puts = Vec::new();
    for page in pages {
        let (Some(enc), Target::Page { content_type, .. }) = (page.encoded, &page.target) else { continue };
        if stored.contains(&enc.hash) || !written.insert(enc.hash.clone()) {
            continue;
        }
        out.bytes += enc.identity.len() as u64;
        out.files += 1;
        if page.compress {
            out.uncompressed.push(Uncompressed { hash: enc.hash.clone(), content_type: content_type.clone() });
        }
        out.hashes.push(enc.hash.clone());
        puts.push((object_key(&enc.hash, Encoding::Identity), enc.identity));
    }
    puts
}
