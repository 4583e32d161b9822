//! `sesame export` writes a tree any static server can serve, and a rebuild
//! without changes writes nothing.

use crate::support::{built_example, ok};

#[test]
fn export_writes_a_servable_tree() {
    let dir = built_example("gallery");
    let out = tempfile::tempdir().expect("temp dir");
    let summary = ok(dir.path(), &["export", out.path().to_str().expect("utf-8")]);
    assert!(summary.starts_with("exported "), "{summary}");
    for file in [
        "index.html",
        "sprites/index.html",
        "sprites/132/index.html",
        "sprites/page/1/index.html",
        "sitemap.xml",
        "robots.txt",
        "static/style.css",
        "404.html",
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    assert!(out.path().join("sprites/index.html.gz").is_file(), "precompressed variant beside the page");
    let page = std::fs::read_to_string(out.path().join("sprites/132/index.html")).expect("read");
    assert!(page.contains("A small example package"));
}

#[test]
fn rebuild_without_changes_writes_nothing() {
    let dir = built_example("microsites");
    let again = ok(dir.path(), &["build"]);
    assert!(again.contains(", 0 changed, 0 objects written"), "{again}");
}

/// A project whose objects are a directory of files (as before the embedded
/// store) keeps serving from it, and `migrate-objects` moves them into the
/// embedded store, after which the directory can go.
#[test]
fn a_directory_of_files_keeps_working_and_migrates_into_the_embedded_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    ok(d, &["init", "--example", "gallery"]);
    // Imported and built as an older sesame did: one file per object in
    // .sesame/objects.
    let content = d.join("content/sprites.ndjson.gz");
    let as_before = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::bin())
            .arg("--project")
            .arg(d)
            .args(args)
            .env("SESAME_STORAGE_URL", "file://.sesame/objects")
            .env_remove("SESAME_DATABASE_URL")
            .output()
            .expect("run sesame");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    as_before(&["import", content.to_str().expect("utf-8"), "--collection", "sprites"]);
    as_before(&["build"]);
    let files = d.join(".sesame/objects");
    assert!(std::fs::read_dir(&files).expect("objects").count() > 10, "one folder per hash prefix");
    assert!(!d.join(".sesame/objects.lmdb").exists());
    // Without any setting, the project still reads its files.
    assert!(ok(d, &["verify"]).contains("identical"));

    let out = ok(d, &["migrate-objects", "file://.sesame/objects", "lmdb://.sesame/objects.lmdb"]);
    assert!(out.starts_with("copied ") && !out.starts_with("copied 0 "), "{out}");
    let again = ok(d, &["migrate-objects", "file://.sesame/objects", "lmdb://.sesame/objects.lmdb"]);
    assert!(again.starts_with(&out[..out.find(" objects").expect("count")]), "idempotent: {again}");
    std::fs::remove_dir_all(&files).expect("remove the files");
    assert!(ok(d, &["verify"]).contains("identical"), "every object is in the embedded store");
    let export = tempfile::tempdir().expect("temp dir");
    ok(d, &["export", export.path().to_str().expect("utf-8")]);
    let page = std::fs::read_to_string(export.path().join("sprites/132/index.html")).expect("read");
    assert!(page.contains("A small example package"));
    assert!(!files.exists(), "nothing recreated the directory of files");

    let same =
        crate::support::sesame(d, &["migrate-objects", "lmdb://.sesame/objects.lmdb", "lmdb://.sesame/objects.lmdb"]);
    assert!(!same.status.success() && String::from_utf8_lossy(&same.stderr).contains("same storage"));
}
