//! The publish pipeline shared by full and incremental builds: render pages,
//! compare them with the live pointers, and write the objects that are new.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use sesame_objects::{Encoded, Encoding, ObjectStorage, encode, object_key};
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
    pub deps: String,
    /// Bytes to store, for pages.
    pub encoded: Option<Encoded>,
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
            let deps = page.deps.join(" ");
            let output = renderer.render(&page)?;
            let mut page = rendered(page.path, output, deps, compress);
            page.source = Some(id.clone());
            Ok(RenderOutcome::Page(Box::new(page)))
        })
        .collect()
}

/// Wraps a renderer output (or a static file) into a publishable page.
pub(crate) fn rendered(path: String, output: Output, deps: String, compress: bool) -> Rendered {
    match output {
        Output::Page { bytes, content_type } => {
            let encoded = encode(bytes, content_type, compress);
            let mut encodings = 0;
            if encoded.gzip.is_some() {
                encodings |= encodings::GZIP;
            }
            if encoded.brotli.is_some() {
                encodings |= encodings::BROTLI;
            }
            let object = ObjectRow { hash: encoded.hash.clone(), size: encoded.identity.len() as u64, encodings };
            Rendered {
                source: None,
                path,
                target: Target::Page { object, content_type: content_type.into() },
                deps,
                encoded: Some(encoded),
            }
        }
        Output::Redirect(to) => Rendered { source: None, path, target: Target::Redirect(to), deps, encoded: None },
        Output::Gone => Rendered { source: None, path, target: Target::Gone, deps, encoded: None },
    }
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
/// this publish has not written already). Objects are not durable until
/// [`ObjectStorage::sync`].
pub(crate) async fn write_objects(
    store: &dyn MetaStore,
    objects: &Arc<dyn ObjectStorage>,
    pages: &[&Rendered],
    written: &mut HashSet<String>,
    out: &mut Written,
) -> Result<(), EngineError> {
    let mut by_hash: HashMap<&str, (&Encoded, &ObjectRow)> = HashMap::new();
    for page in pages {
        if let (Some(enc), Target::Page { object, .. }) = (&page.encoded, &page.target)
            && !written.contains(&enc.hash)
        {
            by_hash.insert(&enc.hash, (enc, object));
        }
    }
    let hashes: Vec<String> = by_hash.keys().map(|h| h.to_string()).collect();
    let missing = store.missing_objects(&hashes).await?;
    let mut puts = Vec::new();
    for hash in &missing {
        let (enc, row) = by_hash[hash.as_str()];
        let variants = [
            (Encoding::Identity, Some(&enc.identity)),
            (Encoding::Gzip, enc.gzip.as_ref()),
            (Encoding::Brotli, enc.brotli.as_ref()),
        ];
        for (encoding, body) in variants {
            if let Some(body) = body {
                out.bytes += body.len() as u64;
                out.files += 1;
                puts.push((object_key(hash, encoding), body.clone()));
            }
        }
        out.rows.push(row.clone());
        written.insert(hash.clone());
    }
    objects.put_many(puts).await?;
    Ok(())
}
