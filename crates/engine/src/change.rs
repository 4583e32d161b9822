//! The one door for changes: [`apply_change`] is the only way a change
//! becomes a stored document, for every entry point (the API and the
//! dashboard, `/admin/*`, `sesame apply` and `moderate`, a rollback; a
//! preview runs the same checks and writes nothing). The content itself is
//! the site model's ([`sesame_site::Site::next_state`]: key and field checks,
//! merge, owner); this adds what needs the store, inside the transaction
//! that writes, so nothing can change hands in between:
//!
//! - **ownership**: a document belongs to an account by id; only that account
//!   (or an admin) changes it;
//! - **creation**: the collection's `create` policy says which new documents
//!   an account may create (its own site, any new id, or none);
//! - **moderation**: only admins take down, restore and flag; a taken-down
//!   document stays down whatever its owner writes or rolls back to, and
//!   cannot be deleted by its owner from under the takedown;
//! - **media**: an account's document refers to its own uploads only;
//! - **paths**: a page path belongs to one document; an account's or an
//!   admin's write whose document would take a path another document holds
//!   (live or taken down), or one a route reserves, is refused.
//!
//! The operator's tools ([`By::Operator`]) are trusted with every document:
//! they skip the account checks, and their content claims only free paths.
//! `import` is the bulk form of the operator's put: the same key checks and
//! the same `next_state`, with the store's bulk insert.

use std::sync::Arc;

use sesame_config::CreatePolicy;
use sesame_model::{AccountId, DocKey, Document, Op, Status};
use sesame_site::{FieldError, Rejection, Writer};
use sesame_store::{Author, Debounce, MediaRow, MetaStore, StoreError, Stored, WriteTx};

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
    pub(crate) fn owns(&self, stored: &Stored) -> bool {
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
            Rejection::Missing(key) => WriteError::NotFound(format!("document {key} does not exist")),
            Rejection::Invalid(errors) => WriteError::Invalid { errors },
        }
    }
}

/// Who makes a change: the rules of [`apply_change`] follow from it.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    /// An account or an admin, through the API or the dashboard.
    Actor(&'a Actor),
    /// The operator's tools (`apply`, `moderate`), trusted with every
    /// document; their changes are recorded under `author`, if any.
    Operator(Option<Author<'a>>),
}

/// What a change to a document that does not exist does (a put creates it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Refuse it: an error for one write, the whole batch aborted for a
    /// change feed (where it means a gap).
    Fail,
    /// Skip it (for moderation lists, which outlive documents).
    Skip,
}

/// How [`apply_change`] treats one change.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Who makes it.
    pub by: By<'a>,
    /// What a change to a document that does not exist does (a put creates it).
    pub on_missing: Missing,
}

impl<'a> Policy<'a> {
    /// An account's or an admin's change: a missing document is an error.
    pub fn actor(actor: &'a Actor) -> Policy<'a> {
        Policy { by: By::Actor(actor), on_missing: Missing::Fail }
    }

    /// Who the content says wrote it (see [`sesame_site::Writer`]).
    fn writer(&self) -> Writer<'a> {
        match self.by {
            By::Actor(a) if a.admin => Writer::Admin(&a.handle),
            By::Actor(a) => Writer::Account(&a.handle),
            By::Operator(author) => Writer::Operator(author.map(|a| a.handle)),
        }
    }

    fn author(&self) -> Option<Author<'a>> {
        match self.by {
            By::Actor(a) => Some(a.author()),
            By::Operator(author) => author,
        }
    }
}

/// What [`apply_change`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Recorded as event `event`; the document after it (`None`: deleted).
    Written {
        /// The event id.
        event: i64,
        /// The document after the change.
        doc: Option<Document>,
    },
    /// Nothing changed; the document as it is.
    Unchanged(Option<Document>),
    /// The document does not exist and the policy skips such changes.
    Missing,
}

/// What deciding a change reads: the write transaction for a change, the
/// store outside any transaction for a preview, which writes nothing.
#[async_trait::async_trait]
pub(crate) trait Reads: Send {
    async fn current(&mut self, key: &DocKey) -> Result<Option<Stored>, StoreError>;
    async fn media(
        &mut self,
        hashes: &[String],
        account: Option<AccountId>,
    ) -> Result<Vec<(MediaRow, bool)>, StoreError>;
}

#[async_trait::async_trait]
impl Reads for Box<dyn WriteTx> {
    async fn current(&mut self, key: &DocKey) -> Result<Option<Stored>, StoreError> {
        self.get(key).await
    }
    async fn media(
        &mut self,
        hashes: &[String],
        account: Option<AccountId>,
    ) -> Result<Vec<(MediaRow, bool)>, StoreError> {
        WriteTx::media(self.as_mut(), hashes, account).await
    }
}

