//! Parity through the real components: random event batches go through
//! `ingest` into a SQLite file, are published incrementally with the real
//! renderer into an object directory, and after every batch `verify` (a full
//! build compared with the published table, the newest manifest read whole)
//! must find no difference. Batches also move documents' sites to custom
//! domains and back, which changes their canonical links, feeds, listings
//! and sitemap entries. A router following the generations' manifest roots,
//! and one loading the newest whole, must serve that table exactly, and
//! `?v=` of every generation the table it had when it was published.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use sesame_engine::{
    Debounce, Event, Located, Missing, Project, PublishLease, Publisher, Quiet, Scope, ingest, verify,
};
use sesame_router::{Entry, Router, RouterConfig, Served};
use sesame_store::{Pointer, Target};
use sqlx::AssertSqlSafe;

/// The site both parity suites build (one file, so that they cannot drift).
const CONFIG: &str = include_str!("../../site/tests/parity.toml");

const ITEM: &str = r#"<link rel=canonical href="{{ page.canonical }}"><h1>{{ doc.title }}</h1>{% if gate %}<p>gated</p>{% endif %}{{ doc.body_html }}
{% for t in doc.tags or [] %}<a href="{{ group_url('tags', t) }}">{{ t }}</a>{% endfor %} {{ doc.updated }} {{ page.noindex }}"#;
/// A listing's card, kept across publishes by `partial_cached`: a stale card
/// spliced into a listing would differ from `verify`'s full build.
const CARD: &str =
    r#"<a href="{{ item.url }}">{{ item.title }} {{ item.adult }} {{ item.domain }}</a>{{ item.body_html }}"#;
const LIST: &str = r#"<h1>{{ listing.name }} {{ group }} {{ pagination.label }}</h1>
{% for i in items %}{{ partial_cached("card.html", i) }}{% endfor %}
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
    write("templates/card.html", CARD);
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
    let mut tables = Tables::default();
    tables.record(&project).await;
    let mut stored = BTreeSet::new();
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
        // The root the Worker reads is the one the generation recorded.
        prop_assert!(report.manifest.is_empty(), "batch {n}: manifest {:#?}", report.manifest);
        prop_assert_eq!(report.pending, 0);
        tables.record(&project).await;
        assert_stored(&project, &mut stored, n).await;
        following.refresh().await.expect("follow the new roots");
        assert_serves_the_table(&project, &following, n).await;
        assert_serves_the_table(&project, &*router(&project).await, n).await;
        tables.assert_history(&following, n).await;
    }
    Ok(())
}

/// A router on the project's store and objects, loaded from the newest root.
async fn router(project: &Project) -> Arc<Router> {
    Router::load(project.store.clone(), project.objects.clone(), RouterConfig::default(), None)
        .await
        .expect("load a router")
}

/// The router's table is the published one (the newest root read whole):
/// every path, what it serves, its dependency keys and its time, and
/// nothing else.
async fn assert_serves_the_table(project: &Project, router: &Router, batch: usize) {
    let (generation, table) = sesame_engine::manifest::published(project).await.expect("the published table");
    assert_eq!(generation, project.store.latest_generation().await.expect("generation"), "batch {batch}");
    assert_eq!(router.generation(), generation, "batch {batch}");
    for p in table.values() {
        let entry = router.entry(&p.path).unwrap_or_else(|| panic!("batch {batch}: {} is not served", p.path));
        assert!(same(p, &entry), "batch {batch}: {p:?} served as {entry:?}");
    }
    assert_eq!(router.len(), table.len(), "batch {batch}: the router serves paths the table has not");
}

/// Every object the published table serves is in storage (each checked
/// once: nothing is deleted without garbage collection).
async fn assert_stored(project: &Project, checked: &mut BTreeSet<String>, batch: usize) {
    use futures::StreamExt;
    let (_, table) = sesame_engine::manifest::published(project).await.expect("the published table");
    let unchecked: Vec<(String, String)> = table
        .into_values()
        .filter_map(|p| match p.target {
            Target::Page { object, .. } if checked.insert(object.hash.clone()) => Some((p.path, object.hash)),
            _ => None,
        })
        .collect();
    let reads = unchecked.into_iter().map(|(path, hash)| async move {
        let key = sesame_objects::object_key(&hash, sesame_objects::Encoding::Identity);
        (path, hash, project.objects.get(&key).await.expect("read an object").is_some())
    });
    let mut reads = futures::stream::iter(reads).buffer_unordered(16);
    while let Some((path, hash, stored)) = reads.next().await {
        assert!(stored, "batch {batch}: {path} serves {hash}, which storage does not hold");
    }
}

