//! The scale-out store on PostgreSQL.
//!
//! Reads that span several statements run in `REPEATABLE READ` transactions so
//! that they see one snapshot. Each commit sends `NOTIFY sesame_generations`
//! with the new generation, delivered when the transaction commits, so that
//! routers in other processes follow within milliseconds (they also poll, in
//! case a notification is missed).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::{Doing, Result};

// The same queries, compiled once per backend (the `Db` alias below).
#[allow(clippy::duplicate_mod)]
#[path = "common/mod.rs"]
mod common;

type Db = Postgres;
type Conn = sqlx::PgConnection;
type DbRow = sqlx::postgres::PgRow;
type Store = PgStore;
/// Counts the tables named `$1` (0 or 1).
const TABLE_EXISTS: &str = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1";

/// The notification channel of new generations.
const CHANNEL: &str = "sesame_generations";

/// The PostgreSQL metadata store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to and migrates the database at `url` (`postgres://…`).
    pub async fn open(url: &str) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(url).doing("parsing the database URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // Past this, a request fails with 503 instead of hanging while the
            // database is down or every connection is busy.
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .doing("connecting to the database")?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    async fn finish(&self) -> Result<()> {
        Ok(())
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.doing("starting a write transaction")
    }

    /// A read transaction seeing one snapshot for all its statements.
    async fn read_tx(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.doing("starting a read")
    }

    async fn notify(conn: &mut Conn, generation: i64) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(generation.to_string())
            .execute(&mut *conn)
            .await
            .doing("notifying routers")?;
        Ok(())
    }

    /// New generations as they are committed, by any process.
    async fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<u64>> {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new generations; polling only");
                return None;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for new generations; polling only");
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        let generation = n.payload().parse().unwrap_or(0);
                        if tx.send(generation).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the notification connection; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Some(rx)
    }
}
