//! Drafts, schedules and preview links: content saved before it is
//! published, changes due at a time, and links that show a draft.

use super::*;
use crate::{DraftRow, DraftStore, PreviewLinkRow, ScheduleAction, ScheduleRow};

/// The generation under which a draft's media references are recorded.
const DRAFT_REFS: i64 = -2;

const DRAFT_COLUMNS: &str = "collection, doc_id, account, data, updated";
const SCHEDULE_COLUMNS: &str = "collection, doc_id, action, due, account, author, admin, error";
const LINK_COLUMNS: &str = "hash, collection, doc_id, created, expires";

#[derive(sqlx::FromRow)]
struct DraftColumns {
    collection: String,
    doc_id: String,
    account: Option<i64>,
    data: String,
    updated: i64,
}

fn draft_from_row(row: &DbRow) -> Result<DraftRow> {
    use sqlx::FromRow;
    let c = DraftColumns::from_row(row).map_err(|e| corrupt("drafts", e))?;
    Ok(DraftRow {
        key: DocKey::new(c.collection, c.doc_id),
        account: c.account.map(AccountId),
        data: serde_json::from_str(&c.data).map_err(|e| corrupt("drafts", e))?,
        updated: c.updated,
    })
}

#[derive(sqlx::FromRow)]
struct ScheduleColumns {
    collection: String,
    doc_id: String,
    action: String,
    due: i64,
    account: Option<i64>,
    author: String,
    admin: i64,
    error: Option<String>,
}

fn schedule_from_row(row: &DbRow) -> Result<ScheduleRow> {
    use sqlx::FromRow;
    let c = ScheduleColumns::from_row(row).map_err(|e| corrupt("schedules", e))?;
    Ok(ScheduleRow {
        key: DocKey::new(c.collection, c.doc_id),
        action: ScheduleAction::parse(&c.action)
            .ok_or_else(|| corrupt("schedules", format!("action {:?}", c.action)))?,
        due: c.due,
        account: c.account.map(AccountId),
        author: c.author,
        admin: c.admin != 0,
        error: c.error,
    })
}

#[derive(sqlx::FromRow)]
struct LinkColumns {
    hash: String,
    collection: String,
    doc_id: String,
    created: i64,
    expires: i64,
}

fn link_from_row(row: &DbRow) -> Result<PreviewLinkRow> {
    use sqlx::FromRow;
    let c = LinkColumns::from_row(row).map_err(|e| corrupt("preview_links", e))?;
    Ok(PreviewLinkRow {
        hash: c.hash,
        key: DocKey::new(c.collection, c.doc_id),
        created: c.created,
        expires: c.expires,
    })
}

pub(super) async fn get_draft(conn: &mut Conn, key: &DocKey) -> Result<Option<DraftRow>> {
    let row =
        sqlx::query(AssertSqlSafe(format!("SELECT {DRAFT_COLUMNS} FROM drafts WHERE collection = $1 AND doc_id = $2")))
            .bind(&*key.collection)
            .bind(&*key.id)
            .fetch_optional(&mut *conn)
            .await
            .doing("reading a draft")?;
    row.as_ref().map(draft_from_row).transpose()
}

pub(super) async fn get_schedules(conn: &mut Conn, key: &DocKey) -> Result<Vec<ScheduleRow>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE collection = $1 AND doc_id = $2 ORDER BY action"
    )))
    .bind(&*key.collection)
    .bind(&*key.id)
    .fetch_all(&mut *conn)
    .await
    .doing("reading schedules")?;
    rows.iter().map(schedule_from_row).collect()
}

pub(super) async fn count_schedules(conn: &mut Conn, account: AccountId) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedules WHERE account = $1")
        .bind(account.0)
        .fetch_one(&mut *conn)
        .await
        .doing("counting schedules")?;
    Ok(n as u64)
}

pub(super) async fn put_draft(conn: &mut Conn, doc: &Document, account: Option<AccountId>) -> Result<DraftRow> {
    let data = doc.data.as_json();
    let updated = now_ms();
    sqlx::query(
        "INSERT INTO drafts (collection, doc_id, account, data, updated) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (collection, doc_id) DO UPDATE SET account = excluded.account, data = excluded.data, \
         updated = excluded.updated",
    )
    .bind(&*doc.key.collection)
    .bind(&*doc.key.id)
    .bind(account.map(|a| a.0))
    .bind(data)
    .bind(updated)
    .execute(&mut *conn)
    .await
    .doing("saving a draft")?;
    set_media_refs(conn, std::slice::from_ref(doc), DRAFT_REFS, true).await?;
    Ok(DraftRow { key: doc.key.clone(), account, data: doc.data.to_map(), updated })
}

pub(super) async fn delete_draft(conn: &mut Conn, key: &DocKey) -> Result<bool> {
    let n = sqlx::query("DELETE FROM drafts WHERE collection = $1 AND doc_id = $2")
        .bind(&*key.collection)
        .bind(&*key.id)
        .execute(&mut *conn)
        .await
        .doing("dropping a draft")?
        .rows_affected();
    for (table, extra) in
        [("media_refs", " AND generation = -2"), ("schedules", " AND action = 'publish'"), ("preview_links", "")]
    {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE collection = $1 AND doc_id = $2{extra}")))
            .bind(&*key.collection)
            .bind(&*key.id)
            .execute(&mut *conn)
            .await
            .doing("dropping what a draft had")?;
    }
    Ok(n > 0)
}

