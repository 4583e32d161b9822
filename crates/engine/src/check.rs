//! `sesame check`: the stored documents that the collections' current
//! schemas (and field roles) refuse, so that a schema change never silently
//! strands published content.

use rayon::prelude::*;
use sesame_model::DocKey;
use sesame_site::FieldError;

use crate::{EngineError, Project};

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Documents checked.
    pub documents: u64,
    /// The documents refused, with every refused field, by key.
    pub invalid: Vec<(DocKey, Vec<FieldError>)>,
}

/// Checks every stored document (its latest written state).
pub async fn check(project: &Project) -> Result<CheckReport, EngineError> {
    let snapshot = project.store.latest_snapshot().await?;
    let site = project.site.clone();
    let documents = snapshot.docs.len() as u64;
    let mut invalid: Vec<(DocKey, Vec<FieldError>)> = tokio::task::spawn_blocking(move || {
        snapshot
            .docs
            .par_iter()
            .filter_map(|d| {
                site.validate(&d.key.collection, &d.data.to_map()).err().map(|errors| (d.key.clone(), errors))
            })
            .collect()
    })
    .await
    .map_err(|e| EngineError::Internal(format!("check task failed: {e}")))?;
    invalid.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(CheckReport { documents, invalid })
}
