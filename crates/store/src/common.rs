//! The store's behaviour, written once for both backends.
//!
//! This file is compiled twice, as `sqlite::common` and `postgres::common`;
//! each parent module defines what the names below mean (`Db`, `Conn`,
//! `DbRow`, `Store` with its `pool`, `read_tx`, `write_tx` and `notify`).
//! The SQL is portable between SQLite and PostgreSQL: `$N` placeholders
//! numbered in order of first use, `ON CONFLICT` clauses, no engine-specific
//! functions. Timestamps are integers (seconds, or milliseconds where named).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sesame_model::{AccountId, AliasRow, Deps, DocKey, Document, SeqRow, Status};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Transaction};

use super::{Conn, Db, DbRow, Store};
use crate::{
    Account, Author, Claimed, Collected, Commit, Credential, Debounce, Doing, EventInfo, EventState, Generation,
    ImportTx, MediaAdded, MediaRow, MetaStore, ObjectRow, Pending, PendingEvent, Pointer, PointerChange,
    PublishedChanges, PublishedDocs, Registration, Result, Retain, Role, Snapshot, StoreError, Stored, Target,
    TokenRow, Version, WriteTx,
};

/// Rows per multi-row statement (9 columns × 500 stays far below both
/// engines' limits on bound parameters).
const CHUNK: usize = 500;

fn now() -> i64 {
    sesame_model::time::now()
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

/// A document key from two columns of a row.
fn key_from_row(row: &DbRow, table: &'static str, collection: &str, id: &str) -> Result<DocKey> {
    let e = |e: sqlx::Error| corrupt(table, e);
    Ok(DocKey::new(row.try_get::<String, _>(collection).map_err(e)?, row.try_get::<String, _>(id).map_err(e)?))
}

fn doc_from_row(row: &DbRow, table: &'static str) -> Result<Document> {
    let get = |e: sqlx::Error| corrupt(table, e);
    let status: String = row.try_get("status").map_err(get)?;
    let flags: String = row.try_get("flags").map_err(get)?;
    let data: String = row.try_get("data").map_err(get)?;
    let media: Option<String> = row.try_get("media").map_err(get)?;
    Ok(Document {
        key: key_from_row(row, table, "collection", "id")?,
        owner: row.try_get::<Option<String>, _>("owner").map_err(get)?.map(Arc::from),
        created: row.try_get("created").map_err(get)?,
        updated: row.try_get("updated").map_err(get)?,
        status: Status::parse(&status).ok_or_else(|| corrupt(table, format!("status {status:?}")))?,
        flags: serde_json::from_str(&flags).map_err(|e| corrupt(table, e))?,
        data: serde_json::from_str(&data).map_err(|e| corrupt(table, e))?,
        media: match media.as_deref() {
            None | Some("{}") => Default::default(),
            Some(m) => serde_json::from_str(m).map_err(|e| corrupt(table, e))?,
        },
    })
}

/// The stored form of a document's media.
fn media_json(d: &Document) -> String {
    if d.media.is_empty() { "{}".to_string() } else { serde_json::to_string(&d.media).unwrap_or_else(|_| "{}".into()) }
}

/// The content hashes a document's media references name.
fn media_hashes(d: &Document) -> Vec<String> {
    let mut hashes: Vec<String> =
        d.media.keys().filter_map(|r| r.split_once('.')).map(|(h, _)| h.to_string()).collect();
    hashes.sort();
    hashes.dedup();
    hashes
}

/// Records what `docs` refer to at `generation` (-1: the latest written
/// state). With `replace`, what those states referred to before is dropped
/// first (a new generation's versions have nothing to replace).
async fn set_media_refs<D: Borrow<Document>>(
    conn: &mut Conn,
    docs: &[D],
    generation: i64,
    replace: bool,
) -> Result<()> {
    if replace {
        for chunk in docs.chunks(CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new("DELETE FROM media_refs WHERE generation = ");
            qb.push_bind(generation).push(" AND (collection, doc_id) IN (VALUES ");
            let mut list = qb.separated(", ");
            for d in chunk {
                let d: &Document = d.borrow();
                list.push("(");
                list.push_bind_unseparated(d.key.collection.to_string());
                list.push_unseparated(", ");
                list.push_bind_unseparated(d.key.id.to_string());
                list.push_unseparated(")");
            }
            qb.push(")");
            qb.build().execute(&mut *conn).await.doing("dropping media references")?;
        }
    }
    let rows: Vec<(String, &DocKey)> = docs
        .iter()
        .flat_map(|d| {
            let d: &Document = d.borrow();
            media_hashes(d).into_iter().map(move |h| (h, &d.key))
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new("INSERT INTO media_refs (hash, collection, doc_id, generation) ");
        qb.push_values(chunk, |mut b, (hash, key)| {
            b.push_bind(hash.clone())
                .push_bind(key.collection.to_string())
                .push_bind(key.id.to_string())
                .push_bind(generation);
        });
        qb.push(" ON CONFLICT DO NOTHING");
        qb.build().execute(&mut *conn).await.doing("recording media references")?;
    }
    Ok(())
}

/// Inserts documents into `table`; `conflict` is the `ON CONFLICT` clause.
async fn insert_docs<D: Borrow<Document>>(conn: &mut Conn, table: &str, docs: &[D], conflict: &str) -> Result<()> {
    for chunk in docs.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
            "INSERT INTO {table} (collection, id, owner, created, updated, status, flags, data, media) "
        ));
        qb.push_values(chunk, |mut b, d| {
            let d: &Document = d.borrow();
            b.push_bind(d.key.collection.to_string())
                .push_bind(d.key.id.to_string())
                .push_bind(d.owner.as_deref().map(str::to_string))
                .push_bind(d.created)
                .push_bind(d.updated)
                .push_bind(d.status.as_str())
                .push_bind(serde_json::to_string(&d.flags).unwrap_or_else(|_| "[]".into()))
                .push_bind(serde_json::Value::Object(d.data.clone()).to_string())
                .push_bind(media_json(d));
        });
        qb.push(" ");
        qb.push(conflict);
        qb.build().execute(&mut *conn).await.doing("writing documents")?;
    }
    Ok(())
}

