//! The engine: runs builds, imports and exports against a project's stores.
//!
//! It wires the pure core (`sesame-site` decides which pages exist and what
//! is on them, `sesame-render` turns them into bytes) to the I/O edges
//! (`sesame-store`, `sesame-objects`). Every publish follows one order:
//! render → hash → write new objects and the generation's manifest (its path
//! table) → durability barrier → one commit that records the manifest's
//! root, the published documents and completes the events. A crash before
//! the commit leaves the previous generation intact (plus orphan objects
//! that are harmless); a crash after it loses nothing.

pub mod archive;
mod change;
mod check;
mod content;
pub mod drafts;
mod events;
mod export;
mod gc;
mod import;
mod legacy;
pub mod manifest;
pub mod media;
mod metrics;
mod migrate;
mod on_demand;
mod plan;
mod project;
mod publish;
mod publish_loop;
mod publisher;
mod purge;
mod status;
mod testing;
mod variants;
mod verify;

use std::path::{Path, PathBuf};

pub use change::{
    Actor, Applied, By, Missing, Policy, WriteError, WriteResult, apply_change, preview, read, rollback, set_domain,
    write,
};
pub use check::{CheckReport, check};
pub use events::{Event, Ingested, Located, ingest, parse_event};
pub use export::{ExportSummary, export, export_generation};
pub use gc::{GcReport, collect_garbage};
pub use import::{ImportSummary, import, read_documents};
pub use migrate::{Migrated, migrate_objects};
pub use on_demand::OnDemand;
pub use plan::{PlanRow, plan};
pub use project::{Asset, Project, STATE_DIR, STATIC_DIR, TEMPLATES_DIR};
pub use publish::Stats;
pub use publish::Uncompressed;
pub use publish_loop::{Listener, PublishLoop, PublishLoopHandle};
pub use publisher::{Built, Outcome, PublishLease, Publisher, Scope, build};
pub use purge::{PurgeJob, Purger};
pub use sesame_store::Debounce;
pub use status::{ChangeStatus, Stage, change_status};
pub use variants::{Compress, VariantReport, add_variants};
pub use verify::{Difference, VerifyReport, verify};

/// Engine failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// `sesame.toml` is wrong.
    #[error(transparent)]
    Config(#[from] sesame_config::ConfigError),
    /// A template failed.
    #[error(transparent)]
    Render(#[from] sesame_render::RenderError),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] sesame_store::StoreError),
    /// The object store failed.
    #[error(transparent)]
    Objects(#[from] sesame_objects::ObjectError),
    /// A line of an input file is wrong.
    #[error("{file}: line {line}: {message}")]
    Line {
        /// The input file.
        file: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Two pages want the same path.
    #[error("two pages want the path {path}: {first} and {second}")]
    PathCollision {
        /// The contested path.
        path: String,
        /// One claimant.
        first: String,
        /// The other claimant.
        second: String,
    },
    /// A file could not be read or written.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Bad input that is not tied to a line (an unknown collection, a badly
    /// named static file).
    #[error("{0}")]
    Invalid(String),
    /// Stored state contradicts itself (a pointer to a missing object): reported,
    /// never guessed around.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// Something failed that is neither the input's fault nor the storage's
    /// (a task that panicked): retried, logged, never blamed on a document.
    #[error("internal error: {0}")]
    Internal(String),
    /// Another process holds the lease (publishing or collecting garbage).
    #[error("another process is {0}ing; try again shortly")]
    Busy(&'static str),
}

impl From<sesame_manifest::ManifestError> for EngineError {
    fn from(e: sesame_manifest::ManifestError) -> EngineError {
        use sesame_manifest::ManifestError;
        match e {
            ManifestError::Objects(e) => EngineError::Objects(e),
            ManifestError::Corrupt(what) => EngineError::Corrupt(what),
            e @ ManifestError::Encode(_) => EngineError::Internal(e.to_string()),
        }
    }
}

impl EngineError {
    pub(crate) fn io(doing: &'static str, path: &Path, source: std::io::Error) -> EngineError {
        EngineError::Io { doing, path: path.to_path_buf(), source }
    }
}

/// Receives progress of long operations (a progress bar in the CLI).
pub trait Progress: Send + Sync {
    /// A new stage of `total` units begins.
    fn stage(&self, name: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The current stage is over.
    fn finish(&self);
}

/// Progress that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
