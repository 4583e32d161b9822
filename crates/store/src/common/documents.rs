//! Documents: bulk imports, writes with their path claims and media references,
//! snapshots, search and history.

use super::*;

/// The stored form of a document's media.
pub(super) fn media_json(d: &Document) -> String {
    if d.media.is_empty() { "{}".to_string() } else { serde_json::to_string(&d.media).unwrap_or_else(|_| "{}".into()) }
}

/// The content hashes a document's media references name.
pub(super) fn media_hashes(d: &Document) -> Vec<String> {
    let mut hashes: Vec<String> =
        d.media.keys().filter_map(|r| r.split_once('.')).map(|(h, _)| h.to_string()).collect();
    hashes.sort();
    hashes.dedup();
    hashes
}

/// Records what `docs` refer to at `generation` (-1: the latest written
/// state). With `replace`, what those states referred to before is dropped
/// first (a new generation's versions have nothing to replace).
pub(super) async fn set_media_refs<D: Borrow<Document>>(
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

/// A document's columns with its JSON serialised: made before a write
/// transaction begins (the lock is not held while serialising), once for
/// every table that stores the same version.
pub(super) struct DocRow<'d> {
    pub doc: &'d Document,
    pub flags: String,
    pub data: &'d str,
    pub media: String,
}

impl<'d> DocRow<'d> {
    pub(super) fn of(doc: &'d Document) -> DocRow<'d> {
        DocRow {
            doc,
            flags: serde_json::to_string(&doc.flags).unwrap_or_else(|_| "[]".into()),
            data: doc.data.as_json(),
            media: media_json(doc),
        }
    }

    pub(super) fn all<D: Borrow<Document>>(docs: &'d [D]) -> Vec<DocRow<'d>> {
        docs.iter().map(|d| DocRow::of(d.borrow())).collect()
    }
}

/// Inserts documents into `table`; `conflict` is the `ON CONFLICT` clause.
pub(super) async fn insert_docs<'d, R: Borrow<DocRow<'d>>>(
    conn: &mut Conn,
    table: &str,
    rows: &[R],
    conflict: &str,
) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
            "INSERT INTO {table} (collection, id, owner, created, updated, status, flags, data, media, domain) "
        ));
        qb.push_values(chunk, |mut b, r| {
            let r: &DocRow = r.borrow();
            let d = r.doc;
            b.push_bind(&*d.key.collection)
                .push_bind(&*d.key.id)
                .push_bind(d.owner.as_deref())
                .push_bind(d.created)
                .push_bind(d.updated)
                .push_bind(d.status.as_str())
                .push_bind(r.flags.as_str())
                .push_bind(r.data)
                .push_bind(r.media.as_str())
                .push_bind(d.domain.as_deref());
        });
        qb.push(" ");
        qb.push(conflict);
        qb.build().execute(&mut *conn).await.doing("writing documents")?;
    }
    Ok(())
}

/// Documents and history read in one transaction, so the documents reflect
/// exactly the events up to the watermark.
pub(super) async fn snapshot(conn: &mut Conn, table: &'static str) -> Result<Snapshot> {
    let watermark: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(&mut *conn)
        .await
        .doing("reading the event watermark")?;
    let docs = documents_of_table(conn, table).await?;
    let seqs = each_row(
        conn,
        "SELECT route, grp, collection, doc_id, seq FROM seqs",
        "reading sequence numbers",
        seq_from_row,
    )
    .await?;
    let aliases =
        each_row(conn, "SELECT route, path, collection, doc_id FROM aliases", "reading aliases", alias_from_row)
            .await?;
    Ok(Snapshot { docs, seqs, aliases, watermark })
}

/// Every document of `table`, read row by row.
async fn documents_of_table(conn: &mut Conn, table: &'static str) -> Result<Vec<Document>> {
    let sql =
        format!("SELECT collection, id, owner, created, updated, status, flags, data, media, domain FROM {table}");
    each_row(conn, AssertSqlSafe(sql), "reading documents", |r| doc_from_row(r, table)).await
}

