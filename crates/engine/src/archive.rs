//! An owner's archive: their site to take elsewhere, and its restore.
//!
//! One `tar.gz`, made as it is sent (one object in memory at a time):
//!
//! - `documents/{collection}.ndjson`: the account's documents in the import
//!   format (`{"id": …, fields…}` a line);
//! - `drafts/{collection}.ndjson`: its drafts and schedules, a line per
//!   document that has any (`{"id": …, "draft": {fields…}, "publish_at":
//!   RFC 3339, "unpublish_at": RFC 3339}`, each but `id` optional);
//! - `site/…`: the published pages under the site's path, the site's static
//!   files and the documents' images (originals and resized copies) at
//!   their URL paths, a tree any static host serves.
//!
//! Restoring reads the archive as it arrives (never whole in memory): it
//! keeps the documents and drafts and stores each original image, refuses
//! anything else but `site/` (which it skips: pages are rendered anew), and
//! writes through the same doors as the API: each image as an upload of the
//! importing account, then in one transaction every document through
//! [`apply_change`], every draft and schedule as the account saving and
//! setting it, so the account owns what it restores and a refused document
//! (someone else's, an invalid field, a taken path) leaves nothing written.
//! A schedule whose time passed while the site was away lands at once.
//! What unpacking reads is bounded (entries, bytes), so an archive that
//! inflates without end is refused as soon as it passes the bound.

use std::io::Read;

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sesame_model::media::{media_key, parse_key, parse_ref};
use sesame_model::{AccountId, Document, Op};
use sesame_objects::{Encoding, object_key};
use sesame_store::{Debounce, ScheduleAction, Target};

use crate::change::Policy;
use crate::drafts::{Past, ScheduleRequest, save_draft_in, set_schedule_in};
use crate::{Actor, Applied, EngineError, Project, WriteError, apply_change};

/// Documents an export holds at most.
const MAX_DOCUMENTS: u32 = 100_000;
/// Entries a restore reads at most.
const MAX_ENTRIES: usize = 100_000;
/// Bytes asked of the inflater at a time: more than the 32 KiB window it may
/// hold back.
const INFLATED_READ: usize = 64 << 10;

/// Where the archive's bytes go, a chunk at a time (an HTTP body, a file).
pub type Sink = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Where a restored archive's bytes come from, a chunk at a time (an HTTP
/// body): read as they arrive, never held whole.
pub type Source = tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>;

/// Why an archive cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a readable `tar.gz`, or an entry that may not be in one.
    #[error("{entry}: {message}")]
    Refused {
        /// The entry (or `archive`).
        entry: String,
        /// What is wrong with it.
        message: String,
    },
    /// It unpacks to more than the bound.
    #[error("the archive unpacks to more than {limit} bytes")]
    TooLarge {
        /// The bound, in bytes.
        limit: u64,
    },
    /// A document was refused; nothing was written.
    #[error("{entry}: {error}")]
    Document {
        /// `documents/{collection}.ndjson:{line}`.
        entry: String,
        /// Why.
        error: Box<WriteError>,
    },
    /// An image was refused.
    #[error("{entry}: {message}")]
    Media {
        /// The entry.
        entry: String,
        /// Why.
        message: String,
    },
    /// The store or storage failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn refused(entry: impl Into<String>, message: impl Into<String>) -> ArchiveError {
    ArchiveError::Refused { entry: entry.into(), message: message.into() }
}

/// A tar.gz whose bytes are handed to a [`Sink`] after each entry.
struct Writer<'a> {
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    sink: &'a Sink,
    mtime: u64,
    bytes: u64,
}

impl Writer<'_> {
    async fn add(&mut self, path: &str, data: &[u8]) -> Result<(), EngineError> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        let io = |e: std::io::Error| EngineError::Internal(format!("writing the archive: {e}"));
        self.tar.append_data(&mut header, path, data).map_err(io)?;
        let chunk = std::mem::take(self.tar.get_mut().get_mut());
        self.bytes += send(self.sink, chunk).await?;
        Ok(())
    }

    async fn finish(self) -> Result<u64, EngineError> {
        let io = |e: std::io::Error| EngineError::Internal(format!("writing the archive: {e}"));
        let rest = self.tar.into_inner().and_then(GzEncoder::finish).map_err(io)?;
        Ok(self.bytes + send(self.sink, rest).await?)
    }
}

