//! Change events: the input of `sesame apply` (and of any change feed), how
//! each one transforms a document, and their ingestion in one transaction.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sesame_model::slug::validate_id;
use sesame_model::{DocKey, Document, Status};
use sesame_site::Site;
use sesame_store::{Author, Debounce};

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
    /// The stored name of the operation.
    pub fn op(&self) -> &'static str {
        match self {
            Event::Upsert { .. } => "upsert",
            Event::Delete { .. } => "delete",
            Event::Takedown { .. } => "takedown",
            Event::Restore { .. } => "restore",
            Event::Flag { .. } => "flag",
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

/// Why an event cannot apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The document does not exist.
    Missing(DocKey),
    /// A field (or the flag name) is not acceptable.
    Field {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Missing(key) => write!(f, "document {key} does not exist"),
            Rejection::Field { field, message } => write!(f, "field {field:?} {message}"),
        }
    }
}

/// The document after `event`, given its current state: `Ok(None)` when the
/// event changes nothing (it is then not recorded), `Ok(Some(None))` for a
/// deletion. Upserting a taken-down document keeps it taken down. In a
/// collection without an owner field, `writer` becomes the owner of a new
/// document.
pub fn next_state(
    site: &Site,
    key: &DocKey,
    current: Option<&Document>,
    event: &Event,
    writer: Option<&str>,
    now: i64,
) -> Result<Option<Option<Document>>, Rejection> {
    let mut doc = match (event, current) {
        (Event::Upsert { doc, .. }, _) => {
            site.check_fields(&key.collection, doc)
                .map_err(|e| Rejection::Field { field: e.field, message: e.message })?;
            let owner = match &site.collection(&key.collection).owner {
                Some(field) => doc.get(field).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(Arc::from),
                None => current.map_or_else(|| writer.map(Arc::from), |c| c.owner.clone()),
            };
            if let Some(c) = current
                && c.data == *doc
                && c.owner == owner
            {
                return Ok(None);
            }
            Document {
                key: key.clone(),
                owner,
                created: current.map_or(now, |c| c.created),
                updated: now,
                status: current.map_or(Status::Live, |c| c.status),
                flags: current.map(|c| c.flags.clone()).unwrap_or_default(),
                data: doc.clone(),
            }
        }
        (Event::Delete { .. }, Some(_)) => return Ok(Some(None)),
        (_, None) => return Err(Rejection::Missing(key.clone())),
        (_, Some(c)) => c.clone(),
    };
    let before = (doc.status, doc.flags.clone());
    match event {
        Event::Takedown { .. } => doc.status = Status::Removed,
        Event::Restore { .. } => doc.status = Status::Live,
        Event::Flag { flag, value, .. } => {
            let ok = !flag.is_empty()
                && flag.len() <= 32
                && flag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(Rejection::Field {
                    field: "flag".into(),
                    message: format!("{flag:?} must be 1-32 lowercase letters, digits or '-'"),
                });
            }
            doc.set_flag(flag, *value);
        }
        Event::Upsert { .. } | Event::Delete { .. } => {}
    }
    if !matches!(event, Event::Upsert { .. }) {
        if (doc.status, &doc.flags) == (before.0, &before.1) {
            return Ok(None);
        }
        doc.updated = now;
    }
    Ok(Some(Some(doc)))
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
        match next_state(&project.site, &key, current.as_ref().map(|c| &c.doc), &e.event, writer, now)
            .map_err(|r| at(e)(r.to_string()))?
        {
            None => counts.unchanged += 1,
            Some(Some(doc)) => {
                tx.claim_paths(&key, &project.site.doc_paths(&doc)).await?;
                tx.put(&doc, current.and_then(|c| c.account), e.event.op(), author).await?;
                counts.written += 1;
            }
            Some(None) => {
                tx.delete(&key, e.event.op(), author).await?;
                counts.written += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(counts)
}
