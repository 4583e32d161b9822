//! Rows as the queries return them (`sqlx::FromRow`, by column name), and
//! what they mean: each `*_from_row` reads its columns by derive and then
//! checks what the database cannot (a known status, parseable JSON), so a
//! damaged row is a `StoreError::Corrupt` naming its table.

use sqlx::FromRow;

use super::*;

/// A document key from two columns of a row, named by the query.
pub(super) fn key_from_row(row: &DbRow, table: &'static str, collection: &str, id: &str) -> Result<DocKey> {
    let e = |e: sqlx::Error| corrupt(table, e);
    Ok(DocKey::new(row.try_get::<String, _>(collection).map_err(e)?, row.try_get::<String, _>(id).map_err(e)?))
}

/// The columns of `documents`, `published_docs` and `document_versions`.
#[derive(FromRow)]
struct DocColumns {
    collection: String,
    id: String,
    owner: Option<String>,
    created: i64,
    updated: i64,
    status: String,
    flags: String,
    data: String,
    media: Option<String>,
    domain: Option<String>,
}

pub(super) fn doc_from_row(row: &DbRow, table: &'static str) -> Result<Document> {
    let c = DocColumns::from_row(row).map_err(|e| corrupt(table, e))?;
    let json = |e: serde_json::Error| corrupt(table, e);
    Ok(Document {
        key: DocKey::new(c.collection, c.id),
        owner: c.owner.map(Arc::from),
        created: c.created,
        updated: c.updated,
        status: Status::parse(&c.status).ok_or_else(|| corrupt(table, format!("status {:?}", c.status)))?,
        flags: serde_json::from_str(&c.flags).map_err(json)?,
        data: sesame_model::Fields::from_stored(c.data).map_err(json)?,
        media: match c.media.as_deref() {
            None | Some("{}") => Default::default(),
            Some(m) => serde_json::from_str(m).map_err(json)?,
        },
        domain: c.domain.map(Arc::from),
    })
}

pub(super) fn deps_from(text: String, table: &'static str) -> Result<Deps> {
    Deps::parse(&text).map_err(|e| corrupt(table, e))
}

/// A row of the per-page tables of earlier versions, joined with its object.
#[derive(FromRow)]
struct PointerColumns {
    path: String,
    kind: i64,
    hash: Option<String>,
    size: Option<i64>,
    encodings: Option<i64>,
    content_type: Option<String>,
    location: Option<String>,
    deps: String,
    generation: i64,
    modified: i64,
}

pub(super) fn pointer_from_row(row: &DbRow) -> Result<Pointer> {
    let c = PointerColumns::from_row(row).map_err(|e| corrupt("pointers", e))?;
    let target = match c.kind {
        200 => {
            let (Some(hash), Some(size)) = (c.hash, c.size) else {
                return Err(corrupt("pointers", format!("{}: page without a recorded object", c.path)));
            };
            Target::Page {
                object: ObjectRow { hash, size: size as u64, encodings: c.encodings.unwrap_or(0) as u8 },
                content_type: c.content_type.unwrap_or_default(),
            }
        }
        301 => Target::Redirect(c.location.unwrap_or_else(|| "/".into())),
        410 => Target::Gone,
        404 => Target::Removed,
        other => return Err(corrupt("pointers", format!("{}: kind {other}", c.path))),
    };
    Ok(Pointer {
        path: c.path,
        target,
        deps: deps_from(c.deps, "pointers")?,
        generation: c.generation as u64,
        modified: c.modified,
    })
}

/// `EVENT_COLUMNS`.
#[derive(FromRow)]
struct EventColumns {
    id: i64,
    collection: String,
    doc_id: String,
    op: String,
    account: Option<String>,
    account_id: Option<i64>,
    state: String,
    generation: Option<i64>,
    error: Option<String>,
    accepted: i64,
}

pub(super) fn event_from_row(row: &DbRow) -> Result<EventInfo> {
    let c = EventColumns::from_row(row).map_err(|e| corrupt("events", e))?;
    Ok(EventInfo {
        id: c.id,
        key: DocKey::new(c.collection, c.doc_id),
        op: c.op,
        account: c.account,
        account_id: c.account_id.map(AccountId),
        state: match c.state.as_str() {
            "pending" => EventState::Pending,
            "done" => EventState::Done,
            "failed" => EventState::Failed,
            other => return Err(corrupt("events", format!("event {}: state {other:?}", c.id))),
        },
        generation: c.generation.map(|g| g as u64),
        error: c.error,
        accepted: c.accepted,
    })
}