/// The published table of each generation, read when it was the newest.
#[derive(Default)]
struct Tables(Vec<(u64, HashMap<String, Pointer>)>);

impl Tables {
    async fn record(&mut self, project: &Project) {
        let (generation, table) = sesame_engine::manifest::published(project).await.expect("the published table");
        self.0.push((generation, table));
    }

    /// `?v=` of every generation recorded is the table it had then: each
    /// path as it served it, and nothing for a path it did not serve.
    async fn assert_history(&self, router: &Router, batch: usize) {
        let every: BTreeSet<&String> = self.0.iter().flat_map(|(_, then)| then.keys()).collect();
        for (generation, then) in &self.0 {
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

/// What the published site serves, page by page.
async fn published(project: &Project) -> Vec<(String, String)> {
    let (_, table) = sesame_engine::manifest::published(project).await.expect("the published table");
    let mut pointers: Vec<_> = table.into_values().map(|p| (p.path, format!("{:?}", p.target))).collect();
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

/// A project published by an earlier version kept a row per page, per
/// replaced page and per object, and recorded no manifest roots: opened by
/// this version, every generation gets its root from those rows, the rows
/// go, and the router serves each generation as it was published.
#[tokio::test]
async fn a_project_with_the_per_page_rows_of_an_earlier_version_gets_roots_from_them() {
    let (dir, db) = project_dir();
    let project = Project::open(dir.path()).await.expect("open project");
    sesame_engine::build(&project, &Quiet).await.expect("first build");
    let mut tables = Tables::default();
    tables.record(&project).await;
    let upsert = |id: u32, title: &str| {
        let mut doc = serde_json::Map::new();
        doc.insert("title".into(), title.into());
        doc.insert("tags".into(), vec!["t1".to_string()].into());
        Event::Upsert { collection: "items".into(), id: id.to_string().into(), doc }
    };
    let file: Arc<str> = Arc::from("events");
    let publish = |project: Arc<Project>, events: Vec<Event>| {
        let file = file.clone();
        async move {
            let located: Vec<Located> = events
                .into_iter()
                .enumerate()
                .map(|(i, event)| Located { file: file.clone(), line: i as u64 + 1, event })
                .collect();
            ingest(&project, &located, sesame_engine::By::Operator(None), Missing::Skip, Debounce::NONE)
                .await
                .expect("ingest");
            let mut publisher = Publisher::load(&project).await.expect("load");
            let lease = PublishLease::take(&project).await.expect("lease");
            publisher.publish_all(&project, &lease, Scope::Changed, &Quiet).await.expect("publish");
            lease.release(&project).await;
        }
    };
    let project = Arc::new(project);
    publish(project.clone(), (1..=8).map(|id| upsert(id, "first")).collect()).await;
    tables.record(&project).await;
    let delete = Event::Delete { collection: "items".into(), id: "2".into() };
    let takedown = Event::Takedown { collection: "items".into(), id: "5".into() };
    publish(project.clone(), vec![upsert(3, "second"), upsert(9, "new"), delete, takedown]).await;
    tables.record(&project).await;
    // What the taken-down document's page served before: history must not serve it.
    let down = sesame_model::DocKey::new("items", "5");
    let hidden: BTreeSet<String> = tables.0[1]
        .1
        .values()
        .filter(|p| p.deps.is_page_of(&down))
        .filter_map(|p| match &p.target {
            Target::Page { object, .. } => Some(object.hash.clone()),
            _ => None,
        })
        .collect();
    assert!(!hidden.is_empty(), "item 5 had a page");

    // What an earlier version left: the tables, and no root on any generation.
    let sql = tables.as_rows_of_an_earlier_version();
    match &db {
        Some(db) => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool).await.expect("write the rows");
        }
        None => {
            let url = format!("sqlite://{}", dir.path().join(".sesame/sesame.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool).await.expect("write the rows");
        }
    }
    drop(project);

    let project = Arc::new(Project::open(dir.path()).await.expect("open and migrate"));
    assert!(!project.store.legacy_rows().await.expect("legacy rows"), "the rows are gone");
    for (generation, _) in &tables.0 {
        assert!(
            project.store.root_of(*generation).await.expect("root").is_some(),
            "generation {generation} has a root"
        );
    }
    assert_verified(&project).await;
    let root = sesame_engine::manifest::latest_root(&project).await.expect("root").expect("a root");
    let moderation: sesame_engine::manifest::Moderation =
        sesame_engine::manifest::read_blob(project.objects.as_ref(), &root.moderation).await.expect("moderation");
    for hash in &hidden {
        assert!(moderation.objects.get(hash).is_some_and(|docs| docs.contains("items/5")), "{hash}: {moderation:?}");
    }
    let following = router(&project).await;
    assert_serves_the_table(&project, &following, 0).await;
    tables.assert_history(&following, 0).await;

    publish(project.clone(), vec![upsert(4, "third")]).await;
    tables.record(&project).await;
    assert_verified(&project).await;
    following.refresh().await.expect("refresh");
    assert_serves_the_table(&project, &following, 1).await;
    tables.assert_history(&following, 1).await;
}

impl Tables {
    /// SQL that writes the recorded tables as an earlier version kept them:
    /// `pointer_history` (a row where a path changed; a tombstone where it
    /// went), `pointers` (the newest), `objects`; and no generation's root.
    fn as_rows_of_an_earlier_version(&self) -> String {
        let text = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let columns = |p: &Pointer| match &p.target {
            Target::Page { object, content_type } => {
                format!("200, {}, {}, NULL, {}", text(&object.hash), text(content_type), text(&p.deps.to_string()))
            }
            Target::Redirect(to) => format!("301, NULL, NULL, {}, {}", text(to), text(&p.deps.to_string())),
            Target::Gone => format!("410, NULL, NULL, NULL, {}", text(&p.deps.to_string())),
            Target::Removed => "404, NULL, NULL, NULL, ''".to_string(),
        };
        let mut sql = String::from(
            "CREATE TABLE objects (hash TEXT PRIMARY KEY, size BIGINT NOT NULL, encodings BIGINT NOT NULL, \
             created BIGINT NOT NULL, refs BIGINT NOT NULL DEFAULT 0, released BIGINT);\n\
             CREATE TABLE pointers (path TEXT PRIMARY KEY, kind BIGINT NOT NULL, hash TEXT, content_type TEXT, \
             location TEXT, deps TEXT NOT NULL DEFAULT '', generation BIGINT NOT NULL, modified BIGINT NOT NULL);\n\
             CREATE TABLE pointer_history (path TEXT NOT NULL, generation BIGINT NOT NULL, kind BIGINT NOT NULL, \
             hash TEXT, content_type TEXT, location TEXT, deps TEXT NOT NULL DEFAULT '', PRIMARY KEY (path, generation));\n\
             UPDATE generations SET root = NULL;\n",
        );
        let mut before: HashMap<String, Pointer> = HashMap::new();
        let mut objects = BTreeSet::new();
        for (generation, table) in &self.0 {
            for p in table.values() {
                if before
                    .get(&p.path)
                    .is_none_or(|b| (&b.target, &b.deps, b.modified) != (&p.target, &p.deps, p.modified))
                {
                    sql += &format!(
                        "INSERT INTO pointer_history (path, generation, kind, hash, content_type, location, deps) VALUES ({}, {generation}, {});\n",
                        text(&p.path),
                        columns(p)
                    );
                }
                if let Target::Page { object, .. } = &p.target {
                    objects.insert((object.hash.clone(), object.size, object.encodings));
                }
            }
            for path in before.keys().filter(|path| !table.contains_key(*path)) {
                sql += &format!(
                    "INSERT INTO pointer_history (path, generation, kind, deps) VALUES ({}, {generation}, 404, '');\n",
                    text(path)
                );
            }
            before = table.clone();
        }
        let latest = self.0.last().map_or(0, |(g, _)| *g);
        for p in before.values() {
            sql += &format!(
                "INSERT INTO pointers (path, kind, hash, content_type, location, deps, generation, modified) VALUES ({}, {}, {latest}, {});\n",
                text(&p.path),
                columns(p),
                p.modified
            );
        }
        for (hash, size, encodings) in objects {
            sql += &format!(
                "INSERT INTO objects (hash, size, encodings, created) VALUES ({}, {size}, {encodings}, 0);\n",
                text(&hash)
            );
        }
        sql
    }
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
