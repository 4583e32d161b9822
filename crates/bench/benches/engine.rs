//! Micro-benchmarks of the publishing path, on the gallery example and its
//! 5,000-sprite sample: render one page, plan the fan-out of one change, hash
//! and store one object, resolve a path in the router.
//!
//! Run with `cargo bench -p sesame-bench`; pass a filter to run one group,
//! e.g. `cargo bench -p sesame-bench -- plan`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sesame_config::Config;
use sesame_engine::{Project, Quiet, build, read_documents};
use sesame_model::{Change, Document};
use sesame_objects::{Encoding, LocalDir, ObjectStorage, encode, hash_hex, object_key};
use sesame_render::Renderer;
use sesame_router::{Router, RouterConfig};
use sesame_site::{ListingPage, PageId, Site, SiteState};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/projects/gallery")
}

/// The gallery example's site and its 5,000 sample sprites.
fn gallery() -> (Arc<Site>, Vec<Document>) {
    let dir = example();
    let site = Site::new(Config::load(&dir).unwrap());
    let file = std::fs::File::open(dir.join("content/sprites.ndjson.gz")).unwrap();
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let docs = read_documents(&site, reader, "sprites.ndjson.gz", "sprites").unwrap();
    (site, docs)
}

/// The example's renderer, its stylesheet linked by fingerprint.
fn renderer(site: &Arc<Site>) -> Renderer {
    let css = std::fs::read(example().join("static/style.css")).unwrap();
    let url = sesame_model::serve::fingerprinted("/static/style.css", &hash_hex(&css));
    Renderer::load(site.clone(), &example().join("templates"), [("style.css".to_string(), url)].into()).unwrap()
}

fn state(site: &Arc<Site>, docs: &[Document]) -> SiteState {
    SiteState::load(site.clone(), docs.iter().cloned(), [], []).0
}

fn retitled(doc: &Document, title: &str) -> Document {
    let mut doc = doc.clone();
    doc.data.set("title", serde_json::Value::String(title.into()));
    doc
}

fn render(c: &mut Criterion) {
    let (site, docs) = gallery();
    let state = state(&site, &docs);
    let renderer = renderer(&site);
    let listing = |name: &str, group: &str| PageId::Listing {
        route: site.listing_routes().iter().copied().find(|&ix| site.route_name(ix) == name).unwrap(),
        group: Arc::from(group),
        page: ListingPage::First,
    };
    let item = PageId::DocPath(Arc::from(site.doc_path(site.doc_routes("sprites")[0], &docs[0]).unwrap().as_str()));
    let pages = [("item_page", item), ("gallery_page", listing("gallery", "")), ("tag_page", listing("tags", "data"))];
    let mut group = c.benchmark_group("render");
    for (name, id) in pages {
        group.bench_function(name, |b| {
            b.iter(|| {
                let resolved = state.resolve(&id).unwrap();
                renderer.render(&resolved).unwrap()
            })
        });
    }
    group.finish();
}

fn plan(c: &mut Criterion) {
    let (site, docs) = gallery();
    let mut group = c.benchmark_group("plan");
    // An edit of the title, back and forth: the item page, its listing pages,
    // its sitemap file.
    let mut st = state(&site, &docs);
    let (a, b) = (Arc::new(retitled(&docs[10], "first title")), Arc::new(retitled(&docs[10], "second title")));
    let mut flip = false;
    group.bench_function("edit_one", |bench| {
        bench.iter(|| {
            flip = !flip;
            let doc = if flip { a.clone() } else { b.clone() };
            st.apply(&[Change { key: doc.key.clone(), new: Some(doc) }]).candidates.len()
        })
    });
    // A new newest sprite (a fresh id every iteration).
    let mut st = state(&site, &docs);
    let mut n = 0u64;
    group.bench_function("add_newest", |bench| {
        bench.iter(|| {
            n += 1;
            let mut doc = retitled(&docs[0], "brand new");
            doc.key = sesame_model::DocKey::new("sprites", format!("new-{n}"));
            doc.data.set("created", serde_json::Value::String("2026-11-01".into()));
            let doc = Arc::new(doc);
            st.apply(&[Change { key: doc.key.clone(), new: Some(doc) }]).candidates.len()
        })
    });
    // A batch of 50 edits (a burst coalesced into one generation).
    let batch: Vec<Change> = docs[100..150]
        .iter()
        .map(|d| {
            let doc = Arc::new(retitled(d, "edited in a batch"));
            Change { key: doc.key.clone(), new: Some(doc) }
        })
        .collect();
    group.bench_function("batch_of_50_edits", |bench| {
        bench.iter_batched(|| state(&site, &docs), |mut st| st.apply(&batch).candidates.len(), BatchSize::LargeInput)
    });
    group.finish();
}

