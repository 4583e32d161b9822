//! Export of the published state as a plain file tree for any static server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use sesame_objects::{Encoding, object_key};
use sesame_store::{ObjectRow, Target, encodings};

use crate::publish::Uncompressed;
use crate::variants::with_variants;
use crate::{EngineError, Progress, Project};

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportSummary {
    /// Page files written (compressed variants not counted).
    pub files: u64,
    /// Bytes written, variants included.
    pub bytes: u64,
    /// Redirect and gone entries in `_redirects`.
    pub redirects: u64,
}

/// Maps a URL path to a file under `out`: `/a/b/` → `a/b/index.html`,
/// `/sitemap.xml` → `sitemap.xml`. Refuses anything that could leave `out`.
fn file_for(out: &Path, path: &str) -> Result<PathBuf, EngineError> {
    let rel =
        relative_file(path).ok_or_else(|| EngineError::Invalid(format!("refusing to export unsafe path {path:?}")))?;
    Ok(out.join(rel))
}

/// The relative file a URL path is stored as in a plain tree:
/// `/a/b/` → `a/b/index.html`, `/sitemap.xml` → `sitemap.xml`; `None` for
/// a path that could leave the tree.
pub(crate) fn relative_file(path: &str) -> Option<String> {
    let rel = path.strip_prefix('/').unwrap_or(path);
    let mut segments = Vec::new();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." || seg.contains('\\') || seg.contains('\0') {
            return None;
        }
        segments.push(seg);
    }
    if path.ends_with('/') {
        segments.push("index.html");
    }
    Some(segments.join("/"))
}

fn write(file: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io("creating", dir, e))?;
    }
    std::fs::write(file, bytes).map_err(|e| EngineError::io("writing", file, e))
}

/// Writes every published page under `out` as `path/index.html` (or the file
/// name of file-like paths), with `.gz` and `.br` variants beside them for
/// servers that serve precompressed files (`gzip_static`). Redirects and gone
/// pages are listed in `_redirects` (the format Netlify and Cloudflare Pages
/// read) and also written as small HTML stubs for servers that ignore it.
pub async fn export(project: &Project, out: &Path, progress: &dyn Progress) -> Result<ExportSummary, EngineError> {
    let (_, table) = crate::manifest::published(project).await?;
    export_pointers(project, out, table.into_values().collect(), progress).await
}

/// [`export`] of the site as generation `generation` published it (what
/// `?v=GENERATION` serves), for any generation garbage collection retains.
pub async fn export_generation(
    project: &Project,
    out: &Path,
    generation: u64,
    progress: &dyn Progress,
) -> Result<ExportSummary, EngineError> {
    let latest = project.store.latest_generation().await?;
    if generation == 0 || generation > latest {
        return Err(EngineError::Invalid(format!("there is no generation {generation}: the newest is {latest}")));
    }
    let oldest = project.store.oldest_retained().await?;
    if generation < oldest {
        return Err(EngineError::Invalid(format!(
            "generation {generation} is no longer retained: the oldest kept is {oldest} (see [retention] in sesame.toml)"
        )));
    }
    // The table the generation's root recorded.
    let name = project
        .store
        .root_of(generation)
        .await?
        .ok_or_else(|| EngineError::Corrupt(format!("generation {generation} recorded no manifest root")))?;
    let root = crate::manifest::read_named_root(project.objects.as_ref(), &name)
        .await?
        .ok_or_else(|| EngineError::Corrupt(format!("the root of generation {generation} is of another format")))?;
    let pointers = crate::manifest::table(project, Some(&root)).await?.into_values().collect();
    export_pointers(project, out, pointers, progress).await
}

