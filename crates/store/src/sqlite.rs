//! The embedded store on a SQLite file.
//!
//! WAL journal (readers never wait for the writer) and `synchronous = FULL`,
//! so a committed transaction, and with it an acknowledged write, survives a
//! crash or power loss. Writers begin with `BEGIN IMMEDIATE` so that two writers
//! queue on the lock instead of failing on upgrade.

use std::borrow::Borrow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sesame_model::{AliasRow, DocKey, Document, SeqRow, Status};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection, Transaction};

use crate::{
    Commit, Doing, EventsDone, Generation, ImportTx, MetaStore, ObjectRow, Pending, Pointer, PublishedChanges, Result,
    Snapshot, StoreError, Target, WriteTx,
};

/// Rows per multi-row statement (8 columns × 500 stays far below SQLite's
/// 32,766 bound parameters).
const CHUNK: usize = 500;

/// The SQLite metadata store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .doing("parsing the database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool =
            SqlitePoolOptions::new().max_connections(4).connect_with(options).await.doing("opening the database")?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.doing("starting a write transaction")
    }
}

fn now() -> i64 {
    sesame_model::time::now()
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

/// A document key from two columns of a row.
fn key_from_row(row: &SqliteRow, table: &'static str, collection: &str, id: &str) -> Result<DocKey> {
    let e = |e: sqlx::Error| corrupt(table, e);
    Ok(DocKey::new(row.try_get::<String, _>(collection).map_err(e)?, row.try_get::<String, _>(id).map_err(e)?))
}

fn doc_from_row(row: &SqliteRow, table: &'static str) -> Result<Document> {
    let get = |e: sqlx::Error| corrupt(table, e);
    let status: String = row.try_get("status").map_err(get)?;
    let flags: String = row.try_get("flags").map_err(get)?;
    let data: String = row.try_get("data").map_err(get)?;
    Ok(Document {
        key: key_from_row(row, table, "collection", "id")?,
        owner: row.try_get::<Option<String>, _>("owner").map_err(get)?.map(Arc::from),
        created: row.try_get("created").map_err(get)?,
        updated: row.try_get("updated").map_err(get)?,
        status: Status::parse(&status).ok_or_else(|| corrupt(table, format!("status {status:?}")))?,
        flags: serde_json::from_str(&flags).map_err(|e| corrupt(table, e))?,
        data: serde_json::from_str(&data).map_err(|e| corrupt(table, e))?,
    })
}

/// Inserts documents into `table`; `conflict` is the `ON CONFLICT` clause.
async fn insert_docs<D: Borrow<Document>>(
    conn: &mut SqliteConnection,
    table: &str,
    docs: &[D],
    conflict: &str,
) -> Result<()> {
    for chunk in docs.chunks(CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "INSERT INTO {table} (collection, id, owner, created, updated, status, flags, data) "
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
                .push_bind(serde_json::Value::Object(d.data.clone()).to_string());
        });
        qb.push(" ");
        qb.push(conflict);
        qb.build().execute(&mut *conn).await.doing("writing documents")?;
    }
    Ok(())
}

/// Documents and history read in one transaction, so the documents reflect
/// exactly the events up to the watermark.
async fn snapshot(conn: &mut SqliteConnection, table: &'static str) -> Result<Snapshot> {
    let watermark: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(&mut *conn)
        .await
        .doing("reading the event watermark")?;
    let sql = format!("SELECT collection, id, owner, created, updated, status, flags, data FROM {table}");
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

fn pointer_from_row(row: &SqliteRow) -> Result<Pointer> {
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
        deps: row.try_get("deps").map_err(e)?,
        generation: row.try_get::<i64, _>("generation").map_err(e)? as u64,
        modified: row.try_get("modified").map_err(e)?,
    })
}

struct SqliteImport {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl ImportTx for SqliteImport {
    async fn add(&mut self, docs: &[Document]) -> Result<()> {
        insert_docs(
            &mut self.tx,
            "documents",
            docs,
            "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, updated = excluded.updated, data = excluded.data",
        )
        .await?;
        let created = now();
        for chunk in docs.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO events (collection, doc_id, op, created) ");
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(d.key.collection.to_string())
                    .push_bind(d.key.id.to_string())
                    .push_bind("upsert")
                    .push_bind(created);
            });
            qb.build().execute(&mut *self.tx).await.doing("recording import events")?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.doing("committing the import")
    }
}

struct SqliteWrite {
    tx: Transaction<'static, Sqlite>,
}

async fn record_event(conn: &mut SqliteConnection, key: &DocKey, op: &str, account: Option<&str>) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO events (collection, doc_id, op, account, created) VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&*key.collection)
    .bind(&*key.id)
    .bind(op)
    .bind(account)
    .bind(now())
    .fetch_one(&mut *conn)
    .await
    .doing("recording an event")
}

