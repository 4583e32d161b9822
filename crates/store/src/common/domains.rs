//! Custom domains: sites' claims on hosts and the DNS checks that verify them.

use super::*;
use crate::{AcmeHost, CertificateRow, DomainCheck, DomainRow, DomainStore};

const COLUMNS: &str = "host, site, account, token, created, checked, problem, verified, live";

#[derive(sqlx::FromRow)]
struct Columns {
    host: String,
    site: String,
    account: Option<i64>,
    token: String,
    created: i64,
    checked: Option<i64>,
    problem: Option<String>,
    verified: Option<i64>,
    live: Option<i64>,
}

fn from_row(row: &DbRow) -> Result<DomainRow> {
    use sqlx::FromRow;
    let c = Columns::from_row(row).map_err(|e| corrupt("domains", e))?;
    Ok(DomainRow {
        host: c.host,
        site: c.site,
        account: c.account.map(AccountId),
        token: c.token,
        created: c.created,
        checked: c.checked,
        problem: c.problem,
        verified: c.verified,
        live: c.live,
    })
}

async fn get(conn: &mut Conn, host: &str, site: &str) -> Result<Option<DomainRow>> {
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM domains WHERE host = $1 AND site = $2")))
        .bind(host)
        .bind(site)
        .fetch_optional(&mut *conn)
        .await
        .doing("reading a domain")?;
    row.as_ref().map(from_row).transpose()
}

