//! Drafts and schedules: content saved before it is published, and changes
//! that fall due at a time.
//!
//! A draft is stored beside its document (one per document), through the
//! same checks as a put of its fields (schema, ownership, the account's own
//! media), and never reaches the published site: the publisher reads
//! documents and their events, and a draft is neither. Publishing a draft is
//! a put through the one door ([`apply_change`]) in the transaction that
//! drops the draft.
//!
//! A schedule is an entry in the change queue: the publisher sleeps until
//! the earliest due time of events and schedules alike, then lands each due
//! schedule as a change in the transaction that deletes the schedule (so it
//! happens once, whoever lands it and however often a publisher dies), and
//! publishes it with the events due then, as one generation. A schedule's
//! change is made as the account that set it, with every check of the one
//! door made again when it falls due; a refused one keeps its reason and is
//! no longer due.

use sesame_model::{DocKey, Document, Op};
use sesame_store::{Debounce, DraftRow, PreviewLinkRow, ScheduleAction, ScheduleRow, Stored, WriteTx};

use crate::change::{Next, Policy, decide, may_create, render_page};
use crate::{Actor, Applied, EngineError, Project, WriteError, WriteResult, apply_change};

/// How far ahead a schedule may be set.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 5 * 366 * 24 * 3600 * 1000;
/// Schedules an account may have waiting at once (admins are not counted).
pub const MAX_SCHEDULES_PER_ACCOUNT: u64 = 100;
/// Schedules landed in one transaction.
const LAND_BATCH: u32 = 500;

/// A document's draft and schedules.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftState {
    /// The draft, if one is saved.
    pub draft: Option<DraftRow>,
    /// The schedules of the document.
    pub schedules: Vec<ScheduleRow>,
}

/// The schedule a request sets (ms; `None`: none of that kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleRequest {
    /// When to publish the draft.
    pub publish_at: Option<i64>,
    /// When to take the document off the site.
    pub unpublish_at: Option<i64>,
}

/// Whether `actor` may see and change the draft of a document: its owner's
/// (or an admin's) for a document that exists, else the draft's own
/// account's, else whoever may create the document.
fn may_draft(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    current: Option<&Stored>,
    draft: Option<&DraftRow>,
) -> Result<(), WriteError> {
    let theirs = || WriteError::Forbidden(format!("{key} belongs to another account"));
    match (current, draft) {
        (Some(c), _) if !actor.owns(c) => Err(theirs()),
        (Some(_), _) => Ok(()),
        (None, Some(d)) if !actor.admin && (actor.account.is_none() || d.account != actor.account) => Err(theirs()),
        (None, Some(_)) => Ok(()),
        (None, None) => may_create(project, actor, key),
    }
}

/// The account a draft belongs to: its document's, or for a new document
/// the account writing it (the admin token is no account).
fn draft_account(actor: &Actor, current: Option<&Stored>) -> Option<sesame_model::AccountId> {
    match current {
        Some(c) => c.account,
        None if actor.admin => None,
        None => actor.account,
    }
}

/// A document's draft and schedules, if `actor` may see them.
pub async fn draft_state(project: &Project, actor: &Actor, key: &DocKey) -> Result<DraftState, WriteError> {
    let current = project.store.document(key).await?;
    let draft = project.store.draft(key).await?;
    may_draft(project, actor, key, current.as_ref(), draft.as_ref())?;
    let schedules = project.store.schedules(key).await?;
    Ok(DraftState { draft, schedules })
}

/// Saves a draft: `Put` replaces it, `Patch` merges into it (or into the
/// document's fields when there is no draft yet). Every check of a put of
/// the resulting fields is made; nothing is published.
pub async fn save_draft(project: &Project, actor: &Actor, key: &DocKey, op: Op) -> Result<DraftRow, WriteError> {
    let mut tx = project.store.begin_write(Debounce::NONE).await?;
    let saved = save_draft_in(project, &mut tx, actor, key, op).await?;
    tx.commit().await?;
    Ok(saved)
}

