//! Parity through the real components: random event batches go through
//! `ingest` into a SQLite file, are published incrementally with the real
//! renderer into an object directory, and after every batch `verify` (a full
//! build compared with the live pointers) must find no difference. Batches
//! also move documents' sites to custom domains and back, which changes
//! their canonical links, feeds, listings and sitemap entries. A router
//! following the generations' manifest roots, and one loading the newest
//! whole, must serve the live pointers exactly.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use sesame_engine::{
    Debounce, Event, Located, Missing, Project, PublishLease, Publisher, Quiet, Scope, ingest, verify,
};
use sesame_router::{Entry, Router, RouterConfig, Served};
use sesame_store::{Pointer, Target};

/// The site both parity suites build (one file, so that they cannot drift).
const CONFIG: &str = include_str!("../../site/tests/parity.toml");

const ITEM: &str = r#"<link rel=canonical href="{{ page.canonical }}"><h1>{{ doc.title }}</h1>{% if gate %}<p>gated</p>{% endif %}{{ doc.body_html }}
{% for t in doc.tags or [] %}<a href="{{ group_url('tags', t) }}">{{ t }}</a>{% endfor %} {{ doc.updated }} {{ page.noindex }}"#;
const LIST: &str = r#"<h1>{{ listing.name }} {{ group }} {{ pagination.label }}</h1>
{% for i in items %}<a href="{{ i.url }}">{{ i.title }} {{ i.adult }} {{ i.domain }}</a>{% endfor %}
{% for l in [pagination.newest, pagination.newer, pagination.older, pagination.oldest, pagination.up] %}{% if l %}<a href="{{ l.href }}">{{ l.label }}</a>{% endif %}{% endfor %}
{% for j in pagination.jumps %}<a href="{{ j.href }}">{{ j.label }}</a>{% endfor %}{% for b in buckets %}<a href="{{ b.href }}">{{ b.label }}</a>{% endfor %}"#;

/// A project directory (and, on the PostgreSQL backend, its database).
fn project_dir() -> (tempfile::TempDir, Option<sesame_testkit::PgDatabase>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    let (config, db) = match sesame_testkit::scale_urls() {
        Some((db, storage)) => (sesame_testkit::with_backend(CONFIG, &db.url, &storage), Some(db)),
        None => (CONFIG.to_string(), None),
    };
    write("sesame.toml", &config);
    write("templates/item.html", ITEM);
    write("templates/list.html", LIST);
    write("templates/index.html", "<h1>home</h1>");
    write("static/s.css", "body{}");
    (dir, db)
}

fn event() -> impl Strategy<Value = Event> {
    let id = (0..10u8).prop_map(|i| serde_json::Value::from(i.to_string()));
    let upsert = (
        id.clone(),
        0..3u8,
        prop::option::weighted(0.8, 0..4u8),
        prop::collection::vec(0..3u8, 0..3),
        0..3u8,
        prop::option::of(0..3u8),
    )
        .prop_map(|(id, title, date, tags, owner, slug)| {
            let mut doc = serde_json::Map::new();
            doc.insert("title".into(), format!("Title <{title}>").into());
            doc.insert("body".into(), format!("*{title}* <script>x</script>").into());
            if let Some(d) = date {
                doc.insert("date".into(), format!("2024-0{}-15", 1 + d).into());
            }
            doc.insert("tags".into(), tags.iter().map(|t| format!("t{t}")).collect::<Vec<_>>().into());
            doc.insert("owner".into(), format!("o{owner}").into());
            if let Some(s) = slug {
                doc.insert("slug".into(), format!("s{s}").into());
            }
            Event::Upsert { collection: "items".into(), id, doc }
        });
    let c = || "items".to_string();
    prop_oneof![
        5 => upsert,
        1 => id.clone().prop_map(move |id| Event::Delete { collection: c(), id }),
        1 => id.clone().prop_map(move |id| Event::Takedown { collection: c(), id }),
        1 => id.clone().prop_map(move |id| Event::Restore { collection: c(), id }),
        1 => (id, any::<bool>()).prop_map(move |(id, value)| Event::Flag { collection: c(), id, flag: "adult".into(), value }),
    ]
}