fn objects(c: &mut Criterion) {
    let (site, docs) = gallery();
    let state = state(&site, &docs);
    let renderer = renderer(&site);
    let id = PageId::DocPath(Arc::from(site.doc_path(site.doc_routes("sprites")[0], &docs[0]).unwrap().as_str()));
    let page = match renderer.render(&state.resolve(&id).unwrap()).unwrap() {
        sesame_render::Output::Page { bytes, .. } => bytes,
        other => panic!("not a page: {other:?}"),
    };
    let html = "text/html; charset=utf-8";
    let mut group = c.benchmark_group("object");
    group.bench_function("hash", |b| b.iter(|| hash_hex(&page)));
    group.bench_function("encode_gzip_brotli", |b| b.iter(|| encode(page.clone(), html, true)));
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::open(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut n = 0u64;
    group.bench_function("hash_and_put_new", |b| {
        b.iter(|| {
            n += 1;
            let mut bytes = page.clone();
            bytes.extend_from_slice(&n.to_le_bytes());
            let encoded = encode(bytes, html, false);
            rt.block_on(store.put(&object_key(&encoded.hash, Encoding::Identity), encoded.identity)).unwrap();
        })
    });
    let held = encode(page.clone(), html, false);
    rt.block_on(store.put(&object_key(&held.hash, Encoding::Identity), held.identity.clone())).unwrap();
    group.bench_function("put_already_held", |b| {
        b.iter(|| {
            rt.block_on(store.put(&object_key(&held.hash, Encoding::Identity), Bytes::clone(&held.identity))).unwrap()
        })
    });
    group.finish();
}

fn router(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example(), dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (router, project) = rt.block_on(async {
        let project = Project::open(dir.path()).await.unwrap_or_else(|e| panic!("{e}"));
        let file = std::fs::File::open(dir.path().join("content/sprites.ndjson.gz")).unwrap();
        let reader = BufReader::new(flate2::read::GzDecoder::new(file));
        sesame_engine::import(&project, reader, "sprites.ndjson.gz", "sprites", &Quiet).await.unwrap();
        build(&project, &Quiet).await.unwrap();
        let router =
            Router::load(project.store.clone(), project.objects.clone(), RouterConfig::default(), None).await.unwrap();
        (router, project)
    });
    let (_, docs) = gallery();
    let paths: Vec<String> = docs.iter().take(1000).map(|d| format!("/sprites/{}/", d.key.id)).collect();
    assert!(paths.iter().all(|p| router.entry(p).is_some()), "every sample sprite has a page");
    let mut group = c.benchmark_group("router");
    let mut i = 0;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            router.entry(&paths[i])
        })
    });
    let entry = router.entry(&paths[0]).unwrap();
    let sesame_router::Served::Page { object, .. } = &entry.served else { panic!("a page") };
    let key = object_key(&object.hash(), Encoding::Identity);
    group.bench_function("read_object", |b| b.iter(|| rt.block_on(project.objects.get(&key)).unwrap().unwrap().len()));
    group.finish();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

criterion_group!(benches, render, plan, objects, router);
criterion_main!(benches);