/// Hands a chunk to the sink; its length.
async fn send(sink: &Sink, chunk: Vec<u8>) -> Result<u64, EngineError> {
    if chunk.is_empty() {
        return Ok(0);
    }
    let n = chunk.len() as u64;
    // The receiver gone: the download was broken off.
    sink.send(Ok(Bytes::from(chunk)))
        .await
        .map_err(|_| EngineError::Internal("the archive's reader went away".into()))?;
    Ok(n)
}

/// Writes the archive of `account`'s documents, with the published pages
/// under `prefix` (the site's path, `/{handle}/`), to `sink`. Returns the
/// bytes written.
pub async fn export_owner(
    project: &Project,
    account: AccountId,
    prefix: &str,
    sink: &Sink,
) -> Result<u64, EngineError> {
    let docs = project.store.documents_of(account, MAX_DOCUMENTS).await?;
    let mut out = Writer {
        // Pages and images are mostly compressed already: the fastest level.
        tar: tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast())),
        sink,
        mtime: sesame_model::time::now().max(0) as u64,
        bytes: 0,
    };
    // The documents, a file per collection, in the import format.
    let mut by_collection: std::collections::BTreeMap<&str, String> = Default::default();
    for d in &docs {
        let mut line = serde_json::Map::new();
        line.insert("id".into(), d.key.id.to_string().into());
        line.extend(d.data.to_map());
        let text = by_collection.entry(&d.key.collection).or_default();
        text.push_str(&serde_json::Value::Object(line).to_string());
        text.push('\n');
    }
    for (collection, text) in &by_collection {
        out.add(&format!("documents/{collection}.ndjson"), text.as_bytes()).await?;
    }
    for (collection, text) in drafts_by_collection(project, account).await? {
        out.add(&format!("drafts/{collection}.ndjson"), text.as_bytes()).await?;
    }
    // The site: its pages and the static files they use.
    let (_, table) = crate::manifest::published(project).await?;
    let mut pointers: Vec<_> =
        table.into_values().filter(|p| p.path.starts_with(prefix) || p.path.starts_with("/static/")).collect();
    pointers.sort_by(|a, b| a.path.cmp(&b.path));
    for p in &pointers {
        let Target::Page { object, .. } = &p.target else { continue };
        let Some(name) = crate::export::relative_file(&p.path) else { continue };
        let bytes = read(project, &object_key(&object.hash, Encoding::Identity)).await?;
        out.add(&format!("site/{name}"), &bytes).await?;
    }
    // The images the documents show, originals and resized copies.
    let mut hashes: Vec<String> = docs.iter().flat_map(referenced).collect();
    hashes.sort();
    hashes.dedup();
    for (row, _) in project.store.media(&hashes, None).await? {
        let widths = row.variants.clone().unwrap_or_default();
        for variant in std::iter::once(None).chain(widths.into_iter().map(Some)) {
            let key = media_key(&row.hash, row.format, variant);
            let bytes = read(project, &key).await?;
            out.add(&format!("site/{key}"), &bytes).await?;
        }
    }
    out.finish().await
}

/// The account's drafts and waiting schedules as `drafts/` lines, a text per
/// collection.
async fn drafts_by_collection(
    project: &Project,
    account: AccountId,
) -> Result<std::collections::BTreeMap<String, String>, EngineError> {
    let mut fields: Vec<(sesame_model::DocKey, &str, serde_json::Value)> = Vec::new();
    for draft in project.store.drafts_of(Some(account), MAX_DOCUMENTS).await? {
        fields.push((draft.key, "draft", draft.data.into()));
    }
    // A refused schedule is no longer due: it stays behind.
    for s in project.store.schedules_of(account, MAX_DOCUMENTS).await?.into_iter().filter(|s| s.error.is_none()) {
        let field = match s.action {
            ScheduleAction::Publish => "publish_at",
            ScheduleAction::Unpublish => "unpublish_at",
        };
        fields.push((s.key, field, sesame_model::time::rfc3339_ms(s.due).into()));
    }
    let mut lines: std::collections::BTreeMap<_, serde_json::Map<String, serde_json::Value>> = Default::default();
    for (key, field, value) in fields {
        let line = lines.entry((key.collection.to_string(), key.id.to_string())).or_insert_with(|| {
            let mut line = serde_json::Map::new();
            line.insert("id".into(), key.id.to_string().into());
            line
        });
        line.insert(field.into(), value);
    }
    let mut texts: std::collections::BTreeMap<String, String> = Default::default();
    for ((collection, _), line) in lines {
        let text = texts.entry(collection).or_default();
        text.push_str(&serde_json::Value::Object(line).to_string());
        text.push('\n');
    }
    Ok(texts)
}