/// Documents and history read in one transaction, so the documents reflect
/// exactly the events up to the watermark.
async fn snapshot(conn: &mut Conn, table: &'static str) -> Result<Snapshot> {
    let watermark: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(&mut *conn)
        .await
        .doing("reading the event watermark")?;
    let sql = format!("SELECT collection, id, owner, created, updated, status, flags, data, media FROM {table}");
    let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *conn).await.doing("reading documents")?;
    let docs = rows.iter().map(|r| doc_from_row(r, table)).collect::<Result<Vec<_>>>()?;
    let seqs = sqlx::query("SELECT route, grp, collection, doc_id, seq FROM seqs")
        .fetch_all(&mut *conn)
        .await
        .doing("reading sequence numbers")?
        .iter()
        .map(|r| -> Result<SeqRow> {
            let e = |e: sqlx::Error| corrupt("seqs", e);
            Ok(SeqRow {
                route: r.try_get("route").map_err(e)?,
                group: r.try_get("grp").map_err(e)?,
                doc: key_from_row(r, "seqs", "collection", "doc_id")?,
                seq: r.try_get::<i64, _>("seq").map_err(e)? as u64,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let aliases = sqlx::query("SELECT route, path, collection, doc_id FROM aliases")
        .fetch_all(&mut *conn)
        .await
        .doing("reading aliases")?
        .iter()
        .map(|r| -> Result<AliasRow> {
            let e = |e: sqlx::Error| corrupt("aliases", e);
            Ok(AliasRow {
                route: r.try_get("route").map_err(e)?,
                path: r.try_get("path").map_err(e)?,
                doc: key_from_row(r, "aliases", "collection", "doc_id")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Snapshot { docs, seqs, aliases, watermark })
}

const POINTER_COLUMNS: &str = "SELECT p.path, p.kind, p.hash, p.content_type, p.location, p.deps, p.generation, \
     p.modified, o.size, o.encodings FROM pointers p LEFT JOIN objects o ON o.hash = p.hash";

fn deps_from(text: String, table: &'static str) -> Result<Deps> {
    Deps::parse(&text).map_err(|e| corrupt(table, e))
}

fn pointer_from_row(row: &DbRow) -> Result<Pointer> {
    let e = |e: sqlx::Error| corrupt("pointers", e);
    let kind: i64 = row.try_get("kind").map_err(e)?;
    let path: String = row.try_get("path").map_err(e)?;
    let target = match kind {
        200 => {
            let hash: Option<String> = row.try_get("hash").map_err(e)?;
            let size: Option<i64> = row.try_get("size").map_err(e)?;
            let (Some(hash), Some(size)) = (hash, size) else {
                return Err(corrupt("pointers", format!("{path}: page without a recorded object")));
            };
            Target::Page {
                object: ObjectRow {
                    hash,
                    size: size as u64,
                    encodings: row.try_get::<Option<i64>, _>("encodings").map_err(e)?.unwrap_or(0) as u8,
                },
                content_type: row.try_get::<Option<String>, _>("content_type").map_err(e)?.unwrap_or_default(),
            }
        }
        301 => Target::Redirect(row.try_get::<Option<String>, _>("location").map_err(e)?.unwrap_or_else(|| "/".into())),
        410 => Target::Gone,
        404 => Target::Removed,
        other => return Err(corrupt("pointers", format!("{path}: kind {other}"))),
    };
    Ok(Pointer {
        path,
        target,
        deps: deps_from(row.try_get("deps").map_err(e)?, "pointers")?,
        generation: row.try_get::<i64, _>("generation").map_err(e)? as u64,
        modified: row.try_get("modified").map_err(e)?,
    })
}

pub(super) struct Import {
    tx: Transaction<'static, Db>,
}

#[async_trait]
impl ImportTx for Import {
    async fn add(&mut self, docs: &[Document]) -> Result<()> {
        // PostgreSQL refuses an upsert that touches a row twice in one
        // statement: keep the last version of each document of the batch.
        let last: HashMap<&DocKey, usize> = docs.iter().enumerate().map(|(i, d)| (&d.key, i)).collect();
        let unique: Vec<&Document> =
            docs.iter().enumerate().filter(|(i, d)| last[&d.key] == *i).map(|(_, d)| d).collect();
        insert_docs(
            &mut self.tx,
            "documents",
            &unique,
            "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, updated = excluded.updated, data = excluded.data, \
             media = excluded.media",
        )
        .await?;
        set_media_refs(&mut self.tx, &unique, -1, true).await?;
        let accepted = now_ms();
        for chunk in docs.chunks(CHUNK) {
            let mut qb: QueryBuilder<Db> =
                QueryBuilder::new("INSERT INTO events (collection, doc_id, op, created, accepted, due) ");
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(d.key.collection.to_string())
                    .push_bind(d.key.id.to_string())
                    .push_bind("upsert")
                    .push_bind(accepted / 1000)
                    .push_bind(accepted)
                    .push_bind(accepted);
            });
            qb.build().execute(&mut *self.tx).await.doing("recording import events")?;
        }
        Ok(())
    }

    async fn media(&mut self, hashes: &[String]) -> Result<Vec<MediaRow>> {
        Ok(media_of(&mut self.tx, hashes, None).await?.into_iter().map(|(m, _)| m).collect())
    }

    async fn claim_paths(&mut self, paths: &[(String, DocKey)]) -> Result<()> {
        let mut keys: Vec<&DocKey> = paths.iter().map(|(_, k)| k).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            drop_paths(&mut self.tx, key).await?;
        }
        insert_paths(&mut self.tx, paths).await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.doing("committing the import")
    }
}

/// Drops every path claim of a document.
async fn drop_paths(conn: &mut Conn, key: &DocKey) -> Result<()> {
    sqlx::query("DELETE FROM doc_paths WHERE collection = $1 AND doc_id = $2")
        .bind(&*key.collection)
        .bind(&*key.id)
        .execute(&mut *conn)
        .await
        .doing("dropping path claims")?;
    Ok(())
}

/// Claims paths for documents; a path held already stays with its holder.
/// Returns the paths claimed now.
async fn insert_paths(conn: &mut Conn, paths: &[(String, DocKey)]) -> Result<Vec<String>> {
    let mut claimed = Vec::new();
    for chunk in paths.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("INSERT INTO doc_paths (path, collection, doc_id) ");
        qb.push_values(chunk, |mut b, (path, key)| {
            b.push_bind(path.clone()).push_bind(key.collection.to_string()).push_bind(key.id.to_string());
        });
        qb.push(" ON CONFLICT (path) DO NOTHING RETURNING path");
        let rows: Vec<String> = qb.build_query_scalar().fetch_all(&mut *conn).await.doing("claiming paths")?;
        claimed.extend(rows);
    }
    Ok(claimed)
}

/// The documents holding these paths.
async fn path_holders(conn: &mut Conn, paths: &[String]) -> Result<Vec<(String, DocKey)>> {
    let mut out = Vec::new();
    for chunk in paths.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new("SELECT path, collection, doc_id FROM doc_paths WHERE path IN (");
        let mut list = qb.separated(", ");
        for p in chunk {
            list.push_bind(p.clone());
        }
        qb.push(")");
        for r in qb.build().fetch_all(&mut *conn).await.doing("reading path claims")? {
            let path: String = r.try_get("path").map_err(|e| corrupt("doc_paths", e))?;
            out.push((path, key_from_row(&r, "doc_paths", "collection", "doc_id")?));
        }
    }
    Ok(out)
}

pub(super) struct Write {
    tx: Transaction<'static, Db>,
    debounce: Debounce,
}

fn now_ms() -> i64 {
    sesame_model::time::now_ms()
}

/// Records an event and moves every pending event of its document to the
/// same due time: `quiet` after now, but no later than `max_wait` after the
/// document's first unpublished write.
async fn record_event(
    conn: &mut Conn,
    key: &DocKey,
    op: &str,
    by: Option<Author<'_>>,
    debounce: Debounce,
) -> Result<i64> {
    let now = now_ms();
    let first: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(accepted) FROM events WHERE collection = $1 AND doc_id = $2 AND state = 'pending'",
    )
    .bind(&*key.collection)
    .bind(&*key.id)
    .fetch_one(&mut *conn)
    .await
    .doing("reading pending events")?;
    let quiet = now + debounce.quiet_ms as i64;
    let due = quiet.min(first.unwrap_or(now) + debounce.max_wait_ms as i64).max(now);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (collection, doc_id, op, account, account_id, created, accepted, due) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(&*key.collection)
    .bind(&*key.id)
    .bind(op)
    .bind(by.map(|a| a.handle))
    .bind(by.and_then(|a| a.account).map(|a| a.0))
    .bind(now / 1000)
    .bind(now)
    .bind(due)
    .fetch_one(&mut *conn)
    .await
    .doing("recording an event")?;
    sqlx::query("UPDATE events SET due = $1 WHERE collection = $2 AND doc_id = $3 AND state = 'pending'")
        .bind(due)
        .bind(&*key.collection)
        .bind(&*key.id)
        .execute(&mut *conn)
        .await
        .doing("debouncing events")?;
    Ok(id)
}

/// The latest written document with its owning account.
async fn get_stored(conn: &mut Conn, key: &DocKey) -> Result<Option<Stored>> {
    let row = sqlx::query(
        "SELECT collection, id, owner, created, updated, status, flags, data, media, account FROM documents \
         WHERE collection = $1 AND id = $2",
    )
    .bind(&*key.collection)
    .bind(&*key.id)
    .fetch_optional(&mut *conn)
    .await
    .doing("reading a document")?;
    row.map(|r| {
        let account: Option<i64> = r.try_get("account").map_err(|e| corrupt("documents", e))?;
        Ok(Stored { doc: doc_from_row(&r, "documents")?, account: account.map(AccountId) })
    })
    .transpose()
}

