//! Generations: the commit that flips pointers, objects and their reference
//! counts, pointer history, garbage collection and the publish lease.

use super::*;

pub(super) const POINTER_COLUMNS: &str = "SELECT p.path, p.kind, p.hash, p.content_type, p.location, p.deps, p.generation, \
     p.modified, o.size, o.encodings FROM pointers p LEFT JOIN objects o ON o.hash = p.hash";

/// How the reference count of each object changes with a commit: +1 for each
/// new pointer to it, -1 for each pointer that stops referring to it.
pub(super) async fn ref_deltas(conn: &mut Conn, c: &Commit) -> Result<HashMap<String, i64>> {
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

pub(super) async fn insert_objects(
    conn: &mut Conn,
    objects: &[ObjectRow],
    refs: &HashMap<String, i64>,
    now: i64,
) -> Result<()> {
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
pub(super) async fn update_refs(
    conn: &mut Conn,
    inserted: &[ObjectRow],
    refs: &HashMap<String, i64>,
    now: i64,
) -> Result<()> {
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

pub(super) async fn write_pointers(conn: &mut Conn, c: &Commit, generation: i64, now: i64) -> Result<()> {
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

pub(super) fn target_columns(target: &Target) -> (i64, Option<String>, Option<String>, Option<String>) {
    match target {
        Target::Page { object, content_type } => (200, Some(object.hash.clone()), Some(content_type.clone()), None),
        Target::Redirect(to) => (301, None, None, Some(to.clone())),
        Target::Gone => (410, None, None, None),
        Target::Removed => (404, None, None, None),
    }
}

/// Published documents and their versions.
pub(super) async fn write_published(conn: &mut Conn, published: &PublishedDocs, generation: i64) -> Result<()> {
    let upserts: Vec<Arc<Document>> = published.iter().filter_map(|(_, d)| d.clone()).collect();
    set_media_refs(&mut *conn, &upserts, generation, false).await?;
    insert_docs(
        &mut *conn,
        "published_documents",
        &upserts,
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
                        .push_bind(Some(media_json(d)))
                        .push_bind(d.domain.as_deref().map(str::to_string));
                }
                None => {
                    b.push_bind(None::<String>)
                        .push_bind(None::<i64>)
                        .push_bind(None::<i64>)
                        .push_bind(None::<String>)
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

    async fn objects_without_variants(&self) -> Result<Vec<(String, u64, String)>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT o.hash, o.size, MIN(p.content_type) FROM objects o JOIN pointers p ON p.hash = o.hash \
             WHERE o.encodings = 0 AND p.kind = 200 GROUP BY o.hash, o.size",
        )
        .fetch_all(&self.pool)
        .await
        .doing("finding objects without variants")?;
        Ok(rows.into_iter().map(|(hash, size, content_type)| (hash, size as u64, content_type)).collect())
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

    async fn pointers_since_in_chunks(
        &self,
        after: u64,
        chunk: usize,
        each: &mut (dyn FnMut(Vec<Pointer>) + Send),
    ) -> Result<u64> {
        use futures::TryStreamExt;
        let mut tx = self.read_tx().await?;
        let latest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM generations")
            .fetch_one(&mut *tx)
            .await
            .doing("reading the latest generation")?;
        let sql = format!("{POINTER_COLUMNS} WHERE p.generation > $1");
        let mut rows = sqlx::query(AssertSqlSafe(sql)).bind(after as i64).fetch(&mut *tx);
        let mut batch = Vec::with_capacity(chunk.min(4096));
        while let Some(row) = rows.try_next().await.doing("reading changed pointers")? {
            batch.push(pointer_from_row(&row)?);
            if batch.len() >= chunk {
                each(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            each(batch);
        }
        Ok(latest as u64)
    }

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
        let now = now();
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
        let refs = ref_deltas(&mut tx, &c).await?;
        insert_objects(&mut tx, &c.objects, &refs, now).await?;
        update_refs(&mut tx, &c.objects, &refs, now).await?;
        write_pointers(&mut tx, &c, generation, c.created).await?;
        write_published(&mut tx, &c.published, generation).await?;
        write_history(&mut tx, &c).await?;
        complete_events(&mut tx, &c.events, generation).await?;
        Store::notify(&mut tx, generation).await?;
        tx.commit().await.doing("committing the generation")?;
        Ok(generation as u64)
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

    async fn pointers_as_of(&self, generation: u64) -> Result<Vec<Pointer>> {
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
        let rows = sqlx::query(
            "DELETE FROM objects WHERE refs = 0 AND released IS NOT NULL AND released <= $1 \
             AND hash NOT IN (SELECT hash FROM pointer_history WHERE hash IS NOT NULL) RETURNING hash, size, encodings",
        )
        .bind(retain.released_before)
        .fetch_all(&mut *tx)
        .await
        .doing("forgetting unreferenced objects")?;
        let objects = rows.iter().map(object_from_row).collect::<Result<Vec<_>>>()?;
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