/// The media hashes a stored document refers to.
fn referenced(doc: &Document) -> Vec<String> {
    doc.media.keys().filter_map(|r| parse_ref(r)).map(|(hash, _)| hash.to_string()).collect()
}

async fn read(project: &Project, key: &str) -> Result<Bytes, EngineError> {
    project.objects.get(key).await?.ok_or_else(|| EngineError::Corrupt(format!("object {key} is missing from storage")))
}

/// A `documents/` or `drafts/` file of an archive.
#[derive(Debug)]
struct TextEntry {
    /// Its name in the archive.
    entry: String,
    /// In `drafts/` (else `documents/`).
    drafts: bool,
    collection: String,
    text: String,
}

/// `(entry, hash, bytes)` of an original image, handed on as it is read.
type MediaEntry = (String, String, Bytes);

/// Reads an archive within `limit` unpacked bytes, refusing any entry that
/// is not a plain file at a plain relative path, and keeping what a restore
/// uses.
/// Images go to `media` one at a time as they are read (so an archive's
/// images are never all in memory); the documents and drafts are returned.
fn unpack(
    archive: impl Read,
    limit: u64,
    media_limit: usize,
    media: &tokio::sync::mpsc::Sender<MediaEntry>,
) -> Result<Vec<TextEntry>, ArchiveError> {
    let inflated = std::rc::Rc::new(std::cell::Cell::new(0u64));
    // The inflater wants more input before it hands out what it already
    // inflated; reading from it in large requests takes all it holds, so an
    // entry is complete as soon as its bytes have arrived.
    let inflating = Counted { inner: GzDecoder::new(archive).take(limit + 1), read: inflated.clone() };
    let reader = std::io::BufReader::with_capacity(INFLATED_READ, inflating);
    let mut tar = tar::Archive::new(reader);
    let unreadable = |e: std::io::Error| refused("archive", format!("not a readable tar.gz: {e}"));
    // A read that fails past the bound failed because of the bound.
    let failed = |e: std::io::Error| {
        if inflated.get() > limit { ArchiveError::TooLarge { limit } } else { unreadable(e) }
    };
    let mut documents = Vec::new();
    let mut entries = 0;
    let mut read_bytes: u64 = 0;
    for entry in tar.entries().map_err(unreadable)? {
        if entries == MAX_ENTRIES {
            return Err(refused("archive", format!("more than {MAX_ENTRIES} entries")));
        }
        entries += 1;
        let mut entry = entry.map_err(failed)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = safe_path(&name)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(refused(name, "only plain files may be in an archive (no links or devices)"));
        }
        let size = entry.header().size().map_err(unreadable)?;
        read_bytes += size;
        if read_bytes > limit {
            return Err(ArchiveError::TooLarge { limit });
        }
        let mut bytes = Vec::with_capacity(size.min(limit) as usize);
        entry.read_to_end(&mut bytes).map_err(failed)?;
        match path.as_slice() {
            [folder @ ("documents" | "drafts"), file] => {
                let collection = file
                    .strip_suffix(".ndjson")
                    .ok_or_else(|| refused(&name, format!("{folder} are in {folder}/{{collection}}.ndjson")))?;
                let text = String::from_utf8(bytes).map_err(|_| refused(&name, "not UTF-8 text"))?;
                let (entry, drafts, collection) = (name.clone(), *folder == "drafts", collection.to_string());
                documents.push(TextEntry { entry, drafts, collection, text });
            }
            ["site", "media", file] => {
                // Originals only: resized copies are made anew.
                if let Some((hash, None)) = parse_key(&format!("media/{file}")) {
                    if bytes.len() > media_limit {
                        return Err(ArchiveError::Media {
                            entry: name,
                            message: format!("larger than the {media_limit} bytes an upload may have"),
                        });
                    }
                    if media.blocking_send((name.clone(), hash.to_string(), Bytes::from(bytes))).is_err() {
                        // The restore stopped on an image; it answers why.
                        return Ok(documents);
                    }
                }
            }
            ["site", ..] => {}
            _ => return Err(refused(name, "an archive holds documents/, drafts/ and site/ only")),
        }
    }
    if entries == 0 {
        return Err(refused("archive", "it is empty: the body is the archive (a tar.gz made by export)"));
    }
    Ok(documents)
}