/// A change of the main property: an event, or the platform setting or
/// clearing the custom domain of a document's site.
#[derive(Debug, Clone)]
enum Change {
    Event(Event),
    Domain(u8, Option<u8>),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => event().prop_map(Change::Event),
        1 => (0..10u8, prop::option::of(0..2u8)).prop_map(|(id, domain)| Change::Domain(id, domain)),
    ]
}

async fn check(dir: &Path, batches: Vec<Vec<Change>>) -> Result<(), TestCaseError> {
    let project = Project::open(dir).await.expect("open project");
    sesame_engine::build(&project, &Quiet).await.expect("first build");
    let following = router(&project).await;
    let mut publisher = Publisher::load(&project).await.expect("load");
    let file: Arc<str> = Arc::from("events");
    for (n, batch) in batches.into_iter().enumerate() {
        let mut located = Vec::new();
        let mut domains = Vec::new();
        for (i, change) in batch.into_iter().enumerate() {
            match change {
                Change::Event(event) => located.push(Located { file: file.clone(), line: i as u64 + 1, event }),
                Change::Domain(id, d) => domains.push((id, d.map(|d| format!("site{d}.test")))),
            }
        }
        ingest(&project, &located, sesame_engine::By::Operator(None), Missing::Skip, Debounce::NONE)
            .await
            .expect("ingest");
        for (id, domain) in domains {
            let key = sesame_model::DocKey::new("items", id.to_string());
            sesame_engine::set_domain(&project, &key, domain.as_deref()).await.expect("set a domain");
        }
        let lease = PublishLease::take(&project).await.expect("lease");
        publisher.publish_all(&project, &lease, Scope::Changed, &Quiet).await.expect("publish");
        lease.release(&project).await;
        let report = verify(&project, &Quiet).await.expect("verify");
        prop_assert!(report.differences.is_empty(), "batch {n}: {:#?}", report.differences);
        // The manifest each publish staged before its commit is the table
        // the commit wrote.
        prop_assert!(report.manifest.is_empty(), "batch {n}: manifest {:#?}", report.manifest);
        prop_assert_eq!(report.pending, 0);
        following.refresh().await.expect("follow the new roots");
        assert_serves_the_pointers(&project, &following, n).await;
        assert_serves_the_pointers(&project, &*router(&project).await, n).await;
        assert_history_is_the_pointer_history(&project, &following, n).await;
    }
    Ok(())
}

/// A router on the project's store and objects, loaded from the newest root.
async fn router(project: &Project) -> Arc<Router> {
    Router::load(project.store.clone(), project.objects.clone(), RouterConfig::default(), None)
        .await
        .expect("load a router")
}

/// The router's table is the live pointers: every path, what it serves,
/// its dependency keys and its time, and nothing else.
async fn assert_serves_the_pointers(project: &Project, router: &Router, batch: usize) {
    let pointers = project.store.pointers().await.expect("pointers");
    let live: Vec<_> = pointers.iter().filter(|p| p.target != Target::Removed).collect();
    assert_eq!(router.generation(), project.store.latest_generation().await.expect("generation"), "batch {batch}");
    for p in &live {
        let entry = router.entry(&p.path).unwrap_or_else(|| panic!("batch {batch}: {} is not served", p.path));
        assert!(same(p, &entry), "batch {batch}: {p:?} served as {entry:?}");
    }
    assert_eq!(router.len(), live.len(), "batch {batch}: the router serves paths no pointer has");
}

/// `?v=` of every generation, from the roots they recorded, is the pointer
/// history: each path as that generation served it, and nothing for a path
/// it did not serve.
async fn assert_history_is_the_pointer_history(project: &Project, router: &Router, batch: usize) {
    let latest = project.store.latest_generation().await.expect("generation");
    let mut generations = Vec::new();
    for generation in 1..=latest {
        let then: HashMap<String, Pointer> = project
            .store
            .pointers_as_of(generation)
            .await
            .expect("history")
            .into_iter()
            .map(|p| (p.path.clone(), p))
            .collect();
        generations.push((generation, then));
    }
    let every: BTreeSet<&String> = generations.iter().flat_map(|(_, then)| then.keys()).collect();
    for (generation, then) in &generations {
        for path in &every {
            let served = router.entry_at(path, *generation).await.expect("a retained generation");
            match (then.get(*path), served) {
                (Some(p), Some(entry)) => {
                    assert!(same(p, &entry), "batch {batch}: {path} at {generation}: {p:?} served as {entry:?}")
                }
                (None, None) => {}
                (p, entry) => panic!("batch {batch}: {path} at {generation}: {p:?} served as {entry:?}"),
            }
        }
    }
}

