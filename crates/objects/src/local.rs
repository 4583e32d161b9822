//! Writing objects of a local store as plain files.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ObjectError;

/// Distinguishes the staging files of concurrent writes in this process.
static STAGING: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` under `key` (`ab/abcdef….br`) below `root`: to a staging
/// file beside it first, then renamed into place. With `skip_existing`, an
/// object already in place is kept: by content addressing it holds these
/// bytes (it was renamed there whole), and replacing a file costs more than
/// checking. Bulk writes of objects known to be missing skip the check.
pub(crate) fn write(root: &Path, key: &str, bytes: &[u8], skip_existing: bool) -> Result<(), ObjectError> {
    let safe = !key.is_empty()
        && key.split('/').all(|part| !part.is_empty() && !part.starts_with('.'))
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '.' || c == '-');
    if !safe {
        return Err(ObjectError::Io {
            doing: "writing",
            path: root.join(key),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an object key"),
        });
    }
    let path = root.join(key);
    if skip_existing && path.is_file() {
        return Ok(());
    }
    let io = |doing: &'static str, source: std::io::Error| ObjectError::Io { doing, path: path.clone(), source };
    let staging = root.join(format!("{key}.{}-{}.tmp", std::process::id(), STAGING.fetch_add(1, Ordering::Relaxed)));
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).open(&staging);
    let mut file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io("creating the folder of", e))?;
            }
            create()
        }
        other => other,
    }
    .map_err(|e| io("creating", e))?;
    if let Err(e) = file.write_all(bytes) {
        let _ = std::fs::remove_file(&staging);
        return Err(io("writing", e));
    }
    drop(file);
    std::fs::rename(&staging, &path).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        io("renaming into", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_could_leave_the_store() {
        let dir = tempfile::tempdir().unwrap();
        for key in ["../x", "ab/../../x", "/etc/passwd", "ab/.hidden", "", "ab//c", "a b"] {
            assert!(write(dir.path(), key, b"x", false).is_err(), "{key:?}");
        }
        write(dir.path(), "ab/abc.br", b"x", false).unwrap();
        write(dir.path(), "ab/abc.br", b"y", true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ab/abc.br")).unwrap(), b"x", "kept");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("ab")).unwrap().collect();
        assert_eq!(left.len(), 1, "no staging file left behind");
    }
}
