//! The router's answers, in process: a real SQLite file and a real object
//! directory, a generation committed with its manifest root, and
//! requests sent to the router's `axum` app with `tower`'s `oneshot` (no
//! socket, no `sesame` binary). The rules themselves are unit-tested on the
//! shared vectors (`src/plan.rs`); these check that the lookups and reads
//! around them send what the plan says.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use sesame_manifest::{Blobs, PathEntry};
use sesame_model::{Deps, ServeRules};
use sesame_objects::{Encoding, ObjectStorage, compress, object_key};
use sesame_router::{Router, RouterConfig};
use sesame_store::{Commit, MetaStore, ObjectRow, Pointer, PointerChange, Target};
use tower::ServiceExt;

const PAGE: &str = "/ada/";
const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NOT_FOUND_HASH: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// A published site of two pages (`/ada/` and `/404.html`) in a temporary
/// directory.
struct Site {
    _dir: tempfile::TempDir,
    store: Arc<dyn MetaStore>,
    objects: Arc<dyn ObjectStorage>,
    html: Bytes,
    /// The newest generation's table.
    table: std::sync::Mutex<BTreeMap<String, PathEntry>>,
}

impl Site {
    async fn publish() -> Site {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = sesame_store::open(&format!("sqlite://{}", dir.path().join("sesame.db").display()))
            .await
            .expect("open the SQLite store");
        let objects = sesame_objects::open(&format!("file://{}", dir.path().join("objects").display()))
            .expect("open the object directory");
        let html =
            Bytes::from(format!("<!doctype html><title>Ada</title>{}", "<p>Lighthouses and boats.</p>".repeat(40)));
        let missing = Bytes::from_static(b"<!doctype html><title>Not here</title>");
        objects.put(&object_key(HASH, Encoding::Identity), html.clone()).await.expect("put");
        objects.put(&object_key(NOT_FOUND_HASH, Encoding::Identity), missing.clone()).await.expect("put");
        objects.sync().await.expect("sync");
        let page = |path: &str, hash: &str, size: usize| PointerChange {
            path: path.into(),
            target: Target::Page {
                object: ObjectRow { hash: hash.into(), size: size as u64, encodings: 0 },
                content_type: "text/html; charset=utf-8".into(),
            },
            deps: Deps::default(),
        };
        let site = Site { _dir: dir, store, objects, html, table: Default::default() };
        let pages = vec![page(PAGE, HASH, site.html.len()), page("/404.html", NOT_FOUND_HASH, missing.len())];
        assert_eq!(site.commit(pages).await, 1);
        site
    }

    /// Commits the next generation, serving `changes` over the previous
    /// table: its manifest written whole and made durable first, then the
    /// commit that records its root (as a publish does).
    async fn commit(&self, changes: Vec<PointerChange>) -> u64 {
        let base = self.store.latest_generation().await.expect("generation");
        let created = sesame_model::time::now();
        let entries: Vec<(String, PathEntry)> = {
            let mut table = self.table.lock().expect("table");
            for c in changes {
                let pointer =
                    Pointer { path: c.path, target: c.target, deps: c.deps, generation: 0, modified: created };
                match PathEntry::of(&pointer) {
                    Some(entry) => table.insert(pointer.path, entry),
                    None => table.remove(&pointer.path),
                };
            }
            table.iter().map(|(path, entry)| (path.clone(), entry.clone())).collect()
        };
        let mut blobs = Blobs::default();
        let whole = sesame_manifest::whole(
            base + 1,
            "salt".into(),
            entries,
            &Default::default(),
            ServeRules::default(),
            256,
            &mut blobs,
        )
        .expect("encode the manifest");
        let root = blobs.add(&whole.root).expect("encode the root");
        let puts = blobs.puts.into_iter().map(|(name, bytes)| (sesame_manifest::blob_key(&name), bytes)).collect();
        self.objects.put_many(puts).await.expect("write the manifest");
        self.objects.sync().await.expect("sync");
        let commit = Commit {
            base,
            kind: "build",
            created,
            root: Some(root),
            summary: serde_json::json!({}),
            published: Vec::new(),
            seqs: Vec::new(),
            aliases_added: Vec::new(),
            aliases_removed: Vec::new(),
            events: Vec::new(),
        };
        self.store.commit(commit).await.expect("commit")
    }

    async fn router(&self, config: RouterConfig) -> Arc<Router> {
        Router::load(self.store.clone(), self.objects.clone(), config, None).await.expect("load the router")
    }
}

/// Status, the named header fields and the body of one request.
async fn ask(router: &Arc<Router>, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Vec<Option<String>>, Bytes) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.app().oneshot(request.body(Body::empty()).expect("request")).await.expect("response");
    let status = response.status();
    let fields = ["content-encoding", "etag", "content-range", "content-length", "cache-control"]
        .iter()
        .map(|name| response.headers().get(*name).map(|v| v.to_str().expect("text").to_string()))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, fields, body)
}

fn tag(suffix: &str) -> Option<String> {
    Some(format!("\"{HASH}{suffix}\""))
}

