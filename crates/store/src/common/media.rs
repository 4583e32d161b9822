//! Uploaded media, their owners and quotas, and their resized copies.

use super::*;

pub(super) const MEDIA_COLUMNS: &str = "hash, format, width, height, size, created, variants";

pub(super) fn format_name(format: sesame_model::MediaFormat) -> String {
    serde_json::to_value(format).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The media among `hashes`, and whether `account` owns each.
pub(super) async fn media_of(
    conn: &mut Conn,
    hashes: &[String],
    account: Option<AccountId>,
) -> Result<Vec<(MediaRow, bool)>> {
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

#[async_trait]
impl MediaStore for Store {
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
}