/// A [`Source`] as a blocking reader (for a blocking task).
struct SourceReader {
    source: Source,
    chunk: Bytes,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.source.blocking_recv() {
                Some(chunk) => self.chunk = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// The segments of an entry's path, if it is relative and plain.
fn safe_path(name: &str) -> Result<Vec<&str>, ArchiveError> {
    let segments: Vec<&str> = name.trim_end_matches('/').split('/').collect();
    let plain = !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && segments.iter().all(|s| !s.is_empty() && *s != "." && *s != "..");
    if plain { Ok(segments) } else { Err(refused(name, "not a plain relative path")) }
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restored {
    /// Documents written (changed).
    pub documents: u64,
    /// Images stored.
    pub media: u64,
    /// Drafts saved.
    pub drafts: u64,
    /// Schedules set.
    pub schedules: u64,
    /// The last change recorded, to follow.
    pub change: Option<i64>,
}

/// Restores an owner's archive as `actor`: its images uploaded as the
/// actor's, its documents written through the one door in one transaction
/// (ids kept, owned by the actor), refused whole if any is refused.
/// The archive is read from `source` as it arrives: each image is stored
/// as soon as it is unpacked, and only the documents are held until the
/// end. `limit` bounds the unpacked bytes.
pub async fn import_owner(
    project: &Project,
    actor: &Actor,
    source: Source,
    limit: u64,
) -> Result<Restored, ArchiveError> {
    let media_limit = project.site.config.media.max_bytes;
    let (images, mut unpacked_images) = tokio::sync::mpsc::channel(1);
    let reader = SourceReader { source, chunk: Bytes::new() };
    let unpacking = tokio::task::spawn_blocking(move || unpack(reader, limit, media_limit, &images));
    let mut restored = Restored::default();
    // An image refused stops the restore: dropping the receiver ends the
    // unpacking at its next image.
    while let Some((entry, hash, bytes)) = unpacked_images.recv().await {
        let row = crate::media::upload(project, actor.account, bytes)
            .await
            .map_err(|e| ArchiveError::Media { entry: entry.clone(), message: e.to_string() })?;
        if row.hash != hash {
            return Err(ArchiveError::Media { entry, message: "its content does not match its name".into() });
        }
        restored.media += 1;
    }
    let files = unpacking.await.map_err(|e| EngineError::Internal(format!("unpacking task failed: {e}")))??;
    // Every line parsed and keyed before anything is stored.
    let mut documents = Vec::new();
    let mut drafts = Vec::new();
    for file in &files {
        for (i, line) in file.text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = format!("{}:{}", file.entry, i + 1);
            let key_of = |id| project.site.doc_key_of(&file.collection, id).map_err(|e| refused(&at, e.to_string()));
            if file.drafts {
                let line: DraftLine =
                    serde_json::from_str(line).map_err(|e| refused(&at, format!("not a drafts line: {e}")))?;
                let key = key_of(&line.id)?;
                let schedule = line.schedule().map_err(|message| refused(&at, message))?;
                drafts.push((at, key, line.draft, schedule));
            } else {
                let mut fields: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(line).map_err(|e| refused(&at, format!("not a JSON object: {e}")))?;
                let id = fields.remove("id").ok_or_else(|| refused(&at, "missing \"id\""))?;
                let key = key_of(&id)?;
                documents.push((at, key, fields));
            }
        }
    }
    project.index_paths().await?;
    let mut tx = project.store.begin_write(Debounce::NONE).await.map_err(EngineError::from)?;
    let document_error = |entry: String| move |error| ArchiveError::Document { entry, error: Box::new(error) };
    for (entry, key, fields) in documents {
        match apply_change(project, &mut tx, &key, &Op::Put(fields), &Policy::actor(actor)).await {
            Ok(Applied::Written { event, .. }) => {
                restored.documents += 1;
                restored.change = Some(event);
            }
            Ok(_) => {}
            Err(error) => return Err(document_error(entry)(error)),
        }
    }
    // Drafts before schedules: a publish time needs its draft.
    for (entry, key, draft, _) in &mut drafts {
        if let Some(fields) = draft.take() {
            save_draft_in(project, &mut tx, actor, key, Op::Put(fields))
                .await
                .map_err(document_error(entry.clone()))?;
            restored.drafts += 1;
        }
    }
    for (entry, key, _, schedule) in drafts {
        if schedule != ScheduleRequest::default() {
            let set = set_schedule_in(project, &mut tx, actor, &key, schedule, Past::DueNow)
                .await
                .map_err(document_error(entry))?;
            restored.schedules += set.len() as u64;
        }
    }
    tx.commit().await.map_err(EngineError::from)?;
    Ok(restored)
}

/// A line of `drafts/{collection}.ndjson`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftLine {
    id: serde_json::Value,
    #[serde(default)]
    draft: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    publish_at: Option<String>,
    #[serde(default)]
    unpublish_at: Option<String>,
}

impl DraftLine {
    fn schedule(&self) -> Result<ScheduleRequest, String> {
        let time = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    sesame_model::time::parse_rfc3339_ms(t)
                        .ok_or_else(|| format!("{field}: expected an RFC 3339 time such as 2027-01-31T09:00:00Z"))
                })
                .transpose()
        };
        Ok(ScheduleRequest {
            publish_at: time("publish_at", &self.publish_at)?,
            unpublish_at: time("unpublish_at", &self.unpublish_at)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_entries() {
        for bad in ["../x", "site/../../x", "/etc/passwd", "site/./x", "site\\x", "a//b", ""] {
            assert!(safe_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(safe_path("site/ann/index.html").expect("plain"), ["site", "ann", "index.html"]);
        assert_eq!(safe_path("site/").expect("a folder"), ["site"]);
    }

    #[test]
    fn an_archive_that_inflates_past_the_bound_is_refused() {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
        let zeros = vec![0u8; 8 << 20];
        let mut header = tar::Header::new_gnu();
        header.set_size(zeros.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, "site/zeros.html", &zeros[..]).expect("append");
        let gz = tar.into_inner().expect("tar").finish().expect("gzip");
        assert!(gz.len() < 64 << 10, "a small archive: {} bytes", gz.len());
        let (media, _) = tokio::sync::mpsc::channel(1);
        assert!(matches!(unpack(&gz[..], 1 << 20, 1 << 20, &media), Err(ArchiveError::TooLarge { .. })));
        assert!(unpack(&gz[..], 16 << 20, 1 << 20, &media).is_ok());
    }

    /// An image is handed on as soon as its bytes have arrived, not when
    /// more of the archive does.
    #[test]
    fn an_entry_is_handed_on_once_its_bytes_arrive() {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        let image = vec![7u8; 3000];
        let mut header = tar::Header::new_gnu();
        header.set_size(image.len() as u64);
        header.set_mode(0o644);
        let name = format!("site/media/{}.png", "ab".repeat(32));
        tar.append_data(&mut header, &name, &image[..]).expect("append");
        std::io::Write::flush(tar.get_mut()).expect("a flush ends a deflate block");
        let first = std::mem::take(tar.get_mut().get_mut());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        runtime.block_on(async move {
            let (send, source) = tokio::sync::mpsc::channel(4);
            let (media, mut unpacked) = tokio::sync::mpsc::channel(1);
            let reader = SourceReader { source, chunk: Bytes::new() };
            let unpacking = tokio::task::spawn_blocking(move || unpack(reader, 1 << 20, 1 << 20, &media));
            send.send(Ok(Bytes::from(first))).await.expect("send");
            let handed = tokio::time::timeout(std::time::Duration::from_secs(5), unpacked.recv()).await;
            let (entry, _, bytes) = handed.expect("handed on before the rest arrives").expect("an image");
            assert_eq!((entry, bytes.len()), (name, image.len()));
            drop(send);
            let cut = unpacking.await.expect("task");
            assert!(matches!(cut, Err(ArchiveError::Refused { .. })), "an archive cut short is refused: {cut:?}");
        });
    }
}