#[derive(FromRow)]
struct AccountColumns {
    id: i64,
    handle: String,
    role: String,
}

pub(super) fn account_from_row(row: &DbRow) -> Result<Account> {
    let c = AccountColumns::from_row(row).map_err(|e| corrupt("accounts", e))?;
    Ok(Account {
        id: AccountId(c.id),
        handle: c.handle,
        role: match c.role.as_str() {
            "user" => Role::User,
            "admin" => Role::Admin,
            other => return Err(corrupt("accounts", format!("role {other:?}"))),
        },
    })
}

/// `MEDIA_COLUMNS`.
#[derive(FromRow)]
struct MediaColumns {
    hash: String,
    format: String,
    width: i64,
    height: i64,
    size: i64,
    created: i64,
    variants: Option<String>,
}

pub(super) fn media_from_row(row: &DbRow) -> Result<MediaRow> {
    let c = MediaColumns::from_row(row).map_err(|e| corrupt("media", e))?;
    Ok(MediaRow {
        format: serde_json::from_value(serde_json::Value::String(c.format.clone()))
            .map_err(|_| corrupt("media", format!("format {:?}", c.format)))?,
        hash: c.hash,
        width: c.width as u32,
        height: c.height as u32,
        size: c.size as u64,
        created: c.created,
        variants: c.variants.map(|v| serde_json::from_str(&v).map_err(|e| corrupt("media", e))).transpose()?,
    })
}

/// `VERSION_COLUMNS_NEWEST_FIRST`: a document's columns (all null for a
/// deletion) with its generation and when that was committed.
#[derive(FromRow)]
struct VersionColumns {
    generation: i64,
    gcreated: i64,
    data: Option<String>,
}

pub(super) fn version_from_row(row: &DbRow) -> Result<Version> {
    let c = VersionColumns::from_row(row).map_err(|e| corrupt("document_versions", e))?;
    Ok(Version {
        generation: c.generation as u64,
        created: c.gcreated,
        doc: match c.data {
            Some(_) => Some(doc_from_row(row, "document_versions")?),
            None => None,
        },
    })
}

#[derive(FromRow)]
struct TokenColumns {
    hash: String,
    label: String,
    created: i64,
}

pub(super) fn token_from_row(row: &DbRow) -> Result<TokenRow> {
    let c = TokenColumns::from_row(row).map_err(|e| corrupt("tokens", e))?;
    Ok(TokenRow { hash: c.hash, label: c.label, created: c.created })
}

#[derive(FromRow)]
struct SeqColumns {
    route: String,
    grp: String,
    collection: String,
    doc_id: String,
    seq: i64,
}

pub(super) fn seq_from_row(row: &DbRow) -> Result<SeqRow> {
    let c = SeqColumns::from_row(row).map_err(|e| corrupt("seqs", e))?;
    Ok(SeqRow { route: c.route, group: c.grp, doc: DocKey::new(c.collection, c.doc_id), seq: c.seq as u64 })
}

#[derive(FromRow)]
struct AliasColumns {
    route: String,
    path: String,
    collection: String,
    doc_id: String,
}

pub(super) fn alias_from_row(row: &DbRow) -> Result<AliasRow> {
    let c = AliasColumns::from_row(row).map_err(|e| corrupt("aliases", e))?;
    Ok(AliasRow { route: c.route, path: c.path, doc: DocKey::new(c.collection, c.doc_id) })
}

#[derive(FromRow)]
struct GenerationColumns {
    id: i64,
    created: i64,
    kind: String,
    summary: String,
    root: Option<String>,
}

pub(super) fn generation_from_row(row: &DbRow) -> Result<Generation> {
    let c = GenerationColumns::from_row(row).map_err(|e| corrupt("generations", e))?;
    Ok(Generation {
        id: c.id as u64,
        created: c.created,
        kind: c.kind,
        summary: serde_json::from_str(&c.summary).map_err(|e| corrupt("generations", e))?,
        root: c.root,
    })
}
