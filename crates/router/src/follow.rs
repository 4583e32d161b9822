//! How the table follows the published manifest (`sesame-manifest`).
//!
//! The router loads the newest generation's root whole: its shards, read
//! side by side and decoded off the async threads, into a new table swapped
//! in at the end. It then follows each root committed after it: a root
//! patched from the one held carries every entry its generation changed in
//! its recent entries, or, when they were too many, in its new base's delta
//! ([`sesame_manifest::Root::parent`]), so following it reads the root and
//! at times its base, and applies only the entries that differ from the
//! table. A root written whole (a template change, resharding), or one
//! after a gap, is loaded whole again, beside the table being served.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use sesame_manifest::{ManifestError, PathEntry, Root, Shard};
use sesame_objects::ObjectStorage;

use crate::table::{Table, Update};

/// Shards read at once while loading a table whole.
const READS_AT_ONCE: usize = 16;

/// The root the table reflects: what following the next one needs.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub generation: u64,
    /// Its base's blob name (a new one means its delta may hold changes).
    base: String,
    /// Its moderation list's blob name.
    pub moderation: String,
}

impl Held {
    fn of(root: &Root) -> Held {
        Held { generation: root.generation, base: root.base.clone(), moderation: root.moderation.clone() }
    }
}

/// Loads `root`'s table whole and swaps it in.
pub(crate) async fn load_whole(
    table: &Table,
    objects: &Arc<dyn ObjectStorage>,
    root: &Root,
) -> Result<Held, ManifestError> {
    let started = std::time::Instant::now();
    let base = sesame_manifest::read_base(objects.as_ref(), root).await?;
    let capacity = |n: u64| usize::try_from(n).unwrap_or(0).min(1 << 24);
    let mut update = table.replace(capacity(root.paths), capacity(root.objects));
    let reads = base.shards.iter().map(|name| read_shard(objects.clone(), sesame_manifest::blob_key(name)));
    let mut shards = futures::stream::iter(reads.collect::<Vec<_>>()).buffer_unordered(READS_AT_ONCE);
    while let Some(shard) = shards.next().await {
        add(table, &mut update, shard?.paths.into_iter().map(|(path, entry)| (path, Some(entry))));
    }
    add(table, &mut update, base.delta.paths);
    add(table, &mut update, root.recent.paths.clone());
    update.finish(root.generation);
    tracing::info!(generation = root.generation, paths = root.paths, elapsed = ?started.elapsed(), "table loaded whole");
    Ok(Held::of(root))
}

/// Applies the roots that follow `held`, in order; `None` when one of them
/// was not patched from the one before it (it is then loaded whole).
pub(crate) async fn follow(
    table: &Table,
    objects: &dyn ObjectStorage,
    held: &Held,
    roots: &[Root],
) -> Result<Option<Held>, ManifestError> {
    // Later generations' entries over earlier ones'.
    let mut changed: HashMap<String, Option<PathEntry>> = HashMap::new();
    let mut now = held.clone();
    for root in roots {
        if root.parent != Some(now.generation) {
            return Ok(None);
        }
        // Most bases are new because the recent entries moved down, and
        // then the generation's changes are the new recent entries.
        if root.base != now.base && root.recent.is_empty() {
            changed.extend(sesame_manifest::read_base(objects, root).await?.delta.paths);
        }
        changed.extend(root.recent.paths.clone());
        now = Held::of(root);
    }
    // Most of a delta is entries applied before: only what differs is applied.
    let mut changes = Vec::new();
    for (path, entry) in changed {
        let entry = table.entry(entry);
        if !table.holds(&path, entry.as_ref()) {
            changes.push((path.into_boxed_str(), entry));
        }
    }
    let mut update = table.update();
    update.add(changes);
    update.finish(now.generation);
    Ok(Some(now))
}

/// Reads and decodes one shard; the inflating and parsing, the CPU-heavy
/// part, off the threads that answer requests.
async fn read_shard(objects: Arc<dyn ObjectStorage>, key: String) -> Result<Shard, ManifestError> {
    let bytes = objects.get(&key).await?.ok_or_else(|| sesame_manifest::missing(&key))?;
    tokio::task::spawn_blocking(move || sesame_manifest::decode_blob::<Shard>(&key, &bytes))
        .await
        .map_err(|e| ManifestError::Corrupt(format!("decoding a manifest shard failed: {e}")))?
}

fn add(table: &Table, update: &mut Update<'_>, entries: impl IntoIterator<Item = (String, Option<PathEntry>)>) {
    update.add(entries.into_iter().map(|(path, entry)| (path.into_boxed_str(), table.entry(entry))).collect());
}
