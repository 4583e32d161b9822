//! What a document records of the media it refers to.
//!
//! The site model finds the references (the fields its schema marks
//! `format: media`); this module checks them against what was uploaded, in
//! the transaction that writes, and records on the document what its pages
//! need (format and dimensions), so that rendering stays a function of the
//! document.

use std::collections::BTreeMap;

use sesame_model::media::parse_ref;
use sesame_model::{Document, Media};
use sesame_site::{FieldError, Site};
use sesame_store::MediaRow;

/// The content hashes `doc` refers to, for looking them up.
pub(crate) fn referenced_hashes(site: &Site, doc: &Document) -> Vec<String> {
    if !site.declares_media(&doc.key.collection) {
        return Vec::new();
    }
    let data = doc.data.to_map();
    let mut hashes: Vec<String> = site
        .media_refs(&doc.key.collection, &data)
        .into_iter()
        .filter_map(|(_, r)| parse_ref(r).map(|(h, _)| h.to_string()))
        .collect();
    hashes.sort();
    hashes.dedup();
    hashes
}

/// Sets `doc.media` from the media its references name (`found`: the rows of
/// those hashes, with whether the writer owns each). A reference to media
/// that was never uploaded, in another format, or (with `must_own`) that the
/// writer does not own, is refused with its field.
pub(crate) fn attach_media(
    site: &Site,
    doc: &mut Document,
    found: &[(MediaRow, bool)],
    must_own: bool,
) -> Result<(), Vec<FieldError>> {
    let mut media = BTreeMap::new();
    let mut errors = Vec::new();
    let data = doc.data.to_map();
    for (field, reference) in site.media_refs(&doc.key.collection, &data) {
        let Some((hash, format)) = parse_ref(reference) else { continue }; // the schema refused it already
        let row = found.iter().find(|(row, _)| row.hash == hash);
        let problem = match row {
            None => Some("names no uploaded image".to_string()),
            Some((row, _)) if row.format != format => Some(format!("names an image stored as .{}", row.format.ext())),
            Some((_, false)) if must_own => Some("names an image another account uploaded".to_string()),
            Some((row, _)) => {
                media.insert(reference.to_string(), Media { format, width: row.width, height: row.height });
                None
            }
        };
        if let Some(message) = problem {
            errors.push(FieldError { field, message });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    doc.media = media;
    Ok(())
}
