//! Writes on behalf of an account, as the API makes them. Every check that
//! decides whether a write may happen runs inside the transaction that
//! writes, so nothing can change hands in between:
//!
//! - **ownership**: a document belongs to an account by id; only that account
//!   (or an admin) changes it;
//! - **creation**: the collection's `create` policy says which new documents
//!   an account may create (its own site, any new id, or none);
//! - **moderation**: only admins take down, restore and flag; a taken-down
//!   document stays down whatever its owner writes or rolls back to, and
//!   cannot be deleted from under the takedown;
//! - **paths**: a page path belongs to one document; a write whose document
//!   would take a path another document holds (live or taken down) is refused.

use std::sync::Arc;

use sesame_config::CreatePolicy;
use sesame_model::{AccountId, DocKey, Document, Status};
use sesame_store::{Author, Debounce, Stored, WriteTx};

use crate::events::{Event, Rejection, next_state};
use crate::{EngineError, Project};

/// Who is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The account; `None` for the admin token, which is no account.
    pub account: Option<AccountId>,
    /// The account's handle (`admin` for the admin token).
    pub handle: String,
    /// Whether it may edit anything and moderate.
    pub admin: bool,
}

impl Actor {
    /// How the actor is recorded with the events it causes.
    pub fn author(&self) -> Author<'_> {
        Author { handle: &self.handle, account: self.account }
    }

    /// Whether the actor may change a stored document.
    fn owns(&self, stored: &Stored) -> bool {
        self.admin || (self.account.is_some() && stored.account == self.account)
    }
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
    /// The document (or the version asked for) does not exist.
    #[error("{0}")]
    NotFound(String),
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
    /// The write collides with another document or with moderation.
    #[error("{field}: {message}")]
    Conflict {
        /// What collides (`path`, `status`).
        field: String,
        /// What is wrong, naming the other party.
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

/// Whether `actor` may create the document `key`, per its collection's policy.
fn may_create(project: &Project, actor: &Actor, key: &DocKey) -> Result<(), WriteError> {
    if actor.admin {
        return Ok(());
    }
    match project.site.collection(&key.collection).create {
        CreatePolicy::Any => Ok(()),
        CreatePolicy::OwnHandle if *key.id == *actor.handle => Ok(()),
        CreatePolicy::OwnHandle => Err(WriteError::Forbidden(format!(
            "an account may only create its own document in {:?} ({}/{})",
            key.collection, key.collection, actor.handle
        ))),
        CreatePolicy::Admin => {
            Err(WriteError::Forbidden(format!("only admins create documents in {:?}", key.collection)))
        }
    }
}

/// Claims the page paths of `doc` in `tx`, refusing paths that a route
/// reserves or that another document holds.
async fn claim_paths(project: &Project, tx: &mut Box<dyn WriteTx>, doc: &Document) -> Result<(), WriteError> {
    let site = &project.site;
    for &ix in site.doc_routes(&doc.key.collection) {
        if let Some(path) = site.doc_path(ix, doc).filter(|p| site.reserved_by_route(p)) {
            return Err(WriteError::Conflict {
                field: "path".into(),
                message: format!("the path {path} is reserved for the site's own pages"),
            });
        }
    }
    let contested = tx.claim_paths(&doc.key, &site.doc_paths(doc)).await?;
    match contested.first() {
        None => Ok(()),
        Some((path, holder)) => Err(WriteError::Conflict {
            field: "path".into(),
            message: format!("the path {path} belongs to another document ({holder})"),
        }),
    }
}

/// Applies `op` to `key` for `actor`: see the module documentation for what
/// is checked. In collections with an owner field, a user's write sets the
/// field to the writer.
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
    project.index_paths().await?;
    let mut tx = project.store.begin_write(debounce).await?;
    let current = tx.get(key).await?;
    match &current {
        Some(c) if !actor.owns(c) => {
            return Err(WriteError::Forbidden(format!("{key} belongs to another account")));
        }
        Some(c) if c.doc.status == Status::Removed && op == WriteOp::Delete => {
            return Err(if actor.admin {
                WriteError::Conflict {
                    field: "status".into(),
                    message: format!("{key} is taken down: restore it before deleting it"),
                }
            } else {
                WriteError::Forbidden(format!("{key} was taken down by a moderator; only an admin can restore it"))
            });
        }
        None if matches!(op, WriteOp::Put(_)) => may_create(project, actor, key)?,
        _ => {}
    }
    let (collection, id) = (key.collection.to_string(), serde_json::Value::from(key.id.to_string()));
    let event = match op {
        WriteOp::Put(data) => Event::Upsert { collection, id, doc: data },
        WriteOp::Patch(patch) => {
            let mut data = current
                .as_ref()
                .map(|c| c.doc.data.clone())
                .ok_or_else(|| WriteError::NotFound("no such document".into()))?;
            merge(&mut data, patch);
            Event::Upsert { collection, id, doc: data }
        }
        WriteOp::Delete => Event::Delete { collection, id },
        WriteOp::Takedown => Event::Takedown { collection, id },
        WriteOp::Restore => Event::Restore { collection, id },
        WriteOp::Flag(flag, value) => Event::Flag { collection, id, flag, value },
    };
    let current_doc = current.as_ref().map(|c| &c.doc);
    // The fields as sent must fit their roles, owner included, even where
    // the server then sets the owner itself.
    if let Event::Upsert { doc, .. } = &event {
        site.check_fields(&key.collection, doc)
            .map_err(|e| WriteError::Invalid { field: e.field, message: e.message })?;
    }
    let event = match (event, &owner_field) {
        (Event::Upsert { collection, id, mut doc }, Some(field)) => {
            let owner = match (current_doc, actor.admin) {
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
    let next = next_state(site, key, current_doc, &event, Some(&actor.handle), now).map_err(|r| match r {
        Rejection::Missing(_) => WriteError::NotFound("no such document".into()),
        Rejection::Field { field, message } => WriteError::Invalid { field, message },
    })?;
    let result = match next {
        None => WriteResult { event: None, doc: current.map(|c| c.doc) },
        Some(Some(doc)) => {
            claim_paths(project, &mut tx, &doc).await?;
            // A new document belongs to its writer; the admin token is no account.
            let account = current.map_or(actor.account.filter(|_| !actor.admin), |c| c.account);
            let event = tx.put(&doc, account, event.op(), Some(actor.author())).await?;
            WriteResult { event: Some(event), doc: Some(doc) }
        }
        Some(None) => {
            let event = tx.delete(key, event.op(), Some(actor.author())).await?;
            WriteResult { event: Some(event), doc: None }
        }
    };
    tx.commit().await?;
    Ok(result)
}

/// Restores a document to what generation `generation` published (the newest
/// kept version at or before it), as a new change that is due at once; the
/// change can itself be rolled back, which is how one rolls forward. Returns
/// the event id, or `None` when the document already is in that state. A
/// deleted document is not rolled back (it is written anew); nor is one
/// whose kept version is its deletion.
///
/// Moderation is not content: the restored document keeps its current status
/// and flags, so a rollback never undoes a takedown or an admin's flag.
pub async fn rollback(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    generation: u64,
) -> Result<Option<i64>, WriteError> {
    let version = project.store.version_at(key, generation).await?;
    let Some(mut target) = version.and_then(|v| v.doc) else {
        return Err(WriteError::NotFound(format!(
            "no version of {key} published at or before generation {generation} is kept"
        )));
    };
    project.index_paths().await?;
    let mut tx = project.store.begin_write(Debounce::NONE).await?;
    let current = match tx.get(key).await? {
        Some(c) if !actor.owns(&c) => {
            return Err(WriteError::Forbidden(format!("{key} belongs to another account")));
        }
        Some(c) => c,
        None => return Err(WriteError::NotFound(format!("{key} was deleted; write it again to bring it back"))),
    };
    target.status = current.doc.status;
    target.flags = current.doc.flags.clone();
    if current.doc == target {
        return Ok(None);
    }
    claim_paths(project, &mut tx, &target).await?;
    let id = tx.put(&target, current.account, "rollback", Some(actor.author())).await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// The current (latest written) document, if `actor` may see it.
pub async fn read(project: &Project, actor: &Actor, key: &DocKey) -> Result<Option<Arc<Document>>, WriteError> {
    match project.store.document(key).await? {
        Some(stored) if actor.owns(&stored) => Ok(Some(Arc::new(stored.doc))),
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