pub(super) async fn put_schedule(conn: &mut Conn, s: &ScheduleRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO schedules (collection, doc_id, action, due, account, author, admin, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (collection, doc_id, action) DO UPDATE SET \
         due = excluded.due, account = excluded.account, author = excluded.author, admin = excluded.admin, \
         error = excluded.error",
    )
    .bind(&*s.key.collection)
    .bind(&*s.key.id)
    .bind(s.action.as_str())
    .bind(s.due)
    .bind(s.account.map(|a| a.0))
    .bind(&s.author)
    .bind(i64::from(s.admin))
    .bind(s.error.as_deref())
    .execute(&mut *conn)
    .await
    .doing("setting a schedule")?;
    Ok(())
}

pub(super) async fn delete_schedule(
    conn: &mut Conn,
    key: &DocKey,
    action: ScheduleAction,
    due: Option<i64>,
) -> Result<bool> {
    let n = sqlx::query(
        "DELETE FROM schedules WHERE collection = $1 AND doc_id = $2 AND action = $3 AND ($4 IS NULL OR due = $4)",
    )
    .bind(&*key.collection)
    .bind(&*key.id)
    .bind(action.as_str())
    .bind(due)
    .execute(&mut *conn)
    .await
    .doing("dropping a schedule")?
    .rows_affected();
    Ok(n > 0)
}

#[async_trait]
impl DraftStore for Store {
    async fn draft(&self, key: &DocKey) -> Result<Option<DraftRow>> {
        let mut conn = self.pool.acquire().await.doing("reading a draft")?;
        get_draft(&mut conn, key).await
    }

    async fn drafts_of(&self, account: Option<AccountId>, limit: u32) -> Result<Vec<DraftRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DRAFT_COLUMNS} FROM drafts WHERE account IS NOT DISTINCT FROM $1 ORDER BY updated DESC LIMIT $2"
        )))
        .bind(account.map(|a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("listing drafts")?;
        rows.iter().map(draft_from_row).collect()
    }

    async fn schedules(&self, key: &DocKey) -> Result<Vec<ScheduleRow>> {
        let mut conn = self.pool.acquire().await.doing("reading schedules")?;
        get_schedules(&mut conn, key).await
    }

    async fn schedules_of(&self, account: AccountId, limit: u32) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE account = $1 ORDER BY due, collection, doc_id, action LIMIT $2"
        )))
        .bind(account.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("listing schedules")?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn due_schedules(&self, due_by: i64, limit: u32) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE error IS NULL AND due <= $1 ORDER BY due LIMIT $2"
        )))
        .bind(due_by)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("reading due schedules")?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn fail_schedule(&self, key: &DocKey, action: ScheduleAction, due: i64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE schedules SET error = $1 WHERE collection = $2 AND doc_id = $3 AND action = $4 AND due = $5",
        )
        .bind(error)
        .bind(&*key.collection)
        .bind(&*key.id)
        .bind(action.as_str())
        .bind(due)
        .execute(&self.pool)
        .await
        .doing("recording a refused schedule")?;
        Ok(())
    }

    async fn add_preview_link(&self, link: &PreviewLinkRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO preview_links (hash, collection, doc_id, created, expires) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&link.hash)
        .bind(&*link.key.collection)
        .bind(&*link.key.id)
        .bind(link.created)
        .bind(link.expires)
        .execute(&self.pool)
        .await
        .doing("storing a preview link")?;
        Ok(())
    }

    async fn preview_link(&self, hash: &str, now: i64) -> Result<Option<PreviewLinkRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LINK_COLUMNS} FROM preview_links WHERE hash = $1 AND expires > $2"
        )))
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a preview link")?;
        row.as_ref().map(link_from_row).transpose()
    }

    async fn preview_links(&self, key: &DocKey) -> Result<Vec<PreviewLinkRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LINK_COLUMNS} FROM preview_links WHERE collection = $1 AND doc_id = $2 ORDER BY created, hash"
        )))
        .bind(&*key.collection)
        .bind(&*key.id)
        .fetch_all(&self.pool)
        .await
        .doing("listing preview links")?;
        rows.iter().map(link_from_row).collect()
    }

    async fn revoke_preview_link(&self, key: &DocKey, id: &str) -> Result<bool> {
        // An id is a prefix of a hash: hex only, so LIKE sees no wildcard.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let n = sqlx::query("DELETE FROM preview_links WHERE collection = $1 AND doc_id = $2 AND hash LIKE $3")
            .bind(&*key.collection)
            .bind(&*key.id)
            .bind(format!("{}%", id.to_ascii_lowercase()))
            .execute(&self.pool)
            .await
            .doing("revoking a preview link")?
            .rows_affected();
        Ok(n > 0)
    }
}
