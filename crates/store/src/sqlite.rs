//! The embedded store on a SQLite file.
//!
//! WAL journal (readers never wait for the writer) and `synchronous = FULL`,
//! so a committed transaction, and with it an acknowledged write, survives a
//! crash or power loss. Writers begin with `BEGIN IMMEDIATE` so that two writers
//! queue on the lock instead of failing on upgrade. There are no notifications:
//! other processes find new generations by polling.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use crate::{Doing, Result};

// The same queries, compiled once per backend (the `Db` alias below).
#[allow(clippy::duplicate_mod)]
#[path = "common.rs"]
mod common;

type Db = Sqlite;
type Conn = sqlx::SqliteConnection;
type DbRow = sqlx::sqlite::SqliteRow;
type Store = SqliteStore;

/// The SQLite metadata store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .doing("parsing the database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool =
            SqlitePoolOptions::new().max_connections(4).connect_with(options).await.doing("opening the database")?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.doing("starting a write transaction")
    }

    /// A read transaction: one consistent snapshot in WAL mode.
    async fn read_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin().await.doing("starting a read")
    }

    async fn notify(_: &mut Conn, _generation: i64) -> Result<()> {
        Ok(())
    }

    async fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<u64>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker reads the queue on every batch, and the events table keeps
    /// every event ever published: reading it must not scan them all.
    #[tokio::test]
    async fn pending_events_are_read_through_the_pending_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("s.db").display())).await.expect("open");
        // A realistic queue: many published events, none pending.
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
             INSERT INTO events (collection, doc_id, op, created, accepted, due, state) \
             SELECT 'items', 'd' || i, 'upsert', 0, 0, 0, 'done' FROM n",
        )
        .execute(&store.pool)
        .await
        .expect("fill");
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", common::PENDING)))
                .bind(i64::MAX) // everything due, as when the worker catches up
                .bind(10_000_i64)
                .fetch_all(&store.pool)
                .await
                .expect("plan");
        let steps: Vec<&str> = plan.iter().map(|(_, _, _, step)| step.as_str()).collect();
        assert!(steps.iter().any(|s| s.contains("USING INDEX events_pending")), "{steps:?}");
        assert!(!steps.contains(&"SCAN events"), "{steps:?}");
    }
}
