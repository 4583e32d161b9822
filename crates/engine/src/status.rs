//! Where a change is on its way to the site: queued, being built, published
//! (and at which paths its document's own page is served), or failed. The
//! API and the dashboard show this; it is decided here, from the store, the
//! publisher and the generation the router serves.

use sesame_model::DocKey;
use sesame_store::{EventState, Target};

use crate::change::Actor;
use crate::publish_loop::PublishLoopHandle;
use crate::{EngineError, Project};

/// How far a change has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Written, waiting for its quiet period or for the publisher.
    Queued,
    /// In the batch being built, or committed but not yet served here.
    Building,
    /// Served.
    Published,
    /// Its batch failed (see `error`).
    Failed,
}

impl Stage {
    /// The name the API uses.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Building => "building",
            Stage::Published => "published",
            Stage::Failed => "failed",
        }
    }
}

/// Where one change is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeStatus {
    /// The document it changed.
    pub key: DocKey,
    /// How far it has come.
    pub stage: Stage,
    /// The generation that published it, once committed.
    pub generation: Option<u64>,
    /// Why publishing failed.
    pub error: Option<String>,
    /// Once published: the site paths where the document's own page is
    /// served now (not a 410, not another document's page).
    pub paths: Vec<String>,
}

/// Where change `id` is, if `actor` may see it (its own changes; an admin's,
/// every change). `served` is the generation this process's router serves,
/// when there is one: a committed change it does not serve yet is still
/// building from the reader's point of view.
pub async fn change_status(
    project: &Project,
    actor: &Actor,
    id: i64,
    publisher: &PublishLoopHandle,
    served: Option<u64>,
) -> Result<Option<ChangeStatus>, EngineError> {
    let Some(event) = project.store.event(id).await? else { return Ok(None) };
    if !actor.admin && (actor.account.is_none() || event.account_id != actor.account) {
        return Ok(None);
    }
    let stage = match event.state {
        EventState::Pending if publisher.is_building(id) => Stage::Building,
        EventState::Pending => Stage::Queued,
        EventState::Failed => Stage::Failed,
        EventState::Done if served.is_some_and(|s| event.generation.is_some_and(|g| s < g)) => Stage::Building,
        EventState::Done => Stage::Published,
    };
    let mut paths = Vec::new();
    if stage == Stage::Published
        && let Some(stored) = project.store.document(&event.key).await?
    {
        paths = crate::manifest::pointers_at(project, &project.site.doc_paths(&stored.doc))
            .await?
            .into_values()
            .filter(|p| matches!(p.target, Target::Page { .. }) && p.deps.is_page_of(&event.key))
            .map(|p| p.path)
            .collect();
        paths.sort();
    }
    Ok(Some(ChangeStatus { key: event.key, stage, generation: event.generation, error: event.error, paths }))
}