#[async_trait]
impl DomainStore for Store {
    async fn attach_domain(&self, row: &DomainRow) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO domains (host, site, account, token, created) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (host, site) DO NOTHING",
        )
        .bind(&row.host)
        .bind(&row.site)
        .bind(row.account.map(|a| a.0))
        .bind(&row.token)
        .bind(row.created)
        .execute(&self.pool)
        .await
        .doing("attaching a domain")?
        .rows_affected();
        Ok(n > 0)
    }

    async fn domains_of(&self, site: &str) -> Result<Vec<DomainRow>> {
        let rows =
            sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM domains WHERE site = $1 ORDER BY created, host")))
                .bind(site)
                .fetch_all(&self.pool)
                .await
                .doing("listing domains")?;
        rows.iter().map(from_row).collect()
    }

    async fn domain(&self, host: &str, site: &str) -> Result<Option<DomainRow>> {
        let mut conn = self.pool.acquire().await.doing("reading a domain")?;
        get(&mut conn, host, site).await
    }

    async fn detach_domain(&self, host: &str, site: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("DELETE FROM domains WHERE host = $1 AND site = $2")
            .bind(host)
            .bind(site)
            .execute(&mut *tx)
            .await
            .doing("detaching a domain")?
            .rows_affected();
        sqlx::query(
            "DELETE FROM certificates WHERE host = $1 \
             AND NOT EXISTS (SELECT 1 FROM domains WHERE host = $1 AND verified IS NOT NULL)",
        )
        .bind(host)
        .execute(&mut *tx)
        .await
        .doing("deleting a certificate")?;
        tx.commit().await.doing("detaching a domain")?;
        Ok(n > 0)
    }

    async fn record_domain_check(
        &self,
        host: &str,
        site: &str,
        check: &DomainCheck,
        now: i64,
    ) -> Result<Option<DomainRow>> {
        let mut tx = self.write_tx().await?;
        let Some(claim) = get(&mut tx, host, site).await? else { return Ok(None) };
        let proven = check.proven || claim.verified.is_some();
        if check.proven && claim.verified.is_none() {
            // The DNS owner published this claim's token: the host is its.
            sqlx::query(
                "UPDATE domains SET verified = NULL, live = NULL, problem = $1 \
                 WHERE host = $2 AND site <> $3 AND verified IS NOT NULL",
            )
            .bind(format!("the TXT record at _sesame-challenge.{host} now holds another site's token"))
            .bind(host)
            .bind(site)
            .execute(&mut *tx)
            .await
            .doing("handing a domain over")?;
        }
        let verified = if proven { Some(claim.verified.unwrap_or(now)) } else { None };
        let live = if proven && check.points_here { Some(claim.live.unwrap_or(now)) } else { None };
        sqlx::query(
            "UPDATE domains SET checked = $1, problem = $2, verified = $3, live = $4 WHERE host = $5 AND site = $6",
        )
        .bind(now)
        .bind(&check.problem)
        .bind(verified)
        .bind(live)
        .bind(host)
        .bind(site)
        .execute(&mut *tx)
        .await
        .doing("recording a domain check")?;
        let row = get(&mut tx, host, site).await?;
        tx.commit().await.doing("recording a domain check")?;
        Ok(row)
    }

    async fn domains_to_check(&self, limit: u32) -> Result<Vec<DomainRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM domains WHERE live IS NULL ORDER BY COALESCE(checked, 0), created LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("listing domains to check")?;
        rows.iter().map(from_row).collect()
    }

    async fn put_certificate(&self, c: &CertificateRow) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "INSERT INTO certificates (host, chain, key, not_after, issued, first_issued) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE EXISTS (SELECT 1 FROM domains WHERE host = $1 AND verified IS NOT NULL) \
             ON CONFLICT (host) DO UPDATE SET chain = excluded.chain, key = excluded.key, \
             not_after = excluded.not_after, issued = excluded.issued, \
             first_issued = COALESCE(certificates.first_issued, excluded.first_issued)",
        )
        .bind(&c.host)
        .bind(&c.chain)
        .bind(&c.key)
        .bind(c.not_after)
        .bind(c.issued)
        .bind(c.first_issued)
        .execute(&mut *tx)
        .await
        .doing("storing a certificate")?
        .rows_affected();
        if n > 0 {
            sqlx::query("DELETE FROM acme_hosts WHERE host = $1")
                .bind(&c.host)
                .execute(&mut *tx)
                .await
                .doing("forgetting failed orders")?;
        }
        tx.commit().await.doing("storing a certificate")?;
        Ok(n > 0)
    }

    async fn certificates(&self) -> Result<Vec<CertificateRow>> {
        let rows: Vec<(String, String, String, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT c.host, c.chain, c.key, c.not_after, c.issued, c.first_issued FROM certificates c \
             WHERE EXISTS (SELECT 1 FROM domains d WHERE d.host = c.host AND d.verified IS NOT NULL) ORDER BY c.host",
        )
        .fetch_all(&self.pool)
        .await
        .doing("reading certificates")?;
        Ok(rows
            .into_iter()
            .map(|(host, chain, key, not_after, issued, first)| CertificateRow {
                host,
                chain,
                key,
                not_after,
                issued,
                first_issued: first.unwrap_or(issued),
            })
            .collect())
    }

    async fn certificate_dates(&self, host: &str) -> Result<Option<(i64, i64)>> {
        sqlx::query_as(
            "SELECT c.issued, c.not_after FROM certificates c WHERE c.host = $1 \
             AND EXISTS (SELECT 1 FROM domains d WHERE d.host = c.host AND d.verified IS NOT NULL)",
        )
        .bind(host)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a certificate")
    }

    async fn acme_account(&self, directory: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT credentials FROM acme_accounts WHERE directory = $1")
            .bind(directory)
            .fetch_optional(&self.pool)
            .await
            .doing("reading the ACME account")
    }

    async fn put_acme_account(&self, directory: &str, credentials: &str, now: i64) -> Result<String> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, created) VALUES ($1, $2, $3) \
             ON CONFLICT (directory) DO NOTHING",
        )
        .bind(directory)
        .bind(credentials)
        .bind(now)
        .execute(&mut *tx)
        .await
        .doing("storing the ACME account")?;
        let stored: String = sqlx::query_scalar("SELECT credentials FROM acme_accounts WHERE directory = $1")
            .bind(directory)
            .fetch_one(&mut *tx)
            .await
            .doing("reading the ACME account")?;
        tx.commit().await.doing("storing the ACME account")?;
        Ok(stored)
    }

    async fn hosts_to_certify(&self, now: i64, renew_seconds: i64, limit: u32) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT d.host FROM domains d \
             LEFT JOIN certificates c ON c.host = d.host \
             LEFT JOIN acme_hosts a ON a.host = d.host \
             WHERE d.verified IS NOT NULL AND d.live IS NOT NULL \
             AND (c.host IS NULL OR (c.not_after < $1 + $2 AND c.not_after - (c.not_after - c.issued) / 3 <= $1)) \
             AND (a.host IS NULL OR a.retry_at <= $1) \
             ORDER BY COALESCE(c.not_after, 0), d.live, d.host LIMIT $3",
        )
        .bind(now)
        .bind(renew_seconds)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .doing("listing hosts to certify")
    }

    async fn place_order(&self, host: &str, now: i64, since: i64, budget: u32) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM acme_orders WHERE placed < $1")
            .bind(since)
            .execute(&mut *tx)
            .await
            .doing("dropping old orders")?;
        let placed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM acme_orders")
            .fetch_one(&mut *tx)
            .await
            .doing("counting orders")?;
        let room = placed < i64::from(budget);
        if room {
            sqlx::query("INSERT INTO acme_orders (host, placed) VALUES ($1, $2)")
                .bind(host)
                .bind(now)
                .execute(&mut *tx)
                .await
                .doing("recording an order")?;
        }
        tx.commit().await.doing("recording an order")?;
        Ok(room)
    }

    async fn orders_since(&self, since: i64) -> Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT host, placed FROM acme_orders WHERE placed >= $1 ORDER BY placed, host")
            .bind(since)
            .fetch_all(&self.pool)
            .await
            .doing("listing orders")
    }

    async fn acme_host(&self, host: &str) -> Result<Option<AcmeHost>> {
        let row: Option<(String, i64, i64, String)> =
            sqlx::query_as("SELECT host, failures, retry_at, problem FROM acme_hosts WHERE host = $1")
                .bind(host)
                .fetch_optional(&self.pool)
                .await
                .doing("reading failed orders")?;
        Ok(row.map(|(host, failures, retry_at, problem)| AcmeHost {
            host,
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            retry_at,
            problem,
        }))
    }

    async fn put_acme_host(&self, row: &AcmeHost) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_hosts (host, failures, retry_at, problem) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (host) DO UPDATE SET failures = excluded.failures, retry_at = excluded.retry_at, \
             problem = excluded.problem",
        )
        .bind(&row.host)
        .bind(i64::from(row.failures))
        .bind(row.retry_at)
        .bind(&row.problem)
        .execute(&self.pool)
        .await
        .doing("recording a failed order")?;
        Ok(())
    }

    async fn put_challenge(&self, token: &str, host: &str, key_authorization: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_challenges (token, host, key_authorization, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (token) DO UPDATE SET host = excluded.host, \
             key_authorization = excluded.key_authorization, created = excluded.created",
        )
        .bind(token)
        .bind(host)
        .bind(key_authorization)
        .bind(now)
        .execute(&self.pool)
        .await
        .doing("storing a challenge answer")?;
        Ok(())
    }

    async fn challenge(&self, token: &str) -> Result<Option<(String, String)>> {
        sqlx::query_as("SELECT host, key_authorization FROM acme_challenges WHERE token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await
            .doing("reading a challenge answer")
    }

    async fn put_alpn_challenge(&self, host: &str, chain: &str, key: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_alpn_challenges (host, chain, key, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (host) DO UPDATE SET chain = excluded.chain, key = excluded.key, created = excluded.created",
        )
        .bind(host)
        .bind(chain)
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await
        .doing("storing a challenge certificate")?;
        Ok(())
    }

    async fn alpn_challenge(&self, host: &str) -> Result<Option<(String, String)>> {
        sqlx::query_as("SELECT chain, key FROM acme_alpn_challenges WHERE host = $1")
            .bind(host)
            .fetch_optional(&self.pool)
            .await
            .doing("reading a challenge certificate")
    }

    async fn drop_alpn_challenge(&self, host: &str) -> Result<()> {
        sqlx::query("DELETE FROM acme_alpn_challenges WHERE host = $1")
            .bind(host)
            .execute(&self.pool)
            .await
            .doing("dropping a challenge certificate")?;
        Ok(())
    }

    async fn drop_challenge(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM acme_challenges WHERE token = $1")
            .bind(token)
            .execute(&self.pool)
            .await
            .doing("dropping a challenge answer")?;
        Ok(())
    }

    async fn verified_domains(&self) -> Result<Vec<DomainRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM domains WHERE verified IS NOT NULL ORDER BY host"
        )))
        .fetch_all(&self.pool)
        .await
        .doing("listing verified domains")?;
        rows.iter().map(from_row).collect()
    }
}
