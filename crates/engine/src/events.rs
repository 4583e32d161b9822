//! Change events: the input of `sesame apply` (and of any change feed), how
//! each one transforms a document, and their ingestion in one transaction.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sesame_model::slug::validate_id;
use sesame_model::{DocKey, Op};
use sesame_site::Site;
use sesame_store::{Author, Debounce};

use crate::content::{attach_media, referenced_hashes};
use crate::{EngineError, Project};

/// One change, as written in an events file (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Event {
    /// Create or replace a document's user fields.
    Upsert {
        /// Collection name.
        collection: String,
        /// Document id (string or integer).
        id: serde_json::Value,
        /// The user fields.
        doc: serde_json::Map<String, serde_json::Value>,
    },
    /// Delete a document outright.
    Delete {
        /// Collection name.
        collection: String,
        /// Document id.
        id: serde_json::Value,
    },
    /// Take a document down (its page answers 410, it leaves every listing).
    Takedown {
        /// Collection name.
        collection: String,
        /// Document id.
        id: serde_json::Value,
    },
    /// Undo a takedown.
    Restore {
        /// Collection name.
        collection: String,
        /// Document id.
        id: serde_json::Value,
    },
    /// Set or clear a flag such as `adult`.
    Flag {
        /// Collection name.
        collection: String,
        /// Document id.
        id: serde_json::Value,
        /// Flag name: lowercase letters, digits and `-`.
        flag: String,
        /// Set (`true`) or clear (`false`).
        value: bool,
    },
}

impl Event {
    /// The change the event asks for.
    pub fn op(&self) -> Op {
        match self {
            Event::Upsert { doc, .. } => Op::Put(doc.clone()),
            Event::Delete { .. } => Op::Delete,
            Event::Takedown { .. } => Op::Takedown,
            Event::Restore { .. } => Op::Restore,
            Event::Flag { flag, value, .. } => Op::Flag(flag.clone(), *value),
        }
    }

    fn target(&self) -> (&str, &serde_json::Value) {
        match self {
            Event::Upsert { collection, id, .. }
            | Event::Delete { collection, id }
            | Event::Takedown { collection, id }
            | Event::Restore { collection, id }
            | Event::Flag { collection, id, .. } => (collection, id),
        }
    }

    /// The document the event concerns, validated against the configuration.
    pub fn key(&self, site: &Site) -> Result<DocKey, String> {
        let (collection, id) = self.target();
        if !site.config.collections.contains_key(collection) {
            let known: Vec<&str> = site.config.collections.keys().map(String::as_str).collect();
            return Err(format!("unknown collection {collection:?} (declared: {})", known.join(", ")));
        }
        let id = match id {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
            _ => return Err("\"id\" must be a string or an integer".into()),
        };
        validate_id(&id).map_err(|e| format!("id {id:?} {e}"))?;
        Ok(DocKey::new(collection, id))
    }
}

/// Parses one line of an events file.
pub fn parse_event(line: &str) -> Result<Event, String> {
    serde_json::from_str(line).map_err(|e| format!("not a valid event: {e}"))
}

/// An event with where it came from, for error messages.
#[derive(Debug, Clone)]
pub struct Located {
    /// The input it was read from.
    pub file: Arc<str>,
    /// 1-based line in that input.
    pub line: u64,
    /// The event.
    pub event: Event,
}

/// What to do with an event about a document that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Abort the batch (for change feeds, where it means a gap).
    Fail,
    /// Skip the event (for moderation lists, which outlive documents).
    Skip,
}

/// Counts of an ingestion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Events that changed a document (and were recorded).
    pub written: usize,
    /// Events that changed nothing.
    pub unchanged: usize,
    /// Events about missing documents, skipped.
    pub missing: usize,
}

/// Writes events in one transaction, each with its document change. A bad
/// event aborts the whole batch, naming its file and line; nothing of the
/// batch is kept. This is the operator's way in (`apply`, bulk moderation):
/// documents keep the account that owns them, and paths contested by the
/// operator's content are left for the site model to decide.
pub async fn ingest(
    project: &Project,
    events: &[Located],
    author: Option<Author<'_>>,
    on_missing: Missing,
    debounce: Debounce,
) -> Result<Ingested, EngineError> {
    let now = sesame_model::time::now();
    let at = |e: &Located| {
        let (file, line) = (e.file.to_string(), e.line);
        move |message: String| EngineError::Line { file, line, message }
    };
    project.index_paths().await?;
    let mut tx = project.store.begin_write(debounce).await?;
    let mut counts = Ingested::default();
    for e in events {
        let key = e.event.key(&project.site).map_err(at(e))?;
        let current = tx.get(&key).await?;
        if current.is_none() && on_missing == Missing::Skip && !matches!(e.event, Event::Upsert { .. }) {
            counts.missing += 1;
            continue;
        }
        let writer = author.map(|a| a.handle);
        let op = e.event.op();
        let current_doc = current.as_ref().map(|c| &c.doc);
        let mut next =
            project.site.next_state(&key, current_doc, &op, writer, now).map_err(|r| at(e)(r.to_string()))?;
        if let (Some(Some(doc)), Op::Put(_)) = (&mut next, &op) {
            // The operator's content may refer to any uploaded image.
            let hashes = referenced_hashes(&project.site, doc);
            let found = if hashes.is_empty() { Vec::new() } else { tx.media(&hashes, None).await? };
            attach_media(&project.site, doc, &found, false).map_err(|errors| {
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                at(e)(all.join("; "))
            })?;
            if current_doc == Some(&*doc) {
                next = None;
            }
        }
        match next {
            None => counts.unchanged += 1,
            Some(Some(doc)) => {
                tx.claim_paths(&key, &project.site.doc_paths(&doc)).await?;
                tx.put(&doc, current.and_then(|c| c.account), op.name(), author).await?;
                counts.written += 1;
            }
            Some(None) => {
                tx.delete(&key, op.name(), author).await?;
                counts.written += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(counts)
}