async fn get_doc(conn: &mut SqliteConnection, table: &'static str, key: &DocKey) -> Result<Option<Document>> {
    let sql = format!(
        "SELECT collection, id, owner, created, updated, status, flags, data FROM {table} WHERE collection = ? AND id = ?"
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
impl WriteTx for SqliteWrite {
    async fn get(&mut self, key: &DocKey) -> Result<Option<Document>> {
        get_doc(&mut self.tx, "documents", key).await
    }

    async fn put(&mut self, doc: &Document, op: &str, account: Option<&str>) -> Result<i64> {
        insert_docs(
            &mut self.tx,
            "documents",
            std::slice::from_ref(doc),
            "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
             updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data",
        )
        .await?;
        record_event(&mut self.tx, &doc.key, op, account).await
    }

    async fn delete(&mut self, key: &DocKey, op: &str, account: Option<&str>) -> Result<i64> {
        sqlx::query("DELETE FROM documents WHERE collection = ? AND id = ?")
            .bind(&*key.collection)
            .bind(&*key.id)
            .execute(&mut *self.tx)
            .await
            .doing("deleting a document")?;
        record_event(&mut self.tx, key, op, account).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.doing("committing writes")
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn begin_import(&self) -> Result<Box<dyn ImportTx>> {
        Ok(Box::new(SqliteImport { tx: self.write_tx().await? }))
    }

    async fn begin_write(&self) -> Result<Box<dyn WriteTx>> {
        Ok(Box::new(SqliteWrite { tx: self.write_tx().await? }))
    }

    async fn pending(&self, limit: u32) -> Result<Pending> {
        // One statement reads the events and their documents from the same
        // snapshot; a deleted document comes back as NULL columns.
        let rows = sqlx::query(
            "SELECT e.id AS event, e.collection AS ecollection, e.doc_id AS edoc, d.collection, d.id, d.owner, \
             d.created, d.updated, d.status, d.flags, d.data FROM (SELECT id, collection, doc_id FROM events \
             WHERE state = 'pending' ORDER BY id LIMIT ?) e LEFT JOIN documents d \
             ON d.collection = e.collection AND d.id = e.doc_id ORDER BY e.id",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("reading pending events")?;
        let mut pending = Pending::default();
        for r in &rows {
            let e = |e: sqlx::Error| corrupt("events", e);
            let key = key_from_row(r, "events", "ecollection", "edoc")?;
            pending.events.push((r.try_get("event").map_err(e)?, key.clone()));
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
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(POINTER_COLUMNS);
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
        let mut tx = self.pool.begin().await.doing("starting a read")?;
        let latest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations")
            .fetch_one(&mut *tx)
            .await
            .doing("reading the latest generation")?;
        let builds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM generations WHERE id > ? AND kind = 'build'")
            .bind(after as i64)
            .fetch_one(&mut *tx)
            .await
            .doing("reading generations")?;
        let mut changes = PublishedChanges { latest: latest as u64, full: builds > 0, docs: Vec::new() };
        if changes.full || latest as u64 <= after {
            return Ok(changes);
        }
        let keys = sqlx::query("SELECT DISTINCT collection, doc_id FROM events WHERE generation > ?")
            .bind(after as i64)
            .fetch_all(&mut *tx)
            .await
            .doing("reading published events")?;
        for r in &keys {
            let key = key_from_row(r, "events", "collection", "doc_id")?;
            let doc = get_doc(&mut tx, "published_documents", &key).await?;
            changes.docs.push((key, doc));
        }
        Ok(changes)
    }

    async fn latest_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.pool.begin().await.doing("starting a read")?;
        snapshot(&mut tx, "documents").await
    }

    async fn published_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.pool.begin().await.doing("starting a read")?;
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
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT hash FROM objects WHERE hash IN (");
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

    async fn pointers(&self) -> Result<Vec<Pointer>> {
        let sql = format!("{POINTER_COLUMNS} WHERE p.kind != 404");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&self.pool).await.doing("reading pointers")?;
        rows.iter().map(pointer_from_row).collect()
    }

    async fn pointers_since(&self, after: u64) -> Result<(u64, Vec<Pointer>)> {
        let mut tx = self.pool.begin().await.doing("starting a read")?;
        let latest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations")
            .fetch_one(&mut *tx)
            .await
            .doing("reading the latest generation")?;
        let sql = format!("{POINTER_COLUMNS} WHERE p.generation > ?");
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
        let rows = sqlx::query("SELECT id, created, kind, summary FROM generations ORDER BY id DESC LIMIT ?")
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
        let generation: i64 =
            sqlx::query_scalar("INSERT INTO generations (created, kind, summary) VALUES (?, ?, ?) RETURNING id")
                .bind(now)
                .bind(c.kind)
                .bind(c.summary.to_string())
                .fetch_one(&mut *tx)
                .await
                .doing("recording the generation")?;

        for chunk in c.objects.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT OR IGNORE INTO objects (hash, size, encodings, created) ");
            qb.push_values(chunk, |mut b, o| {
                b.push_bind(o.hash.clone()).push_bind(o.size as i64).push_bind(i64::from(o.encodings)).push_bind(now);
            });
            qb.build().execute(&mut *tx).await.doing("recording objects")?;
        }

        for chunk in c.pointers.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO pointers (path, kind, hash, content_type, location, deps, generation, modified) ",
            );
            qb.push_values(chunk, |mut b, (path, target, deps)| {
                let (kind, hash, ctype, location) = match target {
                    Target::Page { object, content_type } => {
                        (200, Some(object.hash.clone()), Some(content_type.clone()), None)
                    }
                    Target::Redirect(to) => (301, None, None, Some(to.clone())),
                    Target::Gone => (410, None, None, None),
                    Target::Removed => (404, None, None, None),
                };
                b.push_bind(path.clone())
                    .push_bind(kind)
                    .push_bind(hash)
                    .push_bind(ctype)
                    .push_bind(location)
                    .push_bind(deps.clone())
                    .push_bind(generation)
                    .push_bind(now);
            });
            qb.push(
                " ON CONFLICT (path) DO UPDATE SET kind = excluded.kind, hash = excluded.hash, \
                 content_type = excluded.content_type, location = excluded.location, deps = excluded.deps, \
                 generation = excluded.generation, modified = excluded.modified",
            );
            qb.build().execute(&mut *tx).await.doing("writing pointers")?;
        }

        for chunk in c.removed.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE pointers SET kind = 404, hash = NULL, content_type = NULL, location = NULL, deps = '', generation = ",
            );
            qb.push_bind(generation).push(", modified = ").push_bind(now).push(" WHERE path IN (");
            let mut list = qb.separated(", ");
            for p in chunk {
                list.push_bind(p.clone());
            }
            qb.push(")");
            qb.build().execute(&mut *tx).await.doing("removing pointers")?;
        }

        let upserts: Vec<Arc<Document>> = c.published.iter().filter_map(|(_, d)| d.clone()).collect();
        insert_docs(
            &mut tx,
            "published_documents",
            &upserts,
            "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
             updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data",
        )
        .await?;
        for (key, _) in c.published.iter().filter(|(_, d)| d.is_none()) {
            sqlx::query("DELETE FROM published_documents WHERE collection = ? AND id = ?")
                .bind(&*key.collection)
                .bind(&*key.id)
                .execute(&mut *tx)
                .await
                .doing("deleting a published document")?;
        }

        for chunk in c.seqs.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO seqs (route, grp, collection, doc_id, seq) ");
            qb.push_values(chunk, |mut b, s| {
                b.push_bind(s.route.clone())
                    .push_bind(s.group.clone())
                    .push_bind(s.doc.collection.to_string())
                    .push_bind(s.doc.id.to_string())
                    .push_bind(s.seq as i64);
            });
            qb.build().execute(&mut *tx).await.doing("recording sequence numbers")?;
        }
        for a in &c.aliases_added {
            sqlx::query("INSERT OR IGNORE INTO aliases (route, path, collection, doc_id) VALUES (?, ?, ?, ?)")
                .bind(&a.route)
                .bind(&a.path)
                .bind(&*a.doc.collection)
                .bind(&*a.doc.id)
                .execute(&mut *tx)
                .await
                .doing("recording an alias")?;
        }
        for a in &c.aliases_removed {
            sqlx::query("DELETE FROM aliases WHERE route = ? AND path = ? AND collection = ? AND doc_id = ?")
                .bind(&a.route)
                .bind(&a.path)
                .bind(&*a.doc.collection)
                .bind(&*a.doc.id)
                .execute(&mut *tx)
                .await
                .doing("dropping an alias")?;
        }

        match &c.events {
            EventsDone::UpTo(id) => {
                sqlx::query("UPDATE events SET state = 'done', generation = ? WHERE state = 'pending' AND id <= ?")
                    .bind(generation)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .doing("completing events")?;
            }
            EventsDone::Ids(ids) => {
                for chunk in ids.chunks(CHUNK) {
                    let mut qb: QueryBuilder<Sqlite> =
                        QueryBuilder::new("UPDATE events SET state = 'done', generation = ");
                    qb.push_bind(generation).push(" WHERE id IN (");
                    let mut list = qb.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await.doing("completing events")?;
                }
            }
        }
        tx.commit().await.doing("committing the generation")?;
        Ok(generation as u64)
    }
}