/// Whether the router's entry serves what the pointer says.
fn same(p: &Pointer, entry: &Entry) -> bool {
    let target = match (&p.target, &entry.served) {
        (Target::Page { object, content_type }, Served::Page { object: o, content_type: t }) => {
            o.hash().as_str() == object.hash && o.size == object.size && t.to_str().ok() == Some(content_type)
        }
        (Target::Redirect(to), Served::Redirect(t)) => **t == **to,
        (Target::Gone, Served::Gone) => true,
        _ => false,
    };
    target && entry.deps == p.deps && entry.modified == p.modified
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn published_site_matches_a_full_build_after_every_batch(
        batches in prop::collection::vec(prop::collection::vec(change(), 1..5), 1..7),
    ) {
        let (dir, _db) = project_dir();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(check(dir.path(), batches))?;
    }
}

/// A step of the drafts property: a published change, or a draft of one of
/// the same documents that must never reach the site.
#[derive(Debug, Clone)]
enum Step {
    Publish(Event),
    /// Saves a draft titled with a marker, scheduled a day ahead or not.
    Draft {
        id: u8,
        scheduled: bool,
    },
    Discard {
        id: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => event().prop_map(Step::Publish),
        2 => (0..10u8, any::<bool>()).prop_map(|(id, scheduled)| Step::Draft { id, scheduled }),
        1 => (0..10u8).prop_map(|id| Step::Discard { id }),
    ]
}

/// What the published site serves, page by page: its pointers.
async fn published(project: &Project) -> Vec<(String, String)> {
    let mut pointers: Vec<_> = project
        .store
        .pointers()
        .await
        .expect("pointers")
        .into_iter()
        .map(|p| (p.path, format!("{:?}", p.target)))
        .collect();
    pointers.sort();
    pointers
}