/// The store as committed: a preview's reads.
pub(crate) struct Committed<'a>(pub(crate) &'a dyn MetaStore);

#[async_trait::async_trait]
impl Reads for Committed<'_> {
    async fn current(&mut self, key: &DocKey) -> Result<Option<Stored>, StoreError> {
        self.0.document(key).await
    }
    async fn media(
        &mut self,
        hashes: &[String],
        account: Option<AccountId>,
    ) -> Result<Vec<(MediaRow, bool)>, StoreError> {
        self.0.media(hashes, account).await
    }
}

/// A change decided: the document as it is and what it becomes.
pub(crate) struct Decision {
    pub(crate) current: Option<Stored>,
    pub(crate) next: Next,
}

pub(crate) enum Next {
    Unchanged,
    Missing,
    Put(Document),
    Delete,
}

/// Every check of a change but the path claims, and its next state: who
/// may, what the content becomes ([`sesame_site::Site::next_state`]) and
/// which media it refers to.
pub(crate) async fn decide(
    project: &Project,
    reads: &mut dyn Reads,
    key: &DocKey,
    op: &Op,
    policy: &Policy<'_>,
) -> Result<Decision, WriteError> {
    let current = reads.current(key).await?;
    if let By::Actor(actor) = policy.by {
        permitted(project, actor, key, current.as_ref(), op)?;
    }
    if current.is_none() && !matches!(op, Op::Put(_)) && policy.on_missing == Missing::Skip {
        return Ok(Decision { current, next: Next::Missing });
    }
    let current_doc = current.as_ref().map(|c| &c.doc);
    let now = sesame_model::time::now();
    let next = match project.site.next_state(key, current_doc, op, policy.writer(), now)? {
        None => Next::Unchanged,
        Some(None) => Next::Delete,
        Some(Some(mut doc)) => {
            if op.changes_content() {
                // Accounts refer to their own uploads; an admin, the operator
                // and a rollback (a version's media were the document's, and
                // are kept while it is) to any.
                let (account, must_own) = match policy.by {
                    By::Actor(a) => (a.account, !a.admin && !matches!(op, Op::Revert(_))),
                    By::Operator(_) => (None, false),
                };
                let hashes = referenced_hashes(&project.site, &doc);
                let found = if hashes.is_empty() { Vec::new() } else { reads.media(&hashes, account).await? };
                attach_media(&project.site, &mut doc, &found, must_own)
                    .map_err(|errors| WriteError::Invalid { errors })?;
            }
            if current_doc == Some(&doc) { Next::Unchanged } else { Next::Put(doc) }
        }
    };
    Ok(Decision { current, next })
}

/// Whether `actor` may apply `op` to the document as it is (`current`).
fn permitted(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    current: Option<&Stored>,
    op: &Op,
) -> Result<(), WriteError> {
    if op.is_moderation() && !actor.admin {
        return Err(WriteError::Forbidden("moderation is for admins".into()));
    }
    match current {
        Some(c) if !actor.owns(c) => Err(WriteError::Forbidden(format!("{key} belongs to another account"))),
        Some(c) if c.doc.status == Status::Removed && *op == Op::Delete => Err(if actor.admin {
            WriteError::Conflict {
                field: "status".into(),
                message: format!("{key} is taken down: restore it before deleting it"),
            }
        } else {
            WriteError::Forbidden(format!("{key} was taken down by a moderator; only an admin can restore it"))
        }),
        None if matches!(op, Op::Put(_)) => may_create(project, actor, key),
        _ => Ok(()),
    }
}