/// [`save_draft`] in `tx`.
pub(crate) async fn save_draft_in(
    project: &Project,
    tx: &mut Box<dyn WriteTx>,
    actor: &Actor,
    key: &DocKey,
    op: Op,
) -> Result<DraftRow, WriteError> {
    let current = tx.get(key).await?;
    let draft = tx.draft(key).await?;
    may_draft(project, actor, key, current.as_ref(), draft.as_ref())?;
    let fields = match op {
        Op::Put(fields) => fields,
        Op::Patch(patch) => {
            let mut base = match (&draft, &current) {
                (Some(d), _) => d.data.clone(),
                (None, Some(c)) => c.doc.data.to_map(),
                (None, None) => Default::default(),
            };
            sesame_model::merge_patch(&mut base, patch);
            base
        }
        _ => return Err(WriteError::invalid("", "a draft holds fields: put or patch them")),
    };
    let decision = decide(project, tx, key, &Op::Put(fields), &Policy::actor(actor)).await?;
    let doc = match (decision.next, decision.current) {
        (Next::Put(doc), _) => doc,
        (Next::Unchanged, Some(c)) => c.doc,
        _ => return Err(WriteError::Engine(EngineError::Internal("a put decided no document".into()))),
    };
    let account = draft_account(actor, current.as_ref());
    Ok(tx.put_draft(&doc, account).await?)
}

/// Drops a document's draft (with its publish schedule and preview links);
/// whether there was one.
pub async fn discard_draft(project: &Project, actor: &Actor, key: &DocKey) -> Result<bool, WriteError> {
    let mut tx = project.store.begin_write(Debounce::NONE).await?;
    let current = tx.get(key).await?;
    let draft = tx.draft(key).await?;
    may_draft(project, actor, key, current.as_ref(), draft.as_ref())?;
    let dropped = tx.delete_draft(key).await?;
    tx.commit().await?;
    Ok(dropped)
}

/// Publishes a document's draft now: a put of its fields through the one
/// door, in the transaction that drops the draft.
pub async fn publish_draft(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    debounce: Debounce,
) -> Result<WriteResult, WriteError> {
    project.index_paths().await?;
    let mut tx = project.store.begin_write(debounce).await?;
    let result = publish_in(project, &mut tx, actor, key).await?;
    tx.commit().await?;
    Ok(result)
}

/// Publishes the draft of `key` in `tx` as `actor`.
async fn publish_in(
    project: &Project,
    tx: &mut Box<dyn WriteTx>,
    actor: &Actor,
    key: &DocKey,
) -> Result<WriteResult, WriteError> {
    let current = tx.get(key).await?;
    let Some(draft) = tx.draft(key).await? else {
        return Err(WriteError::NotFound(format!("{key} has no draft")));
    };
    may_draft(project, actor, key, current.as_ref(), Some(&draft))?;
    let applied = apply_change(project, tx, key, &Op::Put(draft.data), &Policy::actor(actor)).await?;
    tx.delete_draft(key).await?;
    Ok(match applied {
        Applied::Written { event, doc } => WriteResult { event: Some(event), doc },
        Applied::Unchanged(doc) => WriteResult { event: None, doc },
        Applied::Missing => WriteResult { event: None, doc: None },
    })
}

/// Takes `key` off the site as `actor` in `tx`, keeping its content as its
/// draft (unless it has one already).
async fn unpublish_in(
    project: &Project,
    tx: &mut Box<dyn WriteTx>,
    actor: &Actor,
    key: &DocKey,
) -> Result<Option<i64>, WriteError> {
    let Some(current) = tx.get(key).await? else { return Ok(None) };
    if tx.draft(key).await?.is_none() {
        tx.put_draft(&current.doc, current.account).await?;
    }
    match apply_change(project, tx, key, &Op::Delete, &Policy::actor(actor)).await? {
        Applied::Written { event, .. } => Ok(Some(event)),
        Applied::Unchanged(_) | Applied::Missing => Ok(None),
    }
}

/// A schedule that well-formed input cannot have now: a time already past or
/// too far ahead, nothing to publish, the account's limit reached (409, as
/// the answer depends on the clock and the document's state).
fn refused(field: &str, message: String) -> WriteError {
    WriteError::Conflict { field: field.into(), message }
}