async fn get_doc(conn: &mut Conn, table: &'static str, key: &DocKey) -> Result<Option<Document>> {
    let sql = format!(
        "SELECT collection, id, owner, created, updated, status, flags, data, media FROM {table} \
         WHERE collection = $1 AND id = $2"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&*key.collection)
        .bind(&*key.id)
        .fetch_optional(&mut *conn)
        .await
        .doing("reading a document")?;
    row.map(|r| doc_from_row(&r, table)).transpose()
}

#[async_trait]
impl WriteTx for Write {
    async fn get(&mut self, key: &DocKey) -> Result<Option<Stored>> {
        get_stored(&mut self.tx, key).await
    }

    async fn put(
        &mut self,
        doc: &Document,
        account: Option<AccountId>,
        op: &str,
        by: Option<Author<'_>>,
    ) -> Result<i64> {
        insert_docs(
            &mut self.tx,
            "documents",
            std::slice::from_ref(doc),
            "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
             updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data, \
             media = excluded.media",
        )
        .await?;
        sqlx::query("UPDATE documents SET account = $1 WHERE collection = $2 AND id = $3")
            .bind(account.map(|a| a.0))
            .bind(&*doc.key.collection)
            .bind(&*doc.key.id)
            .execute(&mut *self.tx)
            .await
            .doing("recording the owner of a document")?;
        set_media_refs(&mut self.tx, std::slice::from_ref(doc), -1, true).await?;
        record_event(&mut self.tx, &doc.key, op, by, self.debounce).await
    }

    async fn delete(&mut self, key: &DocKey, op: &str, by: Option<Author<'_>>) -> Result<i64> {
        sqlx::query("DELETE FROM documents WHERE collection = $1 AND id = $2")
            .bind(&*key.collection)
            .bind(&*key.id)
            .execute(&mut *self.tx)
            .await
            .doing("deleting a document")?;
        drop_paths(&mut self.tx, key).await?;
        sqlx::query("DELETE FROM media_refs WHERE collection = $1 AND doc_id = $2 AND generation = -1")
            .bind(&*key.collection)
            .bind(&*key.id)
            .execute(&mut *self.tx)
            .await
            .doing("dropping media references")?;
        record_event(&mut self.tx, key, op, by, self.debounce).await
    }

    async fn media(&mut self, hashes: &[String], account: Option<AccountId>) -> Result<Vec<(MediaRow, bool)>> {
        media_of(&mut self.tx, hashes, account).await
    }

    async fn claim_paths(&mut self, key: &DocKey, paths: &[String]) -> Result<Vec<(String, DocKey)>> {
        drop_paths(&mut self.tx, key).await?;
        let rows: Vec<(String, DocKey)> = paths.iter().map(|p| (p.clone(), key.clone())).collect();
        let claimed = insert_paths(&mut self.tx, &rows).await?;
        let contested: Vec<String> = paths.iter().filter(|p| !claimed.contains(p)).cloned().collect();
        if contested.is_empty() {
            return Ok(Vec::new());
        }
        path_holders(&mut self.tx, &contested).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.doing("committing writes")
    }
}

/// Pending events due by `$1`, oldest first, at most `$2`, with their documents.
pub(crate) const PENDING: &str = "SELECT e.id AS event, e.collection AS ecollection, e.doc_id AS edoc, e.accepted, \
     d.collection, d.id, d.owner, d.created, d.updated, d.status, d.flags, d.data, d.media FROM (SELECT id, collection, \
     doc_id, accepted FROM events WHERE state = 'pending' AND due <= $1 ORDER BY id LIMIT $2) e \
     LEFT JOIN documents d ON d.collection = e.collection AND d.id = e.doc_id ORDER BY e.id";

/// Documents of the events published after generation `$1`, with repeats.
/// Not `SELECT DISTINCT`: SQLite answers that by walking every event in
/// document order (`events_doc`) instead of the few after `$1`
/// (`events_generation`): 135 ms instead of 0.1 ms on 250,000 events.
pub(crate) const PUBLISHED_SINCE: &str = "SELECT collection, doc_id FROM events WHERE generation > $1";

#[async_trait]
impl MetaStore for Store {
    async fn begin_import(&self) -> Result<Box<dyn ImportTx>> {
        Ok(Box::new(Import { tx: self.write_tx().await? }))
    }

    async fn document(&self, key: &DocKey) -> Result<Option<Stored>> {
        let mut conn = self.pool.acquire().await.doing("reading a document")?;
        get_stored(&mut conn, key).await
    }

    async fn begin_write(&self, debounce: Debounce) -> Result<Box<dyn WriteTx>> {
        Ok(Box::new(Write { tx: self.write_tx().await?, debounce }))
    }

    async fn pending(&self, limit: u32, due_by: i64) -> Result<Pending> {
        // One statement reads the events and their documents from the same
        // snapshot; a deleted document comes back as NULL columns.
        let rows = sqlx::query(PENDING)
            .bind(due_by)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .doing("reading pending events")?;
        let mut pending = Pending::default();
        for r in &rows {
            let e = |e: sqlx::Error| corrupt("events", e);
            let key = key_from_row(r, "events", "ecollection", "edoc")?;
            pending.events.push(PendingEvent {
                id: r.try_get("event").map_err(e)?,
                key: key.clone(),
                accepted: r.try_get("accepted").map_err(e)?,
            });
            if let std::collections::hash_map::Entry::Vacant(slot) = pending.docs.entry(key) {
                let present: Option<String> = r.try_get("id").map_err(e)?;
                slot.insert(match present {
                    Some(_) => Some(doc_from_row(r, "documents")?),
                    None => None,
                });
            }
        }
        Ok(pending)
    }

    async fn pointers_at(&self, paths: &[String]) -> Result<Vec<Pointer>> {
        let mut out = Vec::new();
        for chunk in paths.chunks(CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(POINTER_COLUMNS);
            qb.push(" WHERE p.kind != 404 AND p.path IN (");
            let mut list = qb.separated(", ");
            for p in chunk {
                list.push_bind(p.clone());
            }
            qb.push(")");
            let rows = qb.build().fetch_all(&self.pool).await.doing("reading pointers")?;
            for r in &rows {
                out.push(pointer_from_row(r)?);
            }
        }
        Ok(out)
    }