/// Whether `actor` may create the document `key`, per its collection's policy.
pub(crate) fn may_create(project: &Project, actor: &Actor, key: &DocKey) -> Result<(), WriteError> {
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

/// Claims the page paths of `doc` in `tx`. An actor's change is refused
/// for a path a route reserves or another document holds; the operator's
/// content claims the free paths and leaves the contested ones with their
/// holders (the site model decides between them).
async fn claim_paths(
    project: &Project,
    tx: &mut Box<dyn WriteTx>,
    doc: &Document,
    by: By<'_>,
) -> Result<(), WriteError> {
    let site = &project.site;
    let refuse = matches!(by, By::Actor(_));
    if refuse {
        for &ix in site.doc_routes(&doc.key.collection) {
            if let Some(path) = site.doc_path(ix, doc).filter(|p| site.reserved_by_route(p)) {
                return Err(WriteError::Conflict {
                    field: "path".into(),
                    message: format!("the path {path} is reserved for the site's own pages"),
                });
            }
        }
    }
    let contested = tx.claim_paths(&doc.key, &site.doc_paths(doc)).await?;
    match contested.first() {
        Some((path, holder)) if refuse => Err(WriteError::Conflict {
            field: "path".into(),
            message: format!("the path {path} belongs to another document ({holder})"),
        }),
        _ => Ok(()),
    }
}

/// The one door: applies `op` to `key` in `tx` under `policy`. Every way a
/// change comes in (the API and the dashboard, `/admin/*`, `apply`,
/// `moderate`, a rollback) goes through here, and a preview through
/// the same checks without writing; see the module documentation for what is
/// checked. The caller commits `tx`.
pub async fn apply_change(
    project: &Project,
    tx: &mut Box<dyn WriteTx>,
    key: &DocKey,
    op: &Op,
    policy: &Policy<'_>,
) -> Result<Applied, WriteError> {
    let Decision { current, next } = decide(project, tx, key, op, policy).await?;
    Ok(match next {
        Next::Missing => Applied::Missing,
        Next::Unchanged => Applied::Unchanged(current.map(|c| c.doc)),
        Next::Put(doc) => {
            // Moderation changes no field, so no path.
            if op.changes_content() {
                claim_paths(project, tx, &doc, policy.by).await?;
            }
            // A new document belongs to the account that writes it; the
            // admin token and the operator are no account.
            let account = match (current, policy.by) {
                (Some(c), _) => c.account,
                (None, By::Actor(a)) if !a.admin => a.account,
                (None, _) => None,
            };
            let event = tx.put(&doc, account, op.name(), policy.author()).await?;
            Applied::Written { event, doc: Some(doc) }
        }
        Next::Delete => {
            let event = tx.delete(key, op.name(), policy.author()).await?;
            Applied::Written { event, doc: None }
        }
    })
}

/// Applies `op` to `key` for `actor` in a transaction of its own.
pub async fn write(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    op: Op,
    debounce: Debounce,
) -> Result<WriteResult, WriteError> {
    project.index_paths().await?;
    let mut tx = project.store.begin_write(debounce).await?;
    let result = match apply_change(project, &mut tx, key, &op, &Policy::actor(actor)).await? {
        Applied::Written { event, doc } => WriteResult { event: Some(event), doc },
        Applied::Unchanged(doc) => WriteResult { event: None, doc },
        // An actor's policy refuses a change to a missing document before this.
        Applied::Missing => return Err(WriteError::NotFound("no such document".into())),
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
    let op = Op::Revert(Box::new(target));
    match apply_change(project, &mut tx, key, &op, &Policy::actor(actor)).await {
        Ok(Applied::Written { event, .. }) => {
            tx.commit().await?;
            Ok(Some(event))
        }
        Ok(Applied::Unchanged(_) | Applied::Missing) => Ok(None),
        // A revert finds nothing only when the document is gone.
        Err(WriteError::NotFound(_)) => {
            Err(WriteError::NotFound(format!("{key} was deleted; write it again to bring it back")))
        }
        Err(e) => Err(e),
    }
}

/// Sets (or clears) the custom domain `key`'s site is served at, as the
/// platform: due at once, recorded under no account; `None` when nothing
/// changed or the document does not exist (its domain is set when it is
/// next reconciled).
pub async fn set_domain(project: &Project, key: &DocKey, domain: Option<&str>) -> Result<Option<i64>, WriteError> {
    project.index_paths().await?;
    let mut tx = project.store.begin_write(Debounce::NONE).await?;
    let policy = Policy { by: By::Operator(None), on_missing: Missing::Skip };
    match apply_change(project, &mut tx, key, &Op::Domain(domain.map(str::to_string)), &policy).await? {
        Applied::Written { event, .. } => {
            tx.commit().await?;
            Ok(Some(event))
        }
        Applied::Unchanged(_) | Applied::Missing => Ok(None),
    }
}

/// The page a draft of `key` would publish: the document's own page (under
/// the first document route that gives it a path), rendered exactly as
/// publishing renders it, with every check of a write, and nothing written.
pub async fn preview(project: &Project, actor: &Actor, key: &DocKey, op: Op) -> Result<Vec<u8>, WriteError> {
    if !matches!(op, Op::Put(_) | Op::Patch(_)) {
        return Err(WriteError::invalid("", "only a draft of the fields can be previewed"));
    }
    let decision = decide(project, &mut Committed(project.store.as_ref()), key, &op, &Policy::actor(actor)).await?;
    let doc = match (decision.next, decision.current) {
        (Next::Put(doc), _) => doc,
        (Next::Unchanged, Some(current)) => current.doc,
        (Next::Delete, _) => return Err(WriteError::NotFound("a deleted document has no page".into())),
        (Next::Unchanged | Next::Missing, _) => return Err(WriteError::NotFound("no such document".into())),
    };
    render_page(project, doc).await
}

/// The page `doc` would have as published: its own page under the first
/// document route that gives it a path.
pub(crate) async fn render_page(project: &Project, doc: Document) -> Result<Vec<u8>, WriteError> {
    let key = doc.key.clone();
    let site = project.site.clone();
    let renderer = project.renderer();
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