/// What a schedule set in the past means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Past {
    /// A mistake: refused (an owner setting a schedule).
    Refused,
    /// It fell due while away: it lands at once (a restored archive's).
    DueNow,
}

/// Sets a document's schedules (replacing both). A publish time needs a
/// draft to publish; an unpublish time a document that is, or will be,
/// published before it. Times are in the future, at most
/// [`MAX_SCHEDULE_AHEAD_MS`] ahead.
pub async fn set_schedule(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    request: ScheduleRequest,
) -> Result<Vec<ScheduleRow>, WriteError> {
    let mut tx = project.store.begin_write(Debounce::NONE).await?;
    let set = set_schedule_in(project, &mut tx, actor, key, request, Past::Refused).await?;
    tx.commit().await?;
    Ok(set)
}

/// [`set_schedule`] in `tx`, with times in the past taken as `past` says.
pub(crate) async fn set_schedule_in(
    project: &Project,
    tx: &mut Box<dyn WriteTx>,
    actor: &Actor,
    key: &DocKey,
    request: ScheduleRequest,
    past: Past,
) -> Result<Vec<ScheduleRow>, WriteError> {
    let current = tx.get(key).await?;
    let draft = tx.draft(key).await?;
    may_draft(project, actor, key, current.as_ref(), draft.as_ref())?;
    let now = sesame_model::time::now_ms();
    for (field, at) in [("publish_at", request.publish_at), ("unpublish_at", request.unpublish_at)] {
        match at {
            Some(t) if t <= now && past == Past::Refused => {
                return Err(refused(field, format!("{field} is in the past (publish the draft now instead)")));
            }
            Some(t) if t > now + MAX_SCHEDULE_AHEAD_MS => {
                return Err(refused(field, format!("{field} is more than five years ahead")));
            }
            _ => {}
        }
    }
    if let (Some(p), Some(u)) = (request.publish_at, request.unpublish_at)
        && u <= p
    {
        return Err(refused("unpublish_at", "unpublish_at must come after publish_at".into()));
    }
    if request.publish_at.is_some() && draft.is_none() {
        return Err(refused("publish_at", format!("{key} has no draft to publish: save one first")));
    }
    if request.unpublish_at.is_some() && current.is_none() && request.publish_at.is_none() {
        return Err(refused("unpublish_at", format!("{key} is not published and no publish_at is set")));
    }
    if let Some(account) = actor.account.filter(|_| !actor.admin) {
        let held = tx.schedule_count(account).await?;
        let already = tx.schedules(key).await?.len() as u64;
        let wanted = u64::from(request.publish_at.is_some()) + u64::from(request.unpublish_at.is_some());
        if held - already.min(held) + wanted > MAX_SCHEDULES_PER_ACCOUNT {
            return Err(refused(
                "schedule",
                format!("an account may have at most {MAX_SCHEDULES_PER_ACCOUNT} schedules waiting"),
            ));
        }
    }
    for (action, at) in
        [(ScheduleAction::Publish, request.publish_at), (ScheduleAction::Unpublish, request.unpublish_at)]
    {
        tx.delete_schedule(key, action, None).await?;
        if let Some(due) = at {
            let row = ScheduleRow {
                key: key.clone(),
                action,
                due,
                account: actor.account,
                author: actor.handle.clone(),
                admin: actor.admin,
                error: None,
            };
            tx.put_schedule(&row).await?;
        }
    }
    Ok(tx.schedules(key).await?)
}

