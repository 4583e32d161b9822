//! Writes on behalf of an account, as the API makes them: the ownership check
//! and the write happen in one transaction, so nothing can change hands in
//! between.

use std::sync::Arc;

use sesame_model::{DocKey, Document};
use sesame_store::Debounce;

use crate::events::{Event, Rejection, next_state};
use crate::{EngineError, Project};

/// Who is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The account's handle.
    pub handle: String,
    /// Whether it may edit anything and moderate.
    pub admin: bool,
}

/// What the account asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Replace the user fields.
    Put(serde_json::Map<String, serde_json::Value>),
    /// Merge into the user fields (RFC 7396: `null` removes a field).
    Patch(serde_json::Map<String, serde_json::Value>),
    /// Delete the document.
    Delete,
    /// Take it down (admins only).
    Takedown,
    /// Undo a takedown (admins only).
    Restore,
    /// Set or clear a flag (admins only).
    Flag(String, bool),
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The document does not exist.
    #[error("not found")]
    NotFound,
    /// The actor may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A field is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl From<sesame_store::StoreError> for WriteError {
    fn from(e: sesame_store::StoreError) -> Self {
        WriteError::Engine(e.into())
    }
}

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    /// The recorded event; `None` when the write changed nothing.
    pub event: Option<i64>,
    /// The document after the write (`None`: deleted).
    pub doc: Option<Document>,
}

/// RFC 7396 JSON merge patch.
fn merge(target: &mut serde_json::Map<String, serde_json::Value>, patch: serde_json::Map<String, serde_json::Value>) {
    for (k, v) in patch {
        match (v, target.get_mut(&k)) {
            (serde_json::Value::Null, _) => {
                target.remove(&k);
            }
            (serde_json::Value::Object(p), Some(serde_json::Value::Object(t))) => merge(t, p),
            (serde_json::Value::Object(p), _) => {
                let mut t = serde_json::Map::new();
                merge(&mut t, p);
                target.insert(k, serde_json::Value::Object(t));
            }
            (v, _) => {
                target.insert(k, v);
            }
        }
    }
}

/// Applies `op` to `key` for `actor`. Users may only touch documents they
/// own (and own what they create); in collections with an owner field, the
/// field is set to the writer. Moderation is for admins.
pub async fn write(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    op: WriteOp,
    debounce: Debounce,
) -> Result<WriteResult, WriteError> {
    let site = &project.site;
    let owner_field = site.collection(&key.collection).owner.clone();
    let moderation = matches!(op, WriteOp::Takedown | WriteOp::Restore | WriteOp::Flag(..));
    if moderation && !actor.admin {
        return Err(WriteError::Forbidden("moderation is for admins".into()));
    }
    let mut tx = project.store.begin_write(debounce).await?;
    let current = tx.get(key).await?;
    if let Some(c) = &current
        && !actor.admin
        && c.owner.as_deref() != Some(actor.handle.as_str())
    {
        return Err(WriteError::Forbidden(format!("{key} belongs to another account")));
    }
    let (collection, id) = (key.collection.to_string(), serde_json::Value::from(key.id.to_string()));
    let event = match op {
        WriteOp::Put(data) => Event::Upsert { collection, id, doc: data },
        WriteOp::Patch(patch) => {
            let mut data = current.as_ref().map(|c| c.data.clone()).ok_or(WriteError::NotFound)?;
            merge(&mut data, patch);
            Event::Upsert { collection, id, doc: data }
        }
        WriteOp::Delete => Event::Delete { collection, id },
        WriteOp::Takedown => Event::Takedown { collection, id },
        WriteOp::Restore => Event::Restore { collection, id },
        WriteOp::Flag(flag, value) => Event::Flag { collection, id, flag, value },
    };
    let event = match (event, &owner_field) {
        (Event::Upsert { collection, id, mut doc }, Some(field)) => {
            let owner = match (&current, actor.admin) {
                (_, false) => Some(actor.handle.clone()),
                (Some(c), true) => doc
                    .get(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .or(c.owner.as_deref().map(str::to_string)),
                (None, true) => {
                    doc.get(field).and_then(|v| v.as_str()).map(str::to_string).or(Some(actor.handle.clone()))
                }
            };
            if let Some(owner) = owner {
                doc.insert(field.clone(), owner.into());
            }
            Event::Upsert { collection, id, doc }
        }
        (e, _) => e,
    };
    let now = sesame_model::time::now();
    let next = next_state(site, key, current.as_ref(), &event, Some(&actor.handle), now).map_err(|r| match r {
        Rejection::Missing(_) => WriteError::NotFound,
        Rejection::Field { field, message } => WriteError::Invalid { field, message },
    })?;
    let result = match next {
        None => WriteResult { event: None, doc: current },
        Some(Some(doc)) => {
            let event = tx.put(&doc, event.op(), Some(&actor.handle)).await?;
            WriteResult { event: Some(event), doc: Some(doc) }
        }
        Some(None) => {
            let event = tx.delete(key, event.op(), Some(&actor.handle)).await?;
            WriteResult { event: Some(event), doc: None }
        }
    };
    tx.commit().await?;
    Ok(result)
}

/// The current (latest written) document, if `actor` may see it.
pub async fn read(project: &Project, actor: &Actor, key: &DocKey) -> Result<Option<Arc<Document>>, WriteError> {
    match project.store.document(key).await? {
        Some(d) if actor.admin || d.owner.as_deref() == Some(actor.handle.as_str()) => Ok(Some(Arc::new(d))),
        Some(_) => Err(WriteError::Forbidden(format!("{key} belongs to another account"))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}}).as_object().cloned().unwrap();
        let patch = serde_json::json!({"a": "z", "c": {"f": null}, "n": [1]}).as_object().cloned().unwrap();
        merge(&mut target, patch);
        assert_eq!(serde_json::Value::Object(target), serde_json::json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
    }
}
