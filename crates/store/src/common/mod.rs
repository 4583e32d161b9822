//! The store's behaviour, written once for both backends, one file per
//! concern (the traits of the same names in `lib.rs`).
//!
//! This file is compiled twice, as `sqlite::common` and `postgres::common`;
//! each parent module defines what the names below mean (`Db`, `Conn`,
//! `DbRow`, `Store` with its `pool`, `read_tx`, `write_tx` and `notify`).
//! The SQL is portable between SQLite and PostgreSQL: `$N` placeholders
//! numbered in order of first use, `ON CONFLICT` clauses, no engine-specific
//! functions. Timestamps are integers (seconds, or milliseconds where named).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sesame_model::{AccountId, AliasRow, Deps, DocKey, Document, SeqRow, Status};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Transaction};

use super::{Conn, Db, DbRow, Store};
use crate::{
    Account, AccountStore, Author, Claimed, Collected, Commit, Credential, Debounce, DocumentStore, Doing, EventInfo,
    EventState, EventStore, Generation, GenerationStore, ImportTx, MediaAdded, MediaRow, MediaStore, ObjectRow,
    Pending, PendingEvent, Pointer, PublishedChanges, PublishedDocs, Registration, Result, Retain, Role, Snapshot,
    StoreError, Stored, Target, TokenRow, Version, WriteTx,
};

mod accounts;
mod documents;
mod domains;
mod drafts;
pub(super) mod events;
mod generations;
mod media;
mod rows;

use documents::*;
use events::*;
use media::*;
use rows::*;

/// Rows per multi-row statement (9 columns × 500 stays far below both
/// engines' limits on bound parameters).
pub(super) const CHUNK: usize = 500;

pub(super) fn now() -> i64 {
    sesame_model::time::now()
}

pub(super) fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

pub(super) fn now_ms() -> i64 {
    sesame_model::time::now_ms()
}