async fn export_pointers(
    project: &Project,
    out: &Path,
    mut pointers: Vec<sesame_store::Pointer>,
    progress: &dyn Progress,
) -> Result<ExportSummary, EngineError> {
    pointers.sort_by(|a, b| a.path.cmp(&b.path));
    let mut summary = ExportSummary::default();
    let mut redirects = String::new();
    let mut pages = Vec::new();
    progress.stage("exporting", pointers.len() as u64);
    for p in &pointers {
        let file = file_for(out, &p.path)?;
        match &p.target {
            Target::Page { object, content_type } => pages.push((p.path.as_str(), file, object, content_type.as_str())),
            Target::Redirect(to) => {
                let _ = writeln!(redirects, "{} {} 301", p.path, to);
                let stub = format!(
                    "<!doctype html><meta charset=utf-8><title>Moved</title><link rel=canonical href=\"{to}\"><meta http-equiv=refresh content=\"0; url={to}\"><a href=\"{to}\">Moved here</a>\n"
                );
                write(&file, stub.as_bytes())?;
                summary.redirects += 1;
                progress.advance(1);
            }
            Target::Gone => {
                let _ = writeln!(redirects, "{} /410.html 410", p.path);
                write(&file, b"<!doctype html><meta charset=utf-8><meta name=robots content=noindex><title>Gone</title><p>This page has been removed.\n")?;
                summary.redirects += 1;
                progress.advance(1);
            }
            Target::Removed => progress.advance(1),
        }
    }
    // Object storage answers each read with some latency; many reads in
    // flight keep an export of a remote bucket from taking hours.
    let mut copies = futures::stream::iter(pages)
        .map(|(path, file, object, content_type)| export_page(project, path, file, object, content_type))
        .buffer_unordered(64);
    while let Some(bytes) = copies.next().await {
        summary.bytes += bytes?;
        summary.files += 1;
        progress.advance(1);
    }
    if !redirects.is_empty() {
        write(&out.join("_redirects"), redirects.as_bytes())?;
    }
    progress.finish();
    Ok(summary)
}

/// Copies one page and its compressed variants to `file`; returns the bytes
/// written. Variants not stored yet (they follow a publish) are made here.
async fn export_page(
    project: &Project,
    path: &str,
    file: PathBuf,
    object: &ObjectRow,
    content_type: &str,
) -> Result<u64, EngineError> {
    let read = |encoding: Encoding| {
        let key = object_key(&object.hash, encoding);
        async move {
            project.objects.get(&key).await?.ok_or_else(|| {
                EngineError::Corrupt(format!("{path} points at object {key}, which is missing from storage"))
            })
        }
    };
    let identity = read(Encoding::Identity).await?;
    // Variants recorded must be there; others may be, stored after the
    // entry was written (a manifest's entries keep what was known then).
    let stored = |bit, encoding| async move {
        match object.encodings & bit {
            0 => Ok(project.objects.get(&object_key(&object.hash, encoding)).await?),
            _ => read(encoding).await.map(Some),
        }
    };
    let (gzip, brotli) =
        (stored(encodings::GZIP, Encoding::Gzip).await?, stored(encodings::BROTLI, Encoding::Brotli).await?);
    let (gzip, brotli) = if gzip.is_some() || brotli.is_some() {
        (gzip, brotli)
    } else if project.site.config.publish.compress {
        let object = Uncompressed { hash: object.hash.clone(), content_type: content_type.to_string() };
        let bytes = identity.clone();
        let e = tokio::task::spawn_blocking(move || with_variants(object, bytes))
            .await
            .map_err(|e| EngineError::Internal(format!("compression task failed: {e}")))?;
        (e.gzip, e.brotli)
    } else {
        (None, None)
    };
    let mut written = 0;
    for (encoding, bytes) in [(Encoding::Identity, Some(identity)), (Encoding::Gzip, gzip), (Encoding::Brotli, brotli)]
    {
        let Some(bytes) = bytes else { continue };
        let mut target = file.clone().into_os_string();
        target.push(encoding.suffix());
        write(Path::new(&target), &bytes)?;
        written += bytes.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_files_and_refuses_escapes() {
        let out = Path::new("/out");
        assert_eq!(file_for(out, "/").unwrap(), Path::new("/out/index.html"));
        assert_eq!(file_for(out, "/a/b/").unwrap(), Path::new("/out/a/b/index.html"));
        assert_eq!(file_for(out, "/sitemap.xml").unwrap(), Path::new("/out/sitemap.xml"));
        assert!(file_for(out, "/../etc/").is_err());
        assert!(file_for(out, "/a/../../b/").is_err());
    }
}