    async fn published_changes(&self, after: u64) -> Result<PublishedChanges> {
        let mut tx = self.read_tx().await?;
        let latest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations")
            .fetch_one(&mut *tx)
            .await
            .doing("reading the latest generation")?;
        let builds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM generations WHERE id > $1 AND kind = 'build'")
            .bind(after as i64)
            .fetch_one(&mut *tx)
            .await
            .doing("reading generations")?;
        let mut changes = PublishedChanges { latest: latest as u64, full: builds > 0, docs: Vec::new() };
        if changes.full || latest as u64 <= after {
            return Ok(changes);
        }
        let rows = sqlx::query(PUBLISHED_SINCE)
            .bind(after as i64)
            .fetch_all(&mut *tx)
            .await
            .doing("reading published events")?;
        let mut keys =
            rows.iter().map(|r| key_from_row(r, "events", "collection", "doc_id")).collect::<Result<Vec<DocKey>>>()?;
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let doc = get_doc(&mut tx, "published_documents", &key).await?;
            changes.docs.push((key, doc));
        }
        Ok(changes)
    }

    async fn latest_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.read_tx().await?;
        snapshot(&mut tx, "documents").await
    }

    async fn published_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.read_tx().await?;
        snapshot(&mut tx, "published_documents").await
    }

    async fn pending_events(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
            .doing("counting pending events")?;
        Ok(n as u64)
    }

    async fn missing_objects(&self, hashes: &[String]) -> Result<Vec<String>> {
        let mut known = std::collections::HashSet::new();
        for chunk in hashes.chunks(CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new("SELECT hash FROM objects WHERE hash IN (");
            let mut list = qb.separated(", ");
            for h in chunk {
                list.push_bind(h.clone());
            }
            qb.push(")");
            let rows: Vec<String> =
                qb.build_query_scalar().fetch_all(&self.pool).await.doing("looking up stored objects")?;
            known.extend(rows);
        }
        Ok(hashes.iter().filter(|h| !known.contains(*h)).cloned().collect())
    }

    async fn set_encodings(&self, objects: &[(String, u8)]) -> Result<()> {
        // One statement per distinct value per chunk: there are only four.
        let mut by_value: std::collections::BTreeMap<u8, Vec<&String>> = Default::default();
        for (hash, encodings) in objects {
            by_value.entry(*encodings).or_default().push(hash);
        }
        let mut tx = self.pool.begin().await.doing("recording object variants")?;
        for (encodings, hashes) in by_value {
            for chunk in hashes.chunks(CHUNK) {
                let mut qb: QueryBuilder<Db> = QueryBuilder::new("UPDATE objects SET encodings = ");
                qb.push_bind(i64::from(encodings));
                qb.push(" WHERE hash IN (");
                let mut list = qb.separated(", ");
                for h in chunk {
                    list.push_bind((*h).clone());
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await.doing("recording object variants")?;
            }
        }
        tx.commit().await.doing("recording object variants")?;
        Ok(())
    }

    async fn pointers(&self) -> Result<Vec<Pointer>> {
        let sql = format!("{POINTER_COLUMNS} WHERE p.kind != 404");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&self.pool).await.doing("reading pointers")?;
        rows.iter().map(pointer_from_row).collect()
    }

    async fn pointers_since(&self, after: u64) -> Result<(u64, Vec<Pointer>)> {
        let mut tx = self.read_tx().await?;
        let latest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations")
            .fetch_one(&mut *tx)
            .await
            .doing("reading the latest generation")?;
        let sql = format!("{POINTER_COLUMNS} WHERE p.generation > $1");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after as i64)
            .fetch_all(&mut *tx)
            .await
            .doing("reading changed pointers")?;
        Ok((latest as u64, rows.iter().map(pointer_from_row).collect::<Result<_>>()?))
    }

    async fn latest_generation(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations")
            .fetch_one(&self.pool)
            .await
            .doing("reading the latest generation")?;
        Ok(n as u64)
    }

    async fn generations(&self, limit: u32) -> Result<Vec<Generation>> {
        let rows = sqlx::query("SELECT id, created, kind, summary FROM generations ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .doing("reading generations")?;
        rows.iter()
            .map(|r| {
                let e = |e: sqlx::Error| corrupt("generations", e);
                let summary: String = r.try_get("summary").map_err(e)?;
                Ok(Generation {
                    id: r.try_get::<i64, _>("id").map_err(e)? as u64,
                    created: r.try_get("created").map_err(e)?,
                    kind: r.try_get("kind").map_err(e)?,
                    summary: serde_json::from_str(&summary).map_err(|e| corrupt("generations", e))?,
                })
            })
            .collect()
    }

    async fn commit(&self, c: Commit) -> Result<u64> {
        let now = now();
        let mut tx = self.write_tx().await?;
        // Fencing: generation ids are dense, so a second commit on the same
        // base collides on the primary key (PostgreSQL makes it wait for the
        // first and then fail; SQLite's write lock serialises them).
        let generation = c.base as i64 + 1;
        let recorded = sqlx::query(
            "INSERT INTO generations (id, created, kind, summary) SELECT $1, $2, $3, $4 \
             WHERE NOT EXISTS (SELECT 1 FROM generations WHERE id >= $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(generation)
        .bind(now)
        .bind(c.kind)
        .bind(c.summary.to_string())
        .execute(&mut *tx)
        .await
        .doing("recording the generation")?;
        if recorded.rows_affected() != 1 {
            return Err(StoreError::Stale { base: c.base });
        }
        let refs = ref_deltas(&mut tx, &c).await?;
        insert_objects(&mut tx, &c.objects, &refs, now).await?;
        update_refs(&mut tx, &c.objects, &refs, now).await?;
        write_pointers(&mut tx, &c, generation, now).await?;
        write_published(&mut tx, &c.published, generation).await?;
        write_history(&mut tx, &c).await?;
        complete_events(&mut tx, &c.events, generation).await?;
        Store::notify(&mut tx, generation).await?;
        tx.commit().await.doing("committing the generation")?;
        Ok(generation as u64)
    }

    async fn next_due(&self) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT MIN(due) FROM events WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
            .doing("reading the next due event")
    }

    async fn force_due(&self, keys: &[DocKey]) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut n = 0;
        for key in keys {
            n += sqlx::query("UPDATE events SET due = $1 WHERE collection = $2 AND doc_id = $3 AND state = 'pending'")
                .bind(now_ms())
                .bind(&*key.collection)
                .bind(&*key.id)
                .execute(&mut *tx)
                .await
                .doing("forcing events due")?
                .rows_affected();
        }
        tx.commit().await.doing("forcing events due")?;
        Ok(n)
    }

    async fn event(&self, id: i64) -> Result<Option<EventInfo>> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .doing("reading an event")?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn fail_events(&self, ids: &[i64], error: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for chunk in ids.chunks(CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new("UPDATE events SET state = 'failed', error = ");
            qb.push_bind(error.to_string()).push(" WHERE state = 'pending' AND id IN (");
            let mut list = qb.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(&mut *tx).await.doing("failing events")?;
        }
        tx.commit().await.doing("failing events")
    }

    async fn create_account(
        &self,
        handle: &str,
        role: Role,
        credential: Credential<'_>,
        sites: Option<&str>,
    ) -> Result<Registration> {
        let mut tx = self.write_tx().await?;
        if names_content(&mut tx, handle, sites).await? {
            return Ok(Registration::OwnsContent);
        }
        let role = match role {
            Role::User => "user",
            Role::Admin => "admin",
        };
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO accounts (handle, role, created) VALUES ($1, $2, $3) ON CONFLICT (handle) DO NOTHING \
             RETURNING id",
        )
        .bind(handle)
        .bind(role)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await
        .doing("creating an account")?;
        let Some(id) = id else { return Ok(Registration::Taken) };
        match credential {
            Credential::Token(hash) => add_token(&mut tx, id, hash, "first token").await?,
            Credential::Password(hash) => {
                sqlx::query("UPDATE accounts SET password = $1 WHERE id = $2")
                    .bind(hash)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .doing("creating an account")?;
            }
        }
        tx.commit().await.doing("creating an account")?;
        Ok(Registration::Created(AccountId(id)))
    }

    async fn claim_account(&self, handle: &str, token_hash: &str, sites: Option<&str>) -> Result<Claimed> {
        let mut tx = self.write_tx().await?;
        let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE handle = $1")
            .bind(handle)
            .fetch_optional(&mut *tx)
            .await
            .doing("reading an account")?;
        let (id, created) = match existing {
            Some(id) => (id, false),
            None => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO accounts (handle, role, created) VALUES ($1, 'user', $2) RETURNING id",
                )
                .bind(handle)
                .bind(now())
                .fetch_one(&mut *tx)
                .await
                .doing("creating an account")?;
                (id, true)
            }
        };
        add_token(&mut tx, id, token_hash, "claimed").await?;
        let documents = sqlx::query(
            "UPDATE documents SET account = $1 WHERE account IS NULL AND (owner = $2 OR (collection = $3 AND id = $2))",
        )
        .bind(id)
        .bind(handle)
        .bind(sites.unwrap_or(""))
        .execute(&mut *tx)
        .await
        .doing("handing documents over")?
        .rows_affected();
        tx.commit().await.doing("claiming an account")?;
        Ok(Claimed { account: AccountId(id), created, documents })
    }

    async fn add_media(&self, row: &MediaRow, account: Option<AccountId>, quota: Option<u64>) -> Result<MediaAdded> {
        let mut tx = self.write_tx().await?;
        if let (Some(account), Some(quota)) = (account, quota) {
            // Uploads of one account queue here (a row lock on PostgreSQL;
            // SQLite's write transactions are serial anyway), so parallel
            // uploads cannot each see room for themselves.
            sqlx::query("UPDATE accounts SET id = id WHERE id = $1")
                .bind(account.0)
                .execute(&mut *tx)
                .await
                .doing("locking an account's media")?;
            // PostgreSQL's SUM of BIGINT is NUMERIC.
            let used: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(m.size), 0) AS BIGINT) FROM media m JOIN media_owners o ON o.hash = m.hash \
                 WHERE o.account = $1 AND m.hash != $2",
            )
            .bind(account.0)
            .bind(&row.hash)
            .fetch_one(&mut *tx)
            .await
            .doing("adding up an account's media")?;
            let used = used.max(0) as u64;
            if used + row.size > quota {
                return Ok(MediaAdded::OverQuota { used });
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO media (hash, format, width, height, size, created) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(&row.hash)
        .bind(format_name(row.format))
        .bind(i64::from(row.width))
        .bind(i64::from(row.height))
        .bind(row.size as i64)
        .bind(row.created)
        .execute(&mut *tx)
        .await
        .doing("recording a medium")?
        .rows_affected()
            == 1;
        if let Some(account) = account {
            sqlx::query("INSERT INTO media_owners (hash, account, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&row.hash)
                .bind(account.0)
                .bind(now())
                .execute(&mut *tx)
                .await
                .doing("recording a medium's owner")?;
        }
        // An upload renews a medium nothing refers to yet, so that collection
        // waits a whole grace period for the write that will use it.
        sqlx::query("UPDATE media SET created = $1 WHERE hash = $2 AND created < $1")
            .bind(row.created)
            .bind(&row.hash)
            .execute(&mut *tx)
            .await
            .doing("renewing a medium")?;
        let stored = media_of(&mut tx, std::slice::from_ref(&row.hash), account).await?;
        tx.commit().await.doing("recording a medium")?;
        let row = stored.into_iter().next().map(|(m, _)| m).ok_or_else(|| corrupt("media", "vanished"))?;
        Ok(MediaAdded::Stored { row, new: inserted })
    }

    async fn add_media_many(&self, rows: &[MediaRow]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for chunk in rows.chunks(CHUNK) {
            let mut qb: QueryBuilder<Db> =
                QueryBuilder::new("INSERT INTO media (hash, format, width, height, size, created) ");
            qb.push_values(chunk, |mut b, row| {
                b.push_bind(row.hash.clone())
                    .push_bind(format_name(row.format))
                    .push_bind(i64::from(row.width))
                    .push_bind(i64::from(row.height))
                    .push_bind(row.size as i64)
                    .push_bind(row.created);
            });
            qb.push(" ON CONFLICT (hash) DO NOTHING");
            qb.build().execute(&mut *tx).await.doing("recording media")?;
        }
        tx.commit().await.doing("recording media")
    }

    async fn pending_media(&self, limit: u32) -> Result<Vec<MediaRow>> {
        let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE variants IS NULL ORDER BY created LIMIT $1");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .doing("reading media without variants")?;
        rows.iter().map(media_from_row).collect()
    }

    async fn media_variants_made(&self, hash: &str, widths: &[u32]) -> Result<()> {
        sqlx::query("UPDATE media SET variants = $1 WHERE hash = $2")
            .bind(serde_json::to_string(widths).unwrap_or_else(|_| "[]".into()))
            .bind(hash)
            .execute(&self.pool)
            .await
            .doing("recording media variants")?;
        Ok(())
    }

    async fn media(&self, hashes: &[String], account: Option<AccountId>) -> Result<Vec<(MediaRow, bool)>> {
        let mut conn = self.pool.acquire().await.doing("reading media")?;
        media_of(&mut conn, hashes, account).await
    }

    async fn account_by_token(&self, token_hash: &str) -> Result<Option<Account>> {
        let row = sqlx::query(
            "SELECT a.id, a.handle, a.role FROM tokens t JOIN accounts a ON a.id = t.account WHERE t.hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .doing("looking up a token")?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn add_token(&self, account: AccountId, token_hash: &str, label: &str) -> Result<()> {
        let mut conn = self.pool.acquire().await.doing("storing a token")?;
        add_token(&mut conn, account.0, token_hash, label).await
    }

    async fn tokens(&self, account: AccountId) -> Result<Vec<TokenRow>> {
        let rows =
            sqlx::query("SELECT hash, label, created FROM tokens WHERE account = $1 ORDER BY created DESC, hash")
                .bind(account.0)
                .fetch_all(&self.pool)
                .await
                .doing("listing tokens")?;
        rows.iter()
            .map(|r| {
                let e = |e: sqlx::Error| corrupt("tokens", e);
                Ok(TokenRow {
                    hash: r.try_get("hash").map_err(e)?,
                    label: r.try_get("label").map_err(e)?,
                    created: r.try_get("created").map_err(e)?,
                })
            })
            .collect()
    }

    async fn revoke_token(&self, account: AccountId, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE account = $1 AND hash = $2")
            .bind(account.0)
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .doing("revoking a token")?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_password(&self, handle: &str, password_hash: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let id: Option<i64> = sqlx::query_scalar("UPDATE accounts SET password = $1 WHERE handle = $2 RETURNING id")
            .bind(password_hash)
            .bind(handle)
            .fetch_optional(&mut *tx)
            .await
            .doing("setting a password")?;
        if let Some(id) = id {
            sqlx::query("DELETE FROM sessions WHERE account = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .doing("ending sessions")?;
        }
        tx.commit().await.doing("setting a password")?;
        Ok(id.is_some())
    }

    async fn account_for_login(&self, handle: &str) -> Result<Option<(Account, Option<String>)>> {
        let row = sqlx::query("SELECT id, handle, role, password FROM accounts WHERE handle = $1")
            .bind(handle)
            .fetch_optional(&self.pool)
            .await
            .doing("looking up an account")?;
        row.map(|r| {
            let password = r.try_get("password").map_err(|e| corrupt("accounts", e))?;
            Ok((account_from_row(&r)?, password))
        })
        .transpose()
    }

    async fn start_session(&self, session_hash: &str, account: AccountId, expires: i64) -> Result<()> {
        let now = now();
        let mut tx = self.write_tx().await?;
        // Expired sessions of the account, and the oldest beyond the limit.
        sqlx::query(
            "DELETE FROM sessions WHERE account = $1 AND (expires <= $2 OR hash IN \
             (SELECT hash FROM sessions WHERE account = $1 ORDER BY created DESC, hash LIMIT 1000000 OFFSET $3))",
        )
        .bind(account.0)
        .bind(now)
        .bind(crate::MAX_SESSIONS - 1)
        .execute(&mut *tx)
        .await
        .doing("ending old sessions")?;
        sqlx::query("INSERT INTO sessions (hash, account, created, expires) VALUES ($1, $2, $3, $4)")
            .bind(session_hash)
            .bind(account.0)
            .bind(now)
            .bind(expires)
            .execute(&mut *tx)
            .await
            .doing("starting a session")?;
        tx.commit().await.doing("starting a session")
    }

    async fn session_account(&self, session_hash: &str) -> Result<Option<Account>> {
        let row = sqlx::query(
            "SELECT a.id, a.handle, a.role FROM sessions s JOIN accounts a ON a.id = s.account \
             WHERE s.hash = $1 AND s.expires > $2",
        )
        .bind(session_hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await
        .doing("looking up a session")?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn end_session(&self, session_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(session_hash)
            .execute(&self.pool)
            .await
            .doing("ending a session")?;
        Ok(())
    }

    async fn end_sessions(&self, account: AccountId) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE account = $1")
            .bind(account.0)
            .execute(&self.pool)
            .await
            .doing("ending sessions")?;
        Ok(done.rows_affected())
    }

    async fn find_documents(&self, collection: Option<&str>, query: &str, limit: u32) -> Result<Vec<Document>> {
        // An empty query lists the latest updated, read backwards off the
        // `documents_updated` index; documents updated in the same second
        // (a bulk import) come in any order, which keeps that index small
        // (a wider one made a 250k import 25% slower). LIKE with the wildcards of the query escaped: it is matched as text.
        let escaped: String = query
            .to_lowercase()
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let rows = sqlx::query(
            "SELECT collection, id, owner, created, updated, status, flags, data, media FROM documents \
             WHERE ($1 = '' OR collection = $1) AND ($2 = '' OR id = $2 OR owner = $2 OR LOWER(data) LIKE $3 ESCAPE '\\') \
             ORDER BY updated DESC LIMIT $4",
        )
        .bind(collection.unwrap_or(""))
        .bind(query)
        .bind(format!("%{escaped}%"))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("finding documents")?;
        rows.iter().map(|r| doc_from_row(r, "documents")).collect()
    }

    async fn failed_events(&self, limit: u32) -> Result<Vec<EventInfo>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE state = 'failed' ORDER BY id DESC LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("listing failed events")?;
        rows.iter().map(event_from_row).collect()
    }

    async fn reindex_paths(
        &self,
        fingerprint: &str,
        paths_of: &(dyn for<'d> Fn(&'d Document) -> Vec<String> + Send + Sync),
    ) -> Result<bool> {
        const KEY: &str = "paths_fingerprint";
        let mut tx = self.write_tx().await?;
        let current: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(KEY)
            .fetch_optional(&mut *tx)
            .await
            .doing("reading the path fingerprint")?;
        if current.as_deref() == Some(fingerprint) {
            return Ok(false);
        }
        sqlx::query("DELETE FROM doc_paths").execute(&mut *tx).await.doing("dropping path claims")?;
        let rows =
            sqlx::query("SELECT collection, id, owner, created, updated, status, flags, data, media FROM documents")
                .fetch_all(&mut *tx)
                .await
                .doing("reading documents")?;
        let mut docs = rows.iter().map(|r| doc_from_row(r, "documents")).collect::<Result<Vec<_>>>()?;
        // As the site model decides: taken-down documents keep their paths.
        docs.sort_by(|a, b| (a.status == Status::Live, &a.key).cmp(&(b.status == Status::Live, &b.key)));
        let mut claims: Vec<(String, DocKey)> = Vec::new();
        for d in &docs {
            for path in paths_of(d) {
                claims.push((path, d.key.clone()));
            }
        }
        insert_paths(&mut tx, &claims).await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(KEY)
        .bind(fingerprint)
        .execute(&mut *tx)
        .await
        .doing("recording the path fingerprint")?;
        tx.commit().await.doing("rebuilding path claims")?;
        Ok(true)
    }

    async fn taken_down(&self, keys: &[DocKey]) -> Result<Vec<DocKey>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut qb: QueryBuilder<Db> =
                QueryBuilder::new("SELECT collection, id FROM documents WHERE status = 'removed' AND (");
            for (i, key) in chunk.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                qb.push("(collection = ").push_bind(key.collection.to_string());
                qb.push(" AND id = ").push_bind(key.id.to_string()).push(")");
            }
            qb.push(")");
            for r in qb.build().fetch_all(&self.pool).await.doing("reading moderation")? {
                out.push(key_from_row(&r, "documents", "collection", "id")?);
            }
        }
        Ok(out)
    }

    async fn object_history(&self, hash: &str) -> Result<Vec<Deps>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT deps FROM pointer_history WHERE hash = $1 LIMIT 64")
                .bind(hash)
                .fetch_all(&self.pool)
                .await
                .doing("reading pointer history")?;
        rows.into_iter().map(|d| deps_from(d, "pointer_history")).collect()
    }

    async fn versions(&self, key: &DocKey, limit: u32) -> Result<Vec<Version>> {
        let rows = sqlx::query(VERSION_COLUMNS_NEWEST_FIRST)
            .bind(&*key.collection)
            .bind(&*key.id)
            .bind(i64::MAX)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .doing("reading versions")?;
        rows.iter().map(version_from_row).collect()
    }

    async fn version_at(&self, key: &DocKey, generation: u64) -> Result<Option<Version>> {
        let row = sqlx::query(VERSION_COLUMNS_NEWEST_FIRST)
            .bind(&*key.collection)
            .bind(&*key.id)
            .bind(generation as i64)
            .bind(1i64)
            .fetch_optional(&self.pool)
            .await
            .doing("reading a version")?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn pointer_at(&self, path: &str, generation: u64) -> Result<Option<Pointer>> {
        let row = sqlx::query(
            "SELECT h.path, h.kind, h.hash, h.content_type, h.location, h.deps, h.generation, g.created AS modified, \
             o.size, o.encodings FROM pointer_history h JOIN generations g ON g.id = h.generation \
             LEFT JOIN objects o ON o.hash = h.hash WHERE h.path = $1 AND h.generation <= $2 \
             ORDER BY h.generation DESC LIMIT 1",
        )
        .bind(path)
        .bind(generation as i64)
        .fetch_optional(&self.pool)
        .await
        .doing("reading pointer history")?;
        row.as_ref().map(pointer_from_row).transpose()
    }

    async fn pointers_under(&self, prefix: &str) -> Result<Vec<Pointer>> {
        let sql = format!("{POINTER_COLUMNS} WHERE p.kind != 404 AND p.path LIKE $1 ESCAPE '\\'");
        let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows =
            sqlx::query(AssertSqlSafe(sql)).bind(pattern).fetch_all(&self.pool).await.doing("reading pointers")?;
        rows.iter().map(pointer_from_row).collect()
    }

    async fn collect_garbage(&self, retain: Retain) -> Result<Collected> {
        let mut tx = self.write_tx().await?;
        // The oldest retained generation: the newest N are kept, and so is
        // every generation committed since `retain.since`.
        let oldest_by_count: Option<i64> =
            sqlx::query_scalar("SELECT MIN(id) FROM (SELECT id FROM generations ORDER BY id DESC LIMIT $1) AS newest")
                .bind(i64::from(retain.generations.max(1)))
                .fetch_one(&mut *tx)
                .await
                .doing("reading generations")?;
        let oldest_by_age: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM generations WHERE created >= $1")
            .bind(retain.since)
            .fetch_one(&mut *tx)
            .await
            .doing("reading generations")?;
        let oldest = match (oldest_by_count, oldest_by_age) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return Ok(Collected::default()),
        };
        // Rows superseded at or before the oldest retained generation are not
        // needed to know any retained generation's state.
        let history = sqlx::query(
            "DELETE FROM pointer_history AS h WHERE h.generation < $1 AND EXISTS (SELECT 1 FROM pointer_history n \
             WHERE n.path = h.path AND n.generation > h.generation AND n.generation <= $1)",
        )
        .bind(oldest)
        .execute(&mut *tx)
        .await
        .doing("pruning pointer history")?
        .rows_affected();
        let versions = sqlx::query(
            "DELETE FROM document_versions AS v WHERE v.generation < $1 AND EXISTS (SELECT 1 FROM document_versions n \
             WHERE n.collection = v.collection AND n.id = v.id AND n.generation > v.generation AND n.generation <= $1)",
        )
        .bind(oldest)
        .execute(&mut *tx)
        .await
        .doing("pruning document versions")?
        .rows_affected();
        let rows = sqlx::query(
            "DELETE FROM objects WHERE refs = 0 AND released IS NOT NULL AND released <= $1 \
             AND hash NOT IN (SELECT hash FROM pointer_history WHERE hash IS NOT NULL) RETURNING hash, size, encodings",
        )
        .bind(retain.released_before)
        .fetch_all(&mut *tx)
        .await
        .doing("forgetting unreferenced objects")?;
        let objects = rows
            .iter()
            .map(|r| {
                let e = |e: sqlx::Error| corrupt("objects", e);
                Ok(ObjectRow {
                    hash: r.try_get("hash").map_err(e)?,
                    size: r.try_get::<i64, _>("size").map_err(e)? as u64,
                    encodings: r.try_get::<i64, _>("encodings").map_err(e)? as u8,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Media: a version pruned above no longer refers to anything; a medium
        // nothing refers to goes once it is older than the grace period.
        sqlx::query(
            "DELETE FROM media_refs AS r WHERE r.generation >= 0 AND NOT EXISTS (SELECT 1 FROM document_versions v \
             WHERE v.collection = r.collection AND v.id = r.doc_id AND v.generation = r.generation)",
        )
        .execute(&mut *tx)
        .await
        .doing("pruning media references")?;
        let sql = format!(
            "DELETE FROM media AS m WHERE m.created <= $1 AND NOT EXISTS (SELECT 1 FROM media_refs r WHERE r.hash = m.hash) \
             RETURNING {MEDIA_COLUMNS}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(retain.released_before)
            .fetch_all(&mut *tx)
            .await
            .doing("forgetting unreferenced media")?;
        let media = rows.iter().map(media_from_row).collect::<Result<Vec<_>>>()?;
        tx.commit().await.doing("collecting garbage")?;
        Ok(Collected { history, versions, objects, media, oldest_retained: oldest as u64 })
    }

    async fn watch_generations(&self) -> Option<tokio::sync::mpsc::Receiver<u64>> {
        self.watch().await
    }

    async fn close(&self) -> Result<()> {
        self.finish().await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
             SET holder = excluded.holder, expires = excluded.expires WHERE leases.expires < $4 OR leases.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms as i64)
        .bind(now)
        .execute(&self.pool)
        .await
        .doing("taking a lease")?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .doing("releasing a lease")?;
        Ok(())
    }
}

/// Whether content names `handle`: documents it owns (by the owner field), or
/// its site document.
async fn names_content(conn: &mut Conn, handle: &str, sites: Option<&str>) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM documents WHERE owner = $1 OR (collection = $2 AND id = $1) LIMIT 1) AS d",
    )
    .bind(handle)
    .bind(sites.unwrap_or(""))
    .fetch_one(&mut *conn)
    .await
    .doing("looking for content of a handle")?;
    Ok(n > 0)
}