/// Lands every schedule due at `now` (ms): each becomes a change, recorded
/// due at once, in the transaction that deletes it. Returns how many landed.
/// Called by the publisher under the publish lease, before it reads the
/// events due.
pub async fn land_due(project: &Project, now: i64) -> Result<usize, EngineError> {
    let mut landed = 0;
    loop {
        let due = project.store.due_schedules(now, LAND_BATCH).await?;
        if due.is_empty() {
            return Ok(landed);
        }
        let full = due.len() as u32 == LAND_BATCH;
        project.index_paths().await?;
        match land(project, &due).await {
            Ok(n) => landed += n,
            Err(WriteError::Engine(e)) => return Err(e),
            // One refused change: the batch lands one schedule at a time,
            // and only the refused ones are marked.
            Err(_) => {
                for one in &due {
                    match land(project, std::slice::from_ref(one)).await {
                        Ok(n) => landed += n,
                        Err(WriteError::Engine(e)) => return Err(e),
                        Err(refusal) => {
                            tracing::warn!(document = %one.key, action = one.action.as_str(), error = %refusal,
                                "a scheduled change was refused");
                            metrics::counter!("sesame_schedules_refused_total").increment(1);
                            project.store.fail_schedule(&one.key, one.action, one.due, &refusal.to_string()).await?;
                        }
                    }
                }
            }
        }
        if !full {
            return Ok(landed);
        }
    }
}

/// Lands `due` in one transaction: all or none.
async fn land(project: &Project, due: &[ScheduleRow]) -> Result<usize, WriteError> {
    let mut tx = project.store.begin_write(Debounce::NONE).await?;
    let mut landed = 0;
    for s in due {
        // Gone or moved since it was read: another publisher landed it, or
        // its owner changed it.
        if !tx.delete_schedule(&s.key, s.action, Some(s.due)).await? {
            continue;
        }
        let actor = Actor { account: s.account, handle: s.author.clone(), admin: s.admin };
        match s.action {
            ScheduleAction::Publish => match publish_in(project, &mut tx, &actor, &s.key).await {
                // The draft was dropped after the schedule was set: nothing to do.
                Err(WriteError::NotFound(_)) => {}
                other => {
                    other?;
                }
            },
            ScheduleAction::Unpublish => {
                unpublish_in(project, &mut tx, &actor, &s.key).await?;
            }
        }
        landed += 1;
    }
    tx.commit().await?;
    metrics::counter!("sesame_schedules_landed_total").increment(landed as u64);
    Ok(landed)
}

/// Records a preview link to the draft of `key`, by the hash of its token
/// (the token itself is shown once, never stored), working for `ttl_secs`.
pub async fn add_preview_link(
    project: &Project,
    actor: &Actor,
    key: &DocKey,
    token_hash: String,
    ttl_secs: i64,
) -> Result<PreviewLinkRow, WriteError> {
    let state = draft_state(project, actor, key).await?;
    if state.draft.is_none() {
        return Err(WriteError::NotFound(format!("{key} has no draft to show")));
    }
    let now = sesame_model::time::now();
    let row = PreviewLinkRow { hash: token_hash, key: key.clone(), created: now, expires: now + ttl_secs };
    project.store.add_preview_link(&row).await?;
    Ok(row)
}

/// The page the draft a preview link shows would publish; `None` when the
/// link is unknown, expired or revoked, or its draft is gone.
pub async fn render_preview_link(project: &Project, token_hash: &str) -> Result<Option<Vec<u8>>, WriteError> {
    let now = sesame_model::time::now();
    let Some(link) = project.store.preview_link(token_hash, now).await? else { return Ok(None) };
    let Some(draft) = project.store.draft(&link.key).await? else { return Ok(None) };
    render_draft(project, &link.key, draft).await.map(Some)
}

/// The page a draft would publish: the document as a put of the draft's
/// fields would make it (checked when the draft was saved).
pub async fn render_draft(project: &Project, key: &DocKey, draft: DraftRow) -> Result<Vec<u8>, WriteError> {
    let mut reads = crate::change::Committed(project.store.as_ref());
    let policy = Policy { by: crate::By::Operator(None), on_missing: crate::Missing::Fail };
    let decision = decide(project, &mut reads, key, &Op::Put(draft.data), &policy).await?;
    let doc: Document = match (decision.next, decision.current) {
        (Next::Put(doc), _) => doc,
        (Next::Unchanged, Some(c)) => c.doc,
        _ => return Err(WriteError::NotFound(format!("{key} has no page"))),
    };
    render_page(project, doc).await
}