/// Every row of `sql`, each converted as it arrives: a snapshot of 250,000
/// documents never holds every raw row besides what was made of them.
async fn each_row<T>(
    conn: &mut Conn,
    sql: impl sqlx::SqlSafeStr,
    doing: &'static str,
    convert: impl Fn(&DbRow) -> Result<T>,
) -> Result<Vec<T>> {
    use futures::TryStreamExt;
    let mut rows = sqlx::query(sql).fetch(&mut *conn);
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await.doing(doing)? {
        out.push(convert(&row)?);
    }
    Ok(out)
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
            &DocRow::all(&unique),
            "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, updated = excluded.updated, data = excluded.data, \
             media = excluded.media, domain = excluded.domain",
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
pub(super) async fn drop_paths(conn: &mut Conn, key: &DocKey) -> Result<()> {
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
pub(super) async fn insert_paths(conn: &mut Conn, paths: &[(String, DocKey)]) -> Result<Vec<String>> {
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
pub(super) async fn path_holders(conn: &mut Conn, paths: &[String]) -> Result<Vec<(String, DocKey)>> {
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

/// The latest written document with its owning account.
pub(super) async fn get_stored(conn: &mut Conn, key: &DocKey) -> Result<Option<Stored>> {
    let row = sqlx::query(
        "SELECT collection, id, owner, created, updated, status, flags, data, media, domain, account FROM documents \
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

pub(super) async fn get_doc(conn: &mut Conn, table: &'static str, key: &DocKey) -> Result<Option<Document>> {
    let sql = format!(
        "SELECT collection, id, owner, created, updated, status, flags, data, media, domain FROM {table} \
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
            &[DocRow::of(doc)],
            "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
             updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data, \
             media = excluded.media, domain = excluded.domain",
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

    async fn draft(&mut self, key: &DocKey) -> Result<Option<crate::DraftRow>> {
        super::drafts::get_draft(&mut self.tx, key).await
    }

    async fn put_draft(&mut self, doc: &Document, account: Option<AccountId>) -> Result<crate::DraftRow> {
        super::drafts::put_draft(&mut self.tx, doc, account).await
    }

    async fn delete_draft(&mut self, key: &DocKey) -> Result<bool> {
        super::drafts::delete_draft(&mut self.tx, key).await
    }

    async fn schedules(&mut self, key: &DocKey) -> Result<Vec<crate::ScheduleRow>> {
        super::drafts::get_schedules(&mut self.tx, key).await
    }

    async fn schedule_count(&mut self, account: AccountId) -> Result<u64> {
        super::drafts::count_schedules(&mut self.tx, account).await
    }

    async fn put_schedule(&mut self, schedule: &crate::ScheduleRow) -> Result<()> {
        super::drafts::put_schedule(&mut self.tx, schedule).await
    }

    async fn delete_schedule(&mut self, key: &DocKey, action: crate::ScheduleAction, due: Option<i64>) -> Result<bool> {
        super::drafts::delete_schedule(&mut self.tx, key, action, due).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.doing("committing writes")
    }
}

pub(super) const VERSION_COLUMNS_NEWEST_FIRST: &str = "SELECT v.generation, g.created AS gcreated, v.collection, v.id, v.owner, \
     v.created, v.updated, v.status, v.flags, v.data, v.media, v.domain FROM document_versions v JOIN generations g ON g.id = v.generation \
     WHERE v.collection = $1 AND v.id = $2 AND v.generation <= $3 ORDER BY v.generation DESC LIMIT $4";

#[async_trait]
impl DocumentStore for Store {
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

    async fn latest_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.read_tx().await?;
        snapshot(&mut tx, "documents").await
    }

    async fn published_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.read_tx().await?;
        snapshot(&mut tx, "published_documents").await
    }

    async fn published_documents(&self) -> Result<Vec<Document>> {
        let mut tx = self.read_tx().await?;
        documents_of_table(&mut tx, "published_documents").await
    }

    async fn documents_of(&self, account: AccountId, limit: u32) -> Result<Vec<Document>> {
        let rows = sqlx::query(
            "SELECT collection, id, owner, created, updated, status, flags, data, media, domain FROM documents \
             WHERE account = $1 ORDER BY collection, id LIMIT $2",
        )
        .bind(account.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("listing an account's documents")?;
        rows.iter().map(|r| doc_from_row(r, "documents")).collect()
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
            "SELECT collection, id, owner, created, updated, status, flags, data, media, domain FROM documents \
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
        let rows = sqlx::query(
            "SELECT collection, id, owner, created, updated, status, flags, data, media, domain FROM documents",
        )
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
}