async fn add_token(conn: &mut Conn, account: i64, token_hash: &str, label: &str) -> Result<()> {
    sqlx::query("INSERT INTO tokens (hash, account, created, label) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(account)
        .bind(now())
        .bind(label)
        .execute(&mut *conn)
        .await
        .doing("storing a token")?;
    Ok(())
}

const EVENT_COLUMNS: &str = "id, collection, doc_id, op, account, account_id, state, generation, error, accepted";

fn event_from_row(r: &DbRow) -> Result<EventInfo> {
    let e = |e: sqlx::Error| corrupt("events", e);
    let id: i64 = r.try_get("id").map_err(e)?;
    let state: String = r.try_get("state").map_err(e)?;
    Ok(EventInfo {
        id,
        key: key_from_row(r, "events", "collection", "doc_id")?,
        op: r.try_get("op").map_err(e)?,
        account: r.try_get("account").map_err(e)?,
        account_id: r.try_get::<Option<i64>, _>("account_id").map_err(e)?.map(AccountId),
        state: match state.as_str() {
            "pending" => EventState::Pending,
            "done" => EventState::Done,
            "failed" => EventState::Failed,
            other => return Err(corrupt("events", format!("event {id}: state {other:?}"))),
        },
        generation: r.try_get::<Option<i64>, _>("generation").map_err(e)?.map(|g| g as u64),
        error: r.try_get("error").map_err(e)?,
        accepted: r.try_get("accepted").map_err(e)?,
    })
}

fn account_from_row(r: &DbRow) -> Result<Account> {
    let e = |e: sqlx::Error| corrupt("accounts", e);
    let role: String = r.try_get("role").map_err(e)?;
    Ok(Account {
        id: AccountId(r.try_get("id").map_err(e)?),
        handle: r.try_get("handle").map_err(e)?,
        role: match role.as_str() {
            "user" => Role::User,
            "admin" => Role::Admin,
            other => return Err(corrupt("accounts", format!("role {other:?}"))),
        },
    })
}

const MEDIA_COLUMNS: &str = "hash, format, width, height, size, created, variants";

fn media_from_row(r: &DbRow) -> Result<MediaRow> {
    let e = |e: sqlx::Error| corrupt("media", e);
    let format: String = r.try_get("format").map_err(e)?;
    let variants: Option<String> = r.try_get("variants").map_err(e)?;
    Ok(MediaRow {
        hash: r.try_get("hash").map_err(e)?,
        format: serde_json::from_value(serde_json::Value::String(format.clone()))
            .map_err(|_| corrupt("media", format!("format {format:?}")))?,
        width: r.try_get::<i64, _>("width").map_err(e)? as u32,
        height: r.try_get::<i64, _>("height").map_err(e)? as u32,
        size: r.try_get::<i64, _>("size").map_err(e)? as u64,
        created: r.try_get("created").map_err(e)?,
        variants: variants.map(|v| serde_json::from_str(&v).map_err(|e| corrupt("media", e))).transpose()?,
    })
}

fn format_name(format: sesame_model::MediaFormat) -> String {
    serde_json::to_value(format).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The media among `hashes`, and whether `account` owns each.
async fn media_of(conn: &mut Conn, hashes: &[String], account: Option<AccountId>) -> Result<Vec<(MediaRow, bool)>> {
    let mut out = Vec::new();
    for chunk in hashes.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
            "SELECT {MEDIA_COLUMNS}, EXISTS (SELECT 1 FROM media_owners o WHERE o.hash = media.hash AND o.account = "
        ));
        qb.push_bind(account.map_or(-1, |a| a.0)).push(") AS owned FROM media WHERE hash IN (");
        let mut list = qb.separated(", ");
        for h in chunk {
            list.push_bind(h.clone());
        }
        qb.push(")");
        for r in qb.build().fetch_all(&mut *conn).await.doing("reading media")? {
            let owned: bool = r.try_get("owned").map_err(|e| corrupt("media", e))?;
            out.push((media_from_row(&r)?, owned));
        }
    }
    Ok(out)
}

