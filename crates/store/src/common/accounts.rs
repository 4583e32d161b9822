//! Accounts, their API tokens, passwords and dashboard sessions (hashes only).

use super::*;

/// Whether content names `handle`: documents it owns (by the owner field), or
/// its site document.
pub(super) async fn names_content(conn: &mut Conn, handle: &str, sites: Option<&str>) -> Result<bool> {
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

pub(super) async fn add_token(conn: &mut Conn, account: i64, token_hash: &str, label: &str) -> Result<()> {
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

#[async_trait]
impl AccountStore for Store {
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
        rows.iter().map(token_from_row).collect()
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
}
