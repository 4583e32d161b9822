//! Change events: the input of `sesame apply` (and of any change feed), how
//! each one transforms a document, and their ingestion in one transaction.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sesame_model::{DocKey, Op};
use sesame_site::{KeyError, Rejection, Site};
use sesame_store::Debounce;

use crate::change::{Applied, By, Missing, Policy, WriteError, apply_change};
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
    pub fn key(&self, site: &Site) -> Result<DocKey, KeyError> {
        let (collection, id) = self.target();
        site.doc_key_of(collection, id)
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

/// Writes events in one transaction, each through the one door
/// ([`apply_change`]) under `by`'s rules. A bad event aborts the whole
/// batch, naming its file and line; nothing of the batch is kept.
pub async fn ingest(
    project: &Project,
    events: &[Located],
    by: By<'_>,
    on_missing: Missing,
    debounce: Debounce,
) -> Result<Ingested, WriteError> {
    let policy = Policy { by, on_missing };
    project.index_paths().await?;
    let mut tx = project.store.begin_write(debounce).await?;
    let mut counts = Ingested::default();
    for e in events {
        let at = |message: String| EngineError::Line { file: e.file.to_string(), line: e.line, message };
        let key = e.event.key(&project.site).map_err(|k| at(k.to_string()))?;
        let applied = apply_change(project, &mut tx, &key, &e.event.op(), &policy).await.map_err(|w| match w {
            WriteError::Engine(e) => WriteError::Engine(e),
            WriteError::Invalid { errors } => WriteError::Engine(at(Rejection::Invalid(errors).to_string())),
            refused => WriteError::Engine(at(refused.to_string())),
        })?;
        match applied {
            Applied::Written { .. } => counts.written += 1,
            Applied::Unchanged(_) => counts.unchanged += 1,
            Applied::Missing => counts.missing += 1,
        }
    }
    tx.commit().await?;
    Ok(counts)
}