const VERSION_COLUMNS_NEWEST_FIRST: &str = "SELECT v.generation, g.created AS gcreated, v.collection, v.id, v.owner, \
     v.created, v.updated, v.status, v.flags, v.data, v.media FROM document_versions v JOIN generations g ON g.id = v.generation \
     WHERE v.collection = $1 AND v.id = $2 AND v.generation <= $3 ORDER BY v.generation DESC LIMIT $4";

fn version_from_row(r: &DbRow) -> Result<Version> {
    let e = |e: sqlx::Error| corrupt("document_versions", e);
    let data: Option<String> = r.try_get("data").map_err(e)?;
    Ok(Version {
        generation: r.try_get::<i64, _>("generation").map_err(e)? as u64,
        created: r.try_get("gcreated").map_err(e)?,
        doc: match data {
            Some(_) => Some(doc_from_row(r, "document_versions")?),
            None => None,
        },
    })
}

/// How the reference count of each object changes with a commit: +1 for each
/// new pointer to it, -1 for each pointer that stops referring to it.
async fn ref_deltas(conn: &mut Conn, c: &Commit) -> Result<HashMap<String, i64>> {
    let mut deltas: HashMap<String, i64> = HashMap::new();
    let paths: Vec<&String> = c.pointers.iter().map(|p| &p.path).chain(c.removed.iter()).collect();
    for chunk in paths.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("SELECT hash FROM pointers WHERE kind = 200 AND path IN (");
        let mut list = qb.separated(", ");
        for p in chunk {
            list.push_bind(p.to_string());
        }
        qb.push(")");
        let old: Vec<String> = qb.build_query_scalar().fetch_all(&mut *conn).await.doing("reading old pointers")?;
        for h in old {
            *deltas.entry(h).or_default() -= 1;
        }
    }
    for p in &c.pointers {
        if let Target::Page { object, .. } = &p.target {
            *deltas.entry(object.hash.clone()).or_default() += 1;
        }
    }
    deltas.retain(|_, d| *d != 0);
    Ok(deltas)
}

