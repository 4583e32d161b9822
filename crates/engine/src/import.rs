//! Bulk import of NDJSON documents.

use std::io::BufRead;
use std::time::Instant;

use sesame_model::{DocKey, Document, Op};
use sesame_site::{Rejection, Site, Writer};

use crate::content::{attach_media, referenced_hashes};
use crate::{EngineError, Progress, Project};

/// Documents per store round trip.
const BATCH: usize = 5000;

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// Documents written.
    pub documents: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The documents of an NDJSON input, one per non-blank line with its line
/// number, each error naming its line.
fn documents<'a>(
    site: &'a Site,
    reader: impl BufRead + 'a,
    file: &'a str,
    collection: &'a str,
) -> impl Iterator<Item = Result<(u64, Document), EngineError>> + 'a {
    let now = sesame_model::time::now();
    reader.lines().enumerate().filter_map(move |(i, line)| {
        let line_no = i as u64 + 1;
        let at = |message: String| EngineError::Line { file: file.into(), line: line_no, message };
        match line {
            Err(e) => Some(Err(at(format!("cannot read: {e}")))),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(parse_line(site, collection, &line, now).map(|d| (line_no, d)).map_err(at)),
        }
    })
}

/// Streams documents from NDJSON (one JSON object a line, with an `id`) into
/// `collection`, in one transaction: a bad line aborts the import, names its
/// number and leaves the store as it was. Each document gets a pending event;
/// `sesame build` (or a running publisher) publishes them.
pub async fn import(
    project: &Project,
    reader: impl BufRead,
    file: &str,
    collection: &str,
    progress: &dyn Progress,
) -> Result<ImportSummary, EngineError> {
    let started = Instant::now();
    project.site.declares(collection).map_err(|e| EngineError::Invalid(e.to_string()))?;
    project.index_paths().await?;
    let mut tx = project.store.begin_import().await?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut count = 0u64;
    progress.stage("importing", 0);
    let mut docs = documents(&project.site, reader, file, collection).peekable();
    while let Some(doc) = docs.next() {
        let (line, mut doc) = doc?;
        // Imported content may refer to any uploaded image, which must exist.
        let hashes = referenced_hashes(&project.site, &doc);
        if !hashes.is_empty() {
            let found: Vec<_> = tx.media(&hashes).await?.into_iter().map(|m| (m, false)).collect();
            attach_media(&project.site, &mut doc, &found, false).map_err(|errors| EngineError::Line {
                file: file.into(),
                line,
                message: Rejection::Invalid(errors).to_string(),
            })?;
        }
        batch.push(doc);
        if batch.len() == BATCH || docs.peek().is_none() {
            tx.add(&batch).await?;
            let paths: Vec<(String, DocKey)> =
                batch.iter().flat_map(|d| project.site.doc_paths(d).into_iter().map(|p| (p, d.key.clone()))).collect();
            tx.claim_paths(&paths).await?;
            count += batch.len() as u64;
            progress.advance(batch.len() as u64);
            batch.clear();
        }
    }
    tx.commit().await?;
    progress.finish();
    Ok(ImportSummary { documents: count, seconds: started.elapsed().as_secs_f64() })
}

/// Reads every document of an NDJSON input into memory (for simulations).
pub fn read_documents(
    site: &Site,
    reader: impl BufRead,
    file: &str,
    collection: &str,
) -> Result<Vec<Document>, EngineError> {
    documents(site, reader, file, collection).map(|d| d.map(|(_, doc)| doc)).collect()
}

/// Parses one line into a document, as the operator's put of it would
/// make it: the same key checks and the same [`Site::next_state`] (the
/// store keeps what a put keeps of a document that exists).
pub(crate) fn parse_line(site: &Site, collection: &str, line: &str, now: i64) -> Result<Document, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let serde_json::Value::Object(mut data) = value else {
        return Err("expected a JSON object".into());
    };
    let id = data.remove("id").ok_or("missing \"id\"")?;
    let key = site.doc_key_of(collection, &id).map_err(|e| e.to_string())?;
    match site.next_state(&key, None, &Op::Put(data), Writer::Operator(None), now) {
        Ok(Some(Some(doc))) => Ok(doc),
        Ok(_) => unreachable!("a put of a new document makes one"),
        Err(rejection) => Err(rejection.to_string()),
    }
}
