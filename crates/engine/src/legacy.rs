//! Projects published by earlier versions kept a row per page (`pointers`),
//! per replaced page (`pointer_history`) and per object (`objects`), and
//! some generations recorded no manifest root. The first time this version
//! opens such a project, under the publish lease, every retained generation
//! without a root gets one written whole from those rows, and then the rows
//! go: from here on the manifest is the one published table.

use std::collections::BTreeSet;
use std::time::Duration;

use sesame_model::Status;
use sesame_store::Target;

use crate::manifest::{self, Blobs, Moderation, PathEntry};
use crate::publisher::PublishLease;
use crate::{EngineError, Project};

/// How long opening a project waits for another process's publish to end
/// before it migrates.
const PATIENCE: Duration = Duration::from_secs(600);

/// Turns the per-page rows of an earlier version into manifest roots and
/// drops them; does nothing when they are gone.
pub(crate) async fn migrate(project: &Project) -> Result<(), EngineError> {
    if !project.store.legacy_rows().await? {
        return Ok(());
    }
    let lease = PublishLease::wait(project, PATIENCE).await?;
    let result = match project.store.legacy_rows().await {
        // Another process migrated while this one waited.
        Ok(false) => Ok(()),
        Ok(true) => write_roots(project).await,
        Err(e) => Err(e.into()),
    };
    lease.release(project).await;
    result
}

async fn write_roots(project: &Project) -> Result<(), EngineError> {
    let store = project.store.as_ref();
    let oldest = store.oldest_retained().await?;
    let mut rootless: Vec<u64> = store
        .generations(u32::MAX)
        .await?
        .into_iter()
        .filter(|g| g.root.is_none() && g.id >= oldest)
        .map(|g| g.id)
        .collect();
    rootless.sort_unstable();
    if !rootless.is_empty() {
        tracing::info!(
            generations = rootless.len(),
            "writing manifest roots for the per-page rows of an earlier version"
        );
    }
    // The objects served by pages built from a document taken down now are
    // not served from history: known once every generation's table is read,
    // so the tables are read twice rather than all held at once.
    let down: BTreeSet<String> = store
        .published_snapshot()
        .await?
        .docs
        .into_iter()
        .filter(|d| d.status == Status::Removed)
        .map(|d| d.key.to_string())
        .collect();
    let mut moderation = Moderation { docs: down, ..Moderation::default() };
    for &generation in rootless.iter().filter(|_| !moderation.docs.is_empty()) {
        for p in store.legacy_pointers_as_of(generation).await? {
            if let Target::Page { object, .. } = &p.target {
                for doc in p.deps.documents().map(|k| k.to_string()).filter(|k| moderation.docs.contains(k)) {
                    moderation.objects.entry(object.hash.clone()).or_default().insert(doc);
                }
            }
        }
    }
    let salt = match manifest::latest_root(project).await {
        Ok(Some(root)) => root.salt,
        _ => manifest::new_salt(),
    };
    let latest = store.latest_generation().await?;
    for &generation in &rootless {
        let rows = store.legacy_pointers_as_of(generation).await?;
        let entries = rows.into_iter().filter_map(|p| PathEntry::of(&p).map(|e| (p.path, e))).collect();
        let (serve, target) = (project.serve_rules(), project.site.config.edge.shard_entries);
        let mut blobs = Blobs::default();
        let whole = manifest::whole(generation, salt.clone(), entries, &moderation, serve, target, &mut blobs)?;
        let staged = manifest::finish(project, whole.root, &whole.base.shards, blobs, true)?;
        manifest::write_staged(project, &staged, Vec::new()).await?;
        project.objects.sync().await?;
        store.set_root(generation, &staged.name).await?;
        if generation == latest {
            manifest::publish_root(project, &staged).await?;
        }
    }
    // What the rows recorded about variants is in the entries now: a
    // publisher starting compresses the objects that record none.
    store.drop_legacy_rows().await?;
    tracing::info!("the per-page rows of an earlier version are now manifest roots");
    Ok(())
}
