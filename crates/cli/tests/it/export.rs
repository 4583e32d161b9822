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
