//! Generations: the commit that records a generation (its manifest root,
//! published documents and events), garbage collection, the publish lease,
//! and the per-page tables of earlier versions, read once to migrate them.

use super::*;

/// Each published document's key and, unless it was removed, its row.
pub(super) type PublishedRows<'d> = Vec<(&'d DocKey, Option<DocRow<'d>>)>;

pub(super) fn published_rows(published: &PublishedDocs) -> PublishedRows<'_> {
    published.iter().map(|(key, doc)| (key, doc.as_deref().map(DocRow::of))).collect()
}

pub(super) async fn write_published(conn: &mut Conn, published: &PublishedRows<'_>, generation: i64) -> Result<()> {
    let rows: Vec<&DocRow> = published.iter().filter_map(|(_, r)| r.as_ref()).collect();
    let upserts: Vec<&Document> = rows.iter().map(|r| r.doc).collect();
    set_media_refs(&mut *conn, &upserts, generation, false).await?;
    insert_docs(
        &mut *conn,
        "published_documents",
        &rows,
        "ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
         updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data, \
             media = excluded.media, domain = excluded.domain",
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
            "INSERT INTO document_versions (collection, id, generation, owner, created, updated, status, flags, data, media, domain) ",
        );
        qb.push_values(chunk, |mut b, (key, row)| {
            b.push_bind(&*key.collection).push_bind(&*key.id).push_bind(generation);
            match row {
                Some(r) => {
                    let d = r.doc;
                    b.push_bind(d.owner.as_deref())
                        .push_bind(d.created)
                        .push_bind(d.updated)
                        .push_bind(d.status.as_str())
                        .push_bind(r.flags.as_str())
                        .push_bind(Some(r.data))
                        .push_bind(Some(r.media.as_str()))
                        .push_bind(d.domain.as_deref());
                }
                None => {
                    b.push_bind(None::<&str>)
                        .push_bind(None::<i64>)
                        .push_bind(None::<i64>)
                        .push_bind(None::<&str>)
                        .push_bind(None::<&str>)
                        .push_bind(None::<&str>)
                        .push_bind(None::<&str>)
                        .push_bind(None::<&str>);
                }
            }
        });
        qb.push(
            " ON CONFLICT (collection, id, generation) DO UPDATE SET owner = excluded.owner, created = excluded.created, \
             updated = excluded.updated, status = excluded.status, flags = excluded.flags, data = excluded.data, \
             media = excluded.media, domain = excluded.domain",
        );
        qb.build().execute(&mut *conn).await.doing("recording document versions")?;
    }
    Ok(())
}

