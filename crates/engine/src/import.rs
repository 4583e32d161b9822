//! Bulk import of NDJSON documents.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use sesame_model::slug::validate_id;
use sesame_model::{DocKey, Document, Status};
use sesame_site::Site;

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

/// Streams documents from NDJSON (one JSON object a line, with an `id`) into
/// `collection`, in one transaction: a bad line aborts the import, names its
/// number and leaves the store as it was. Each document gets a pending event;
/// `sesame build` (or a running worker) publishes them.
pub async fn import(
    project: &Project,
    reader: impl BufRead,
    file: &str,
    collection: &str,
    progress: &dyn Progress,
) -> Result<ImportSummary, EngineError> {
    let started = Instant::now();
    if !project.site.config.collections.contains_key(collection) {
        let known: Vec<&str> = project.site.config.collections.keys().map(String::as_str).collect();
        return Err(EngineError::Invalid(format!(
            "unknown collection {collection:?} (sesame.toml declares: {})",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )));
    }
    let now = sesame_model::time::now();
    let mut tx = project.store.begin_import().await?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut count = 0u64;
    progress.stage("importing", 0);
    for (i, line) in reader.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|e| EngineError::Line {
            file: file.into(),
            line: line_no,
            message: format!("cannot read: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let doc = parse_line(&project.site, collection, &line, now).map_err(|message| EngineError::Line {
            file: file.into(),
            line: line_no,
            message,
        })?;
        batch.push(doc);
        if batch.len() == BATCH {
            tx.add(&batch).await?;
            count += batch.len() as u64;
            progress.advance(batch.len() as u64);
            batch.clear();
        }
    }
    tx.add(&batch).await?;
    count += batch.len() as u64;
    progress.advance(batch.len() as u64);
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
    let now = sesame_model::time::now();
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|e| EngineError::Line {
            file: file.into(),
            line: line_no,
            message: format!("cannot read: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(site, collection, &line, now).map_err(|message| EngineError::Line {
            file: file.into(),
            line: line_no,
            message,
        })?);
    }
    Ok(out)
}

/// Parses one line into a new live document.
pub(crate) fn parse_line(site: &Site, collection: &str, line: &str, now: i64) -> Result<Document, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let serde_json::Value::Object(mut data) = value else {
        return Err("expected a JSON object".into());
    };
    let id = match data.remove("id") {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(_) => return Err("\"id\" must be a string or an integer".into()),
        None => return Err("missing \"id\"".into()),
    };
    validate_id(&id).map_err(|e| format!("id {id:?} {e}"))?;
    site.check_fields(collection, &data).map_err(|e| format!("field {:?} {}", e.field, e.message))?;
    let owner = site
        .collection(collection)
        .owner
        .as_deref()
        .and_then(|f| data.get(f))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(Arc::from);
    Ok(Document {
        key: DocKey::new(collection, id),
        owner,
        created: now,
        updated: now,
        status: Status::Live,
        flags: Vec::new(),
        data,
    })
}
