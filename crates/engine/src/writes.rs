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
use sesame_model::{AccountId, DocKey, Document, Op, Status, merge_patch};
use sesame_site::{FieldError, Rejection};
use sesame_store::{Author, Debounce, Stored, WriteTx};

use crate::content::{attach_media, referenced_hashes};
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
    /// Fields are refused: the first is named, all are listed.
    #[error("{}", errors.first().map(ToString::to_string).unwrap_or_default())]
    Invalid {
        /// Every refused field, in order.
        errors: Vec<FieldError>,
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

impl WriteError {
    /// One refused field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> WriteError {
        WriteError::Invalid { errors: vec![FieldError { field: field.into(), message: message.into() }] }
    }
}

impl From<Rejection> for WriteError {
    fn from(r: Rejection) -> WriteError {
        match r {
            Rejection::Missing(key) => WriteError::NotFound(format!("no document {key}")),
            Rejection::Invalid(errors) => WriteError::Invalid { errors },
        }
    }
}

/// The next state of `key` under `op`, with its media checked and recorded:
/// the one way a change becomes a document, for accounts (`must_own`: the
/// media they refer to must be theirs) and for rollbacks.
async fn next_document(
    project: &Project,
    tx: &mut Box<dyn WriteTx>,
    key: &DocKey,
    current: Option<&Document>,
    op: &Op,
    writer: &Actor,
    must_own: bool,
) -> Result<Option<Option<Document>>, WriteError> {
    let now = sesame_model::time::now();
    let mut next = project.site.next_state(key, current, op, Some(&writer.handle), now)?;
    if let (Some(Some(doc)), Op::Put(_) | Op::Patch(_) | Op::Revert(_)) = (&mut next, op) {
        let hashes = referenced_hashes(&project.site, doc);
        let found = if hashes.is_empty() { Vec::new() } else { tx.media(&hashes, writer.account).await? };
        attach_media(&project.site, doc, &found, must_own).map_err(|errors| WriteError::Invalid { errors })?;
        if current.is_some_and(|c| c == doc) {
            next = None;
        }
    }
    Ok(next)
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

/// Checks that `actor` may apply `op` to the document as it is (`current`)
/// and returns the op to apply: a patch becomes a put of the merged fields,
/// and in collections with an owner field a user's put sets it to the
/// writer (the fields are checked as sent first, owner included).
fn prepare(project: &Project, actor: &Actor, key: &DocKey, current: Option<&Stored>, op: Op) -> Result<Op, WriteError> {
    let site = &project.site;
    if op.is_moderation() && !actor.admin {
        return Err(WriteError::Forbidden("moderation is for admins".into()));
    }
    match current {
        Some(c) if !actor.owns(c) => {
            return Err(WriteError::Forbidden(format!("{} belongs to another account", key)));
        }
        Some(c) if c.doc.status == Status::Removed && op == Op::Delete => {
            return Err(if actor.admin {
                WriteError::Conflict {
                    field: "status".into(),
                    message: format!("{key} is taken down: restore it before deleting it"),
                }
            } else {
                WriteError::Forbidden(format!("{key} was taken down by a moderator; only an admin can restore it"))
            });
        }
        None if matches!(op, Op::Put(_)) => may_create(project, actor, key)?,
        None if matches!(op, Op::Patch(_)) => return Err(WriteError::NotFound("no such document".into())),
        _ => {}
    }
    let current_doc = current.map(|c| &c.doc);
    let op = match (op, current_doc) {
        (Op::Patch(patch), Some(c)) => {
            site.validate_patch(&key.collection, &patch).map_err(|errors| WriteError::Invalid { errors })?;
            let mut data = c.data.clone();
            merge_patch(&mut data, patch);
            Op::Put(data)
        }
        (op, _) => op,
    };
    Ok(match (op, &site.collection(&key.collection).owner) {
        (Op::Put(mut data), Some(field)) => {
            site.validate(&key.collection, &data).map_err(|errors| WriteError::Invalid { errors })?;
            let owner = match (current_doc, actor.admin) {
                (_, false) => Some(actor.handle.clone()),
                (Some(c), true) => data
                    .get(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .or(c.owner.as_deref().map(str::to_string)),
                (None, true) => {
                    data.get(field).and_then(|v| v.as_str()).map(str::to_string).or(Some(actor.handle.clone()))
                }
            };
            if let Some(owner) = owner {
                data.insert(field.clone(), owner.into());
            }
            Op::Put(data)
        }
        (op, _) => op,
    })
}

/// Applies `op` to `key` for `actor`: see the module documentation for what
/// is checked.
pub async fn write(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    op: Op,
    debounce: Debounce,
) -> Result<WriteResult, WriteError> {
    if op.is_moderation() && !actor.admin {
        return Err(WriteError::Forbidden("moderation is for admins".into()));
    }
    project.index_paths().await?;
    let mut tx = project.store.begin_write(debounce).await?;
    let current = tx.get(key).await?;
    let op = prepare(project, actor, key, current.as_ref(), op)?;
    let current_doc = current.as_ref().map(|c| &c.doc);
    let next = next_document(project, &mut tx, key, current_doc, &op, actor, !actor.admin).await?;
    let result = match next {
        None => WriteResult { event: None, doc: current.map(|c| c.doc) },
        Some(Some(doc)) => {
            claim_paths(project, &mut tx, &doc).await?;
            // A new document belongs to its writer; the admin token is no account.
            let account = current.map_or(actor.account.filter(|_| !actor.admin), |c| c.account);
            let event = tx.put(&doc, account, op.name(), Some(actor.author())).await?;
            WriteResult { event: Some(event), doc: Some(doc) }
        }
        Some(None) => {
            let event = tx.delete(key, op.name(), Some(actor.author())).await?;
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
    let Some(target) = version.and_then(|v| v.doc) else {
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
    let op = Op::Revert(Box::new(target));
    // A version's media were the document's: they are kept while it is.
    let Some(Some(doc)) = next_document(project, &mut tx, key, Some(&current.doc), &op, actor, false).await? else {
        return Ok(None);
    };
    claim_paths(project, &mut tx, &doc).await?;
    let id = tx.put(&doc, current.account, op.name(), Some(actor.author())).await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// The page a draft of `key` would publish: the document's own page (under
/// the first document route that gives it a path), rendered exactly as
/// publishing renders it, with every check of a write, and nothing written.
pub async fn preview(project: &Project, actor: &Actor, key: &DocKey, op: Op) -> Result<Vec<u8>, WriteError> {
    if !matches!(op, Op::Put(_) | Op::Patch(_)) {
        return Err(WriteError::invalid("", "only a draft of the fields can be previewed"));
    }
    let current = project.store.document(key).await?;
    let op = prepare(project, actor, key, current.as_ref(), op)?;
    let now = sesame_model::time::now();
    let current_doc = current.as_ref().map(|c| &c.doc);
    let mut doc = match project.site.next_state(key, current_doc, &op, Some(&actor.handle), now)? {
        Some(Some(doc)) => doc,
        Some(None) => return Err(WriteError::NotFound("a deleted document has no page".into())),
        None => current_doc.cloned().ok_or_else(|| WriteError::NotFound("no such document".into()))?,
    };
    let hashes = referenced_hashes(&project.site, &doc);
    let found = if hashes.is_empty() { Vec::new() } else { project.store.media(&hashes, actor.account).await? };
    attach_media(&project.site, &mut doc, &found, !actor.admin).map_err(|errors| WriteError::Invalid { errors })?;
    let site = project.site.clone();
    let renderer = project.renderer.clone();
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let (route, path) = site
            .doc_routes(&key.collection)
            .iter()
            .find_map(|&ix| site.doc_path(ix, &doc).map(|p| (ix, p)))
            .ok_or_else(|| WriteError::NotFound(format!("documents of {:?} have no page", key.collection)))?;
        let doc = Arc::new(doc);
        let page = sesame_site::Resolved {
            path,
            body: sesame_site::Body::Document { route, doc: &doc },
            deps: sesame_model::Deps::new([sesame_model::Dep::doc(&key)]),
        };
        match renderer.render(&page) {
            Ok(sesame_render::Output::Page { bytes, .. }) => Ok(bytes),
            Ok(_) => Err(WriteError::NotFound("the draft has no page".into())),
            Err(e) => {
                // A template that fails on this content: the person sees
                // that it cannot be shown, the operator the cause.
                tracing::warn!(error = %e, document = %key, "a preview failed to render");
                Err(WriteError::invalid("", "the page cannot be rendered with these fields"))
            }
        }
    })
    .await
    .map_err(|e| WriteError::Engine(EngineError::Internal(format!("preview task failed: {e}"))))?
}

/// The current (latest written) document, if `actor` may see it.
pub async fn read(project: &Project, actor: &Actor, key: &DocKey) -> Result<Option<Arc<Document>>, WriteError> {
    match project.store.document(key).await? {
        Some(stored) if actor.owns(&stored) => Ok(Some(Arc::new(stored.doc))),
        Some(_) => Err(WriteError::Forbidden(format!("{key} belongs to another account"))),
        None => Ok(None),
    }
}