async fn insert_objects(conn: &mut Conn, objects: &[ObjectRow], refs: &HashMap<String, i64>, now: i64) -> Result<()> {
    for chunk in objects.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new("INSERT INTO objects (hash, size, encodings, created, refs, released) ");
        qb.push_values(chunk, |mut b, o| {
            let n = refs.get(&o.hash).copied().unwrap_or(0).max(0);
            b.push_bind(o.hash.clone())
                .push_bind(o.size as i64)
                .push_bind(i64::from(o.encodings))
                .push_bind(now)
                .push_bind(n)
                .push_bind(if n == 0 { Some(now) } else { None });
        });
        qb.build().execute(&mut *conn).await.doing("recording objects")?;
    }
    Ok(())
}

/// Applies reference count changes to objects that existed before this commit,
/// in one statement per chunk: a publish touches a dozen objects, and every
/// statement is a round trip on the commit's critical path.
async fn update_refs(conn: &mut Conn, inserted: &[ObjectRow], refs: &HashMap<String, i64>, now: i64) -> Result<()> {
    let fresh: std::collections::HashSet<&str> = inserted.iter().map(|o| o.hash.as_str()).collect();
    let changed: Vec<(&String, &i64)> = refs.iter().filter(|(h, _)| !fresh.contains(h.as_str())).collect();
    for chunk in changed.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("WITH delta (hash, n) AS (");
        qb.push_values(chunk, |mut b, (hash, n)| {
            b.push_bind(hash.to_string()).push_bind(**n);
        });
        qb.push(
            ") UPDATE objects SET refs = CASE WHEN refs + delta.n > 0 THEN refs + delta.n ELSE 0 END, \
             released = CASE WHEN refs + delta.n <= 0 THEN ",
        )
        .push_bind(now)
        .push(" ELSE NULL END FROM delta WHERE objects.hash = delta.hash");
        qb.build().execute(&mut *conn).await.doing("counting object references")?;
    }
    Ok(())
}