#[tokio::test]
async fn a_variant_not_stored_yet_is_not_offered_and_is_sent_once_it_is() {
    let site = Site::publish().await;
    let router = site.router(RouterConfig::default()).await;
    // Published a moment ago: the variants follow. Until they are stored,
    // identity, under identity's tag (as the edge Worker answers).
    let (status, fields, body) = ask(&router, PAGE, &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&fields[0], &fields[1]), (&None, &tag("")));
    assert_eq!(body, site.html);
    // Only brotli is stored by now: it is what is sent, to either client.
    let brotli = Bytes::from(compress(&site.html, Encoding::Brotli));
    site.objects.put(&object_key(HASH, Encoding::Brotli), brotli.clone()).await.expect("put");
    let (_, fields, body) = ask(&router, PAGE, &[("accept-encoding", "br, gzip")]).await;
    assert_eq!((fields[0].as_deref(), &fields[1]), (Some("br"), &tag(".br")));
    assert_eq!(body, brotli);
    let (_, fields, body) = ask(&router, PAGE, &[("accept-encoding", "gzip")]).await;
    assert_eq!((&fields[0], &fields[1]), (&None, &tag("")), "gzip is not stored yet");
    assert_eq!(body, site.html);
}

#[tokio::test]
async fn where_no_variants_are_stored_the_router_compresses_on_request() {
    let site = Site::publish().await;
    let router = site.router(RouterConfig { compress_on_request: true, ..RouterConfig::default() }).await;
    let (_, fields, body) = ask(&router, PAGE, &[("accept-encoding", "gzip")]).await;
    assert_eq!((fields[0].as_deref(), &fields[1]), (Some("gzip"), &tag(".gz")));
    assert_eq!(body, Bytes::from(compress(&site.html, Encoding::Gzip)), "the bytes a stored variant would hold");
}

#[tokio::test]
async fn validators_and_ranges_are_answered_from_the_plan() {
    let site = Site::publish().await;
    let router = site.router(RouterConfig::default()).await;
    let etag = tag("").expect("tag");
    let (status, fields, body) = ask(&router, PAGE, &[("if-none-match", &etag)]).await;
    assert_eq!((status, &fields[1], body.len()), (StatusCode::NOT_MODIFIED, &Some(etag.clone()), 0));
    let (status, fields, body) = ask(&router, PAGE, &[("range", "bytes=0-14"), ("accept-encoding", "br")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let range = format!("bytes 0-14/{}", site.html.len());
    assert_eq!((fields[2].as_deref(), fields[3].as_deref()), (Some(range.as_str()), Some("15")));
    assert_eq!(body, site.html.slice(0..15));
    let (status, fields, _) = ask(&router, PAGE, &[("range", "bytes=100000-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(fields[2], Some(format!("bytes */{}", site.html.len())));
    let (status, fields, _) = ask(&router, PAGE, &[("if-match", "\"other\"")]).await;
    assert_eq!((status, fields[3].as_deref()), (StatusCode::PRECONDITION_FAILED, Some("0")));
}

#[tokio::test]
async fn a_missing_page_gets_the_sites_404_page_and_history_is_immutable() {
    let site = Site::publish().await;
    let rules = ServeRules { cache_control: "public, max-age=7".into(), ..ServeRules::default() };
    let router = site.router(RouterConfig { rules, ..RouterConfig::default() }).await;
    let (status, fields, body) = ask(&router, "/nobody/", &[("if-none-match", "*")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "preconditions are for 200s only");
    assert_eq!((&fields[1], fields[4].as_deref()), (&None, Some("public, max-age=7")));
    assert!(body.starts_with(b"<!doctype html><title>Not here"));
    let (status, fields, _) = ask(&router, "/ada", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(fields[4], None);
    let (status, fields, _) = ask(&router, "/ada/?v=1", &[]).await;
    assert_eq!((status, fields[4].as_deref()), (StatusCode::OK, Some(sesame_model::serve::IMMUTABLE)));
}

#[tokio::test]
async fn a_changed_page_gets_its_new_headers_after_small_and_large_generations() {
    let site = Site::publish().await;
    let router = site.router(RouterConfig::default()).await;
    let (_, fields, _) = ask(&router, PAGE, &[]).await;
    assert_eq!(fields[1], tag(""), "the headers of this entry are kept now");
    let pointer = |path: String, hash: &str| PointerChange {
        path,
        target: Target::Page {
            object: ObjectRow { hash: hash.into(), size: 10, encodings: 0 },
            content_type: "text/plain".into(),
        },
        deps: Deps::default(),
    };
    // A small generation (applied in place), then a large one (applied to a
    // copy swapped in whole): each time the page's new object and type.
    let other = format!("\"{NOT_FOUND_HASH}\"");
    site.commit(vec![pointer(PAGE.into(), NOT_FOUND_HASH)]).await;
    assert_eq!(router.refresh().await.expect("refresh"), 2);
    let (_, fields, body) = ask(&router, PAGE, &[]).await;
    assert_eq!(
        (fields[1].as_deref(), body.as_ref()),
        (Some(other.as_str()), b"<!doctype html><title>Not here</title>".as_ref())
    );
    let mut many: Vec<PointerChange> = (0..5000).map(|i| pointer(format!("/p{i}/"), NOT_FOUND_HASH)).collect();
    many.push(pointer(PAGE.into(), HASH));
    site.commit(many).await;
    assert_eq!(router.refresh().await.expect("refresh"), 3);
    assert_eq!(router.len(), 5002);
    let (_, fields, body) = ask(&router, PAGE, &[]).await;
    assert_eq!((fields[1].clone(), body), (tag(""), site.html.clone()));
    let (status, fields, _) = ask(&router, "/p4999/", &[]).await;
    assert_eq!((status, fields[1].as_deref()), (StatusCode::OK, Some(other.as_str())));
}