/// Sequence numbers and aliases.
pub(super) async fn write_history(conn: &mut Conn, c: &Commit) -> Result<()> {
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

pub(super) async fn complete_events(conn: &mut Conn, ids: &[i64], generation: i64) -> Result<()> {
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

#[async_trait]
impl GenerationStore for Store {
    async fn latest_generation(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations")
            .fetch_one(&self.pool)
            .await
            .doing("reading the latest generation")?;
        Ok(n as u64)
    }

    async fn generations(&self, limit: u32) -> Result<Vec<Generation>> {
        let rows = sqlx::query("SELECT id, created, kind, summary, root FROM generations ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .doing("reading generations")?;
        rows.iter().map(generation_from_row).collect()
    }

    async fn latest_root(&self) -> Result<(u64, Option<String>)> {
        let row: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT id, root FROM generations ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .doing("reading the latest generation")?;
        Ok(row.map_or((0, None), |(id, root)| (id as u64, root)))
    }

    async fn root_of(&self, generation: u64) -> Result<Option<String>> {
        let root: Option<Option<String>> = sqlx::query_scalar("SELECT root FROM generations WHERE id = $1")
            .bind(generation as i64)
            .fetch_optional(&self.pool)
            .await
            .doing("reading a generation")?;
        Ok(root.flatten())
    }

    async fn roots_since(&self, from: u64) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT root FROM generations WHERE id >= $1 AND root IS NOT NULL ORDER BY id")
            .bind(from as i64)
            .fetch_all(&self.pool)
            .await
            .doing("reading generations")
    }

    async fn set_root(&self, generation: u64, root: &str) -> Result<()> {
        sqlx::query("UPDATE generations SET root = $1 WHERE id = $2")
            .bind(root)
            .bind(generation as i64)
            .execute(&self.pool)
            .await
            .doing("recording the manifest root")?;
        Ok(())
    }

    async fn commit(&self, c: Commit) -> Result<u64> {
        // Serialised before the write lock is taken.
        let published = published_rows(&c.published);
        let mut tx = self.write_tx().await?;
        // Fencing: generation ids are dense, so a second commit on the same
        // base collides on the primary key (PostgreSQL makes it wait for the
        // first and then fail; SQLite's write lock serialises them).
        let generation = c.base as i64 + 1;
        let recorded = sqlx::query(
            "INSERT INTO generations (id, created, kind, summary, root) SELECT $1, $2, $3, $4, $5 \
             WHERE NOT EXISTS (SELECT 1 FROM generations WHERE id >= $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(generation)
        .bind(c.created)
        .bind(c.kind)
        .bind(c.summary.to_string())
        .bind(c.root.as_deref())
        .execute(&mut *tx)
        .await
        .doing("recording the generation")?;
        if recorded.rows_affected() != 1 {
            return Err(StoreError::Stale { base: c.base });
        }
        write_published(&mut tx, &published, generation).await?;
        write_history(&mut tx, &c).await?;
        complete_events(&mut tx, &c.events, generation).await?;
        Store::notify(&mut tx, generation).await?;
        tx.commit().await.doing("committing the generation")?;
        Ok(generation as u64)
    }

    async fn legacy_rows(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(super::super::TABLE_EXISTS)
            .bind("pointer_history")
            .fetch_one(&self.pool)
            .await
            .doing("looking for per-page tables")?;
        Ok(n > 0)
    }

    async fn legacy_pointers_as_of(&self, generation: u64) -> Result<Vec<Pointer>> {
        let rows = sqlx::query(
            "SELECT h.path, h.kind, h.hash, h.content_type, h.location, h.deps, h.generation, g.created AS modified, \
             o.size, o.encodings FROM pointer_history h JOIN generations g ON g.id = h.generation \
             LEFT JOIN objects o ON o.hash = h.hash WHERE h.kind != 404 AND h.generation = \
             (SELECT MAX(n.generation) FROM pointer_history n WHERE n.path = h.path AND n.generation <= $1)",
        )
        .bind(generation as i64)
        .fetch_all(&self.pool)
        .await
        .doing("reading pointer history")?;
        rows.iter().map(pointer_from_row).collect()
    }

    async fn drop_legacy_rows(&self) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for table in ["pointer_history", "pointers", "objects"] {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                .execute(&mut *tx)
                .await
                .doing("dropping per-page tables")?;
        }
        tx.commit().await.doing("dropping per-page tables")?;
        Ok(())
    }

    async fn generation_at(&self, time: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations WHERE created <= $1")
            .bind(time)
            .fetch_one(&self.pool)
            .await
            .doing("reading generations")?;
        Ok(n as u64)
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
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(crate::OLDEST_RETAINED)
        .bind(oldest.to_string())
        .execute(&mut *tx)
        .await
        .doing("recording the oldest retained generation")?;
        let versions = sqlx::query(
            "DELETE FROM document_versions AS v WHERE v.generation < $1 AND EXISTS (SELECT 1 FROM document_versions n \
             WHERE n.collection = v.collection AND n.id = v.id AND n.generation > v.generation AND n.generation <= $1)",
        )
        .bind(oldest)
        .execute(&mut *tx)
        .await
        .doing("pruning document versions")?
        .rows_affected();
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
        Ok(Collected { versions, media, oldest_retained: oldest as u64 })
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

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .doing("reading a setting")
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .doing("recording a setting")?;
        Ok(())
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