async fn write_pointers(conn: &mut Conn, c: &Commit, generation: i64, now: i64) -> Result<()> {
    for chunk in c.pointers.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "INSERT INTO pointers (path, kind, hash, content_type, location, deps, generation, modified) ",
        );
        qb.push_values(chunk, |mut b, p| {
            let (kind, hash, ctype, location) = target_columns(&p.target);
            b.push_bind(p.path.clone())
                .push_bind(kind)
                .push_bind(hash)
                .push_bind(ctype)
                .push_bind(location)
                .push_bind(p.deps.to_string())
                .push_bind(generation)
                .push_bind(now);
        });
        qb.push(
            " ON CONFLICT (path) DO UPDATE SET kind = excluded.kind, hash = excluded.hash, \
             content_type = excluded.content_type, location = excluded.location, deps = excluded.deps, \
             generation = excluded.generation, modified = excluded.modified",
        );
        qb.build().execute(&mut *conn).await.doing("writing pointers")?;
    }
    for chunk in c.removed.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "UPDATE pointers SET kind = 404, hash = NULL, content_type = NULL, location = NULL, deps = '', generation = ",
        );
        qb.push_bind(generation).push(", modified = ").push_bind(now).push(" WHERE path IN (");
        let mut list = qb.separated(", ");
        for p in chunk {
            list.push_bind(p.clone());
        }
        qb.push(")");
        qb.build().execute(&mut *conn).await.doing("removing pointers")?;
    }
    // The same values, kept by generation for `?v=` URLs.
    let removed: Vec<PointerChange> = c
        .removed
        .iter()
        .map(|p| PointerChange { path: p.clone(), target: Target::Removed, deps: Deps::default() })
        .collect();
    for chunk in c.pointers.chunks(CHUNK).chain(removed.chunks(CHUNK)) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "INSERT INTO pointer_history (path, generation, kind, hash, content_type, location, deps) ",
        );
        qb.push_values(chunk, |mut b, p| {
            let (kind, hash, ctype, location) = target_columns(&p.target);
            b.push_bind(p.path.clone())
                .push_bind(generation)
                .push_bind(kind)
                .push_bind(hash)
                .push_bind(ctype)
                .push_bind(location)
                .push_bind(p.deps.to_string());
        });
        qb.build().execute(&mut *conn).await.doing("recording pointer history")?;
    }
    Ok(())
}

fn target_columns(target: &Target) -> (i64, Option<String>, Option<String>, Option<String>) {
    match target {
        Target::Page { object, content_type } => (200, Some(object.hash.clone()), Some(content_type.clone()), None),
        Target::Redirect(to) => (301, None, None, Some(to.clone())),
        Target::Gone => (410, None, None, None),
        Target::Removed => (404, None, None, None),
    }
}

/// Published documents and their versions.
async fn write_published(conn: &mut Conn, published: &PublishedDocs, generation: i64) -> Result<()> {
    let upserts: Vec<Arc<Document>> = published.iter().filter_map(|(_, d)| d.clone()).collect();
    set_media_refs(&mut *conn, &upserts, generation, false).await?;
    insert_docs(
        &mut *conn,
        "published_documents",
        &upserts,
        "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
         updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data, \
             media = excluded.media",
    )
    .await?;
    for (key, _) in published.iter().filter(|(_, d)| d.is_none()) {
        sqlx::query("DELETE FROM published_documents WHERE collection = $1 AND id = $2")
            .bind(&*key.collection)
            .bind(&*key.id)
            .execute(&mut *conn)
            .await
            .doing("deleting a published document")?;
    }
    for chunk in published.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "INSERT INTO document_versions (collection, id, generation, owner, created, updated, status, flags, data, media) ",
        );
        qb.push_values(chunk, |mut b, (key, doc)| {
            b.push_bind(key.collection.to_string()).push_bind(key.id.to_string()).push_bind(generation);
            match doc {
                Some(d) => {
                    b.push_bind(d.owner.as_deref().map(str::to_string))
                        .push_bind(d.created)
                        .push_bind(d.updated)
                        .push_bind(d.status.as_str())
                        .push_bind(serde_json::to_string(&d.flags).unwrap_or_else(|_| "[]".into()))
                        .push_bind(Some(serde_json::Value::Object(d.data.clone()).to_string()))
                        .push_bind(Some(media_json(d)));
                }
                None => {
                    b.push_bind(None::<String>)
                        .push_bind(None::<i64>)
                        .push_bind(None::<i64>)
                        .push_bind(None::<String>)
                        .push_bind(None::<String>)
                        .push_bind(None::<String>)
                        .push_bind(None::<String>);
                }
            }
        });
        qb.push(
            " ON CONFLICT (collection, id, generation) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
             updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data, \
             media = excluded.media",
        );
        qb.build().execute(&mut *conn).await.doing("recording document versions")?;
    }
    Ok(())
}

/// Sequence numbers and aliases.
async fn write_history(conn: &mut Conn, c: &Commit) -> Result<()> {
    for chunk in c.seqs.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("INSERT INTO seqs (route, grp, collection, doc_id, seq) ");
        qb.push_values(chunk, |mut b, s| {
            b.push_bind(s.route.clone())
                .push_bind(s.group.clone())
                .push_bind(s.doc.collection.to_string())
                .push_bind(s.doc.id.to_string())
                .push_bind(s.seq as i64);
        });
        qb.build().execute(&mut *conn).await.doing("recording sequence numbers")?;
    }
    for a in &c.aliases_added {
        sqlx::query(
            "INSERT INTO aliases (route, path, collection, doc_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&a.route)
        .bind(&a.path)
        .bind(&*a.doc.collection)
        .bind(&*a.doc.id)
        .execute(&mut *conn)
        .await
        .doing("recording an alias")?;
    }
    for a in &c.aliases_removed {
        sqlx::query("DELETE FROM aliases WHERE route = $1 AND path = $2 AND collection = $3 AND doc_id = $4")
            .bind(&a.route)
            .bind(&a.path)
            .bind(&*a.doc.collection)
            .bind(&*a.doc.id)
            .execute(&mut *conn)
            .await
            .doing("dropping an alias")?;
    }
    Ok(())
}

async fn complete_events(conn: &mut Conn, ids: &[i64], generation: i64) -> Result<()> {
    for chunk in ids.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("UPDATE events SET state = 'done', generation = ");
        qb.push_bind(generation).push(" WHERE id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        qb.push(")");
        qb.build().execute(&mut *conn).await.doing("completing events")?;
    }
    Ok(())
}
