//! Custom domains: sites' claims on hosts and the DNS checks that verify them.

use super::*;
use crate::{CertificateRow, DomainCheck, DomainRow, DomainStore};

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

    async fn put_certificate(&self, c: &CertificateRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO certificates (host, chain, key, not_after, issued) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (host) DO UPDATE SET chain = excluded.chain, key = excluded.key, \
             not_after = excluded.not_after, issued = excluded.issued",
        )
        .bind(&c.host)
        .bind(&c.chain)
        .bind(&c.key)
        .bind(c.not_after)
        .bind(c.issued)
        .execute(&self.pool)
        .await
        .doing("storing a certificate")?;
        Ok(())
    }

    async fn certificates(&self) -> Result<Vec<CertificateRow>> {
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT c.host, c.chain, c.key, c.not_after, c.issued FROM certificates c \
             WHERE EXISTS (SELECT 1 FROM domains d WHERE d.host = c.host AND d.verified IS NOT NULL) ORDER BY c.host",
        )
        .fetch_all(&self.pool)
        .await
        .doing("reading certificates")?;
        Ok(rows
            .into_iter()
            .map(|(host, chain, key, not_after, issued)| CertificateRow { host, chain, key, not_after, issued })
            .collect())
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