async fn check_drafts(dir: &Path, batches: Vec<Vec<Step>>) -> Result<(), TestCaseError> {
    const MARKER: &str = "DRAFT-MARKER";
    let project = Project::open(dir).await.expect("open project");
    sesame_engine::build(&project, &Quiet).await.expect("first build");
    let mut publisher = Publisher::load(&project).await.expect("load");
    let admin = sesame_engine::Actor { account: None, handle: "admin".into(), admin: true };
    let file: Arc<str> = Arc::from("events");
    for (n, batch) in batches.into_iter().enumerate() {
        let before = published(&project).await;
        let mut events = Vec::new();
        for (i, s) in batch.into_iter().enumerate() {
            match s {
                Step::Publish(event) => events.push(Located { file: file.clone(), line: i as u64 + 1, event }),
                Step::Draft { id, scheduled } => {
                    let key = sesame_model::DocKey::new("items", id.to_string());
                    let mut doc = serde_json::Map::new();
                    doc.insert("title".into(), format!("{MARKER} {i}").into());
                    doc.insert("tags".into(), vec![format!("{MARKER}-tag")].into());
                    doc.insert("owner".into(), "o9".into());
                    sesame_engine::drafts::save_draft(&project, &admin, &key, sesame_model::Op::Put(doc))
                        .await
                        .expect("save a draft");
                    if scheduled {
                        let day = sesame_model::time::now_ms() + 86_400_000;
                        let at = sesame_engine::drafts::ScheduleRequest { publish_at: Some(day), unpublish_at: None };
                        sesame_engine::drafts::set_schedule(&project, &admin, &key, at).await.expect("schedule");
                    }
                }
                Step::Discard { id } => {
                    let key = sesame_model::DocKey::new("items", id.to_string());
                    sesame_engine::drafts::discard_draft(&project, &admin, &key).await.expect("discard");
                }
            }
        }
        let changes = !events.is_empty();
        ingest(&project, &events, sesame_engine::By::Operator(None), Missing::Skip, Debounce::NONE)
            .await
            .expect("ingest");
        let lease = PublishLease::take(&project).await.expect("lease");
        // What the publisher does each turn: schedules due land, then events.
        sesame_engine::drafts::land_due(&project, sesame_model::time::now_ms()).await.expect("land");
        publisher.publish_all(&project, &lease, Scope::Changed, &Quiet).await.expect("publish");
        lease.release(&project).await;
        if !changes {
            prop_assert_eq!(&before, &published(&project).await, "batch {}: drafts alone changed the site", n);
        }
        let report = verify(&project, &Quiet).await.expect("verify");
        prop_assert!(report.differences.is_empty(), "batch {n}: {:#?}", report.differences);
        prop_assert!(report.manifest.is_empty(), "batch {n}: manifest {:#?}", report.manifest);
        // No page, listing, sitemap or feed carries a draft's words.
        let out = tempfile::tempdir().expect("export dir");
        sesame_engine::export(&project, out.path(), &Quiet).await.expect("export");
        for entry in walk(out.path()) {
            let bytes = std::fs::read(&entry).expect("read exported file");
            prop_assert!(
                !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                "batch {n}: {} shows a draft",
                entry.display()
            );
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_draft_never_reaches_a_page_a_listing_the_sitemap_or_a_feed(
        batches in prop::collection::vec(prop::collection::vec(step(), 1..6), 1..6),
    ) {
        let (dir, _db) = project_dir();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(check_drafts(dir.path(), batches))?;
    }
}

/// A project published before generations recorded their manifest roots
/// (its rows only): the next publish writes the manifest whole from the live
/// pointer rows with the batch's changes over them, records its root, and
/// every publish after it patches that root.
#[tokio::test]
async fn a_project_from_before_manifest_roots_gets_one_from_its_rows_at_the_next_publish() {
    let (dir, db) = project_dir();
    let project = Project::open(dir.path()).await.expect("open project");
    sesame_engine::build(&project, &Quiet).await.expect("first build");
    let upsert = |id: u32, title: &str| {
        let mut doc = serde_json::Map::new();
        doc.insert("title".into(), title.into());
        doc.insert("tags".into(), vec!["t1".to_string()].into());
        Event::Upsert { collection: "items".into(), id: id.to_string().into(), doc }
    };
    let file: Arc<str> = Arc::from("events");
    let publish = |events: Vec<Event>| {
        let (project, file) = (&project, file.clone());
        async move {
            let located: Vec<Located> = events
                .into_iter()
                .enumerate()
                .map(|(i, event)| Located { file: file.clone(), line: i as u64 + 1, event })
                .collect();
            ingest(project, &located, sesame_engine::By::Operator(None), Missing::Skip, Debounce::NONE)
                .await
                .expect("ingest");
            let mut publisher = Publisher::load(project).await.expect("load");
            let lease = PublishLease::take(project).await.expect("lease");
            publisher.publish_all(project, &lease, Scope::Changed, &Quiet).await.expect("publish");
            lease.release(project).await;
        }
    };
    publish((1..=8).map(|id| upsert(id, "first")).collect()).await;

    // What an older sesame left: rows, and no root recorded on any generation.
    let sql = "UPDATE generations SET root = NULL";
    match &db {
        Some(db) => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            sqlx::query(sql).execute(&pool).await.expect("forget the roots");
        }
        None => {
            let url = format!("sqlite://{}", dir.path().join(".sesame/sesame.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
            sqlx::query(sql).execute(&pool).await.expect("forget the roots");
        }
    }
    let report = verify(&project, &Quiet).await.expect("verify");
    assert_eq!(report.manifest.len(), 1, "no root recorded: {:?}", report.manifest);
    // Until then the router serves the rows.
    let following = router(&project).await;
    assert_serves_the_pointers(&project, &following, 0).await;

    publish(vec![upsert(3, "second"), upsert(9, "new")]).await;
    let (generation, root) = project.store.latest_root().await.expect("latest root");
    assert!(root.is_some(), "generation {generation} recorded its root");
    assert_verified(&project).await;
    following.refresh().await.expect("refresh");
    assert_serves_the_pointers(&project, &following, 1).await;

    publish(vec![upsert(4, "third")]).await;
    assert_verified(&project).await;
    following.refresh().await.expect("refresh");
    assert_serves_the_pointers(&project, &following, 2).await;
}

/// `verify` finds the pages and the manifest as a full build makes them.
async fn assert_verified(project: &Project) {
    let report = verify(project, &Quiet).await.expect("verify");
    assert!(
        report.differences.is_empty() && report.manifest.is_empty(),
        "{:?} {:?}",
        report.differences,
        report.manifest
    );
}
