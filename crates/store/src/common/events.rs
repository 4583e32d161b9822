//! Change events: recorded with each write, due after the quiet time, read
//! by the publisher, completed by a commit.

use super::*;

/// Records an event and moves every pending event of its document to the
/// same due time: `quiet` after now, but no later than `max_wait` after the
/// document's first unpublished write.
pub(super) async fn record_event(
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

/// Pending events due by `$1`, oldest first, at most `$2`, with their documents.
pub(crate) const PENDING: &str = "SELECT e.id AS event, e.collection AS ecollection, e.doc_id AS edoc, e.accepted, \
     d.collection, d.id, d.owner, d.created, d.updated, d.status, d.flags, d.data, d.media, d.domain FROM (SELECT id, collection, \
     doc_id, accepted FROM events WHERE state = 'pending' AND due <= $1 ORDER BY id LIMIT $2) e \
     LEFT JOIN documents d ON d.collection = e.collection AND d.id = e.doc_id ORDER BY e.id";

/// Documents of the events published after generation `$1`, with repeats.
/// Not `SELECT DISTINCT`: SQLite answers that by walking every event in
/// document order (`events_doc`) instead of the few after `$1`
/// (`events_generation`): 135 ms instead of 0.1 ms on 250,000 events.
pub(crate) const PUBLISHED_SINCE: &str = "SELECT collection, doc_id FROM events WHERE generation > $1";

pub(super) const EVENT_COLUMNS: &str =
    "id, collection, doc_id, op, account, account_id, state, generation, error, accepted";

#[async_trait]
impl EventStore for Store {
    async fn pending(&self, limit: u32, due_by: i64) -> Result<Pending> {
        // One statement reads the events and their documents from the same
        // snapshot; a deleted document comes back as NULL columns.
        // Each row is converted as it arrives (a first build's are 250,000
        // documents).
        use futures::TryStreamExt;
        let mut rows = sqlx::query(PENDING).bind(due_by).bind(i64::from(limit)).fetch(&self.pool);
        let mut pending = Pending::default();
        while let Some(row) = rows.try_next().await.doing("reading pending events")? {
            let r = &row;
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
                    Some(_) => Some(Arc::new(doc_from_row(r, "documents")?)),
                    None => None,
                });
            }
        }
        Ok(pending)
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

    async fn pending_events(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
            .doing("counting pending events")?;
        Ok(n as u64)
    }

    async fn next_due(&self) -> Result<Option<i64>> {
        // Schedules are in the queue too: the publisher lands them when due.
        sqlx::query_scalar(
            "SELECT MIN(due) FROM (SELECT MIN(due) AS due FROM events WHERE state = 'pending' \
             UNION ALL SELECT MIN(due) AS due FROM schedules WHERE error IS NULL) AS due_times",
        )
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
}
