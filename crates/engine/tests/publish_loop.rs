//! The publisher and the publish lease, on a real SQLite file and object
//! directory: a busy publisher keeps the lease between batches and gives it back
//! once idle; other holders in the same process or another process wait.

use std::sync::Arc;
use std::time::Duration;

use sesame_engine::{
    Debounce, EngineError, Event, Located, Missing, Project, PublishLease, PublishLoop, PublishLoopHandle, Quiet,
    collect_garbage, ingest,
};

const CONFIG: &str = r#"
base_url = "https://example.org"
[collections.items]
title = "title"

[[routes]]
kind = "document"
collection = "items"
path = "/items/{id}/"
template = "item.html"
"#;

fn project_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("sesame.toml"), CONFIG).expect("config");
    std::fs::create_dir(dir.path().join("templates")).expect("templates");
    std::fs::write(dir.path().join("templates/item.html"), "<h1>{{ doc.title }}</h1>").expect("template");
    dir
}

async fn write(project: &Project, id: &str, title: &str) {
    let mut doc = serde_json::Map::new();
    doc.insert("title".into(), title.into());
    let event = Event::Upsert { collection: "items".into(), id: id.into(), doc };
    let located = Located { file: Arc::from("test"), line: 1, event };
    ingest(project, &[located], sesame_engine::By::Operator(None), Missing::Skip, Debounce::NONE)
        .await
        .expect("ingest");
}

fn busy<T: std::fmt::Debug>(result: Result<T, EngineError>) -> bool {
    matches!(result, Err(EngineError::Busy(_)))
}

#[tokio::test]
async fn a_busy_worker_keeps_the_publish_lease_until_it_has_been_idle() {
    let dir = project_dir();
    let project = Arc::new(Project::open(dir.path()).await.expect("open"));
    sesame_engine::build(&project, &Quiet).await.expect("build");
    // A second opening of the same project stands for another process.
    let other = Project::open(dir.path()).await.expect("open again");
    let mut publisher = PublishLoop::new(project.clone(), PublishLoopHandle::default()).await.expect("publisher");

    assert_eq!(publisher.tick().await.expect("idle tick"), 0);
    let lease = PublishLease::take(&other).await.expect("an idle publisher does not hold the lease");
    lease.release(&other).await;

    write(&project, "a", "First").await;
    assert_eq!(publisher.tick().await.expect("tick"), 1, "one generation");
    write(&project, "b", "Second").await;
    assert_eq!(publisher.tick().await.expect("tick"), 1, "published under the lease it kept");
    assert!(busy(PublishLease::take(&other).await), "another process waits while the publisher is busy");
    assert!(
        busy(collect_garbage(&project, false, Duration::ZERO).await),
        "so does garbage collection in the publisher's own process"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(publisher.tick().await.expect("idle tick"), 0);
    let lease = PublishLease::take(&other).await.expect("given back after a second with nothing to publish");
    lease.release(&other).await;
    collect_garbage(&project, false, Duration::ZERO).await.expect("garbage collection runs once the publisher is idle");
}

#[tokio::test]
async fn one_process_never_holds_the_lease_twice() {
    let dir = project_dir();
    let project = Project::open(dir.path()).await.expect("open");
    let lease = PublishLease::take(&project).await.expect("lease");
    assert!(busy(PublishLease::take(&project).await), "a second task of the same process must wait");
    lease.release(&project).await;
    PublishLease::take(&project).await.expect("free again").release(&project).await;
}

/// Schedules due at the same moment land as one generation, each once, even
/// with two publishers (two openings of the project) ticking side by side.
#[tokio::test]
async fn due_schedules_land_once_each_in_one_generation_whoever_ticks() {
    let dir = project_dir();
    let project = Arc::new(Project::open(dir.path()).await.expect("open"));
    sesame_engine::build(&project, &Quiet).await.expect("build");
    let other = Arc::new(Project::open(dir.path()).await.expect("open again"));
    let admin = sesame_engine::Actor { account: None, handle: "admin".into(), admin: true };
    let due = sesame_model::time::now_ms() + 1500;
    const N: usize = 300;
    for i in 0..N {
        let key = sesame_model::DocKey::new("items", format!("i{i}"));
        let mut doc = serde_json::Map::new();
        doc.insert("title".into(), format!("Item {i}").into());
        sesame_engine::drafts::save_draft(&project, &admin, &key, sesame_model::Op::Put(doc)).await.expect("draft");
        let at = sesame_engine::drafts::ScheduleRequest { publish_at: Some(due), unpublish_at: None };
        sesame_engine::drafts::set_schedule(&project, &admin, &key, at).await.expect("schedule");
    }
    let mut first = PublishLoop::new(project.clone(), PublishLoopHandle::default()).await.expect("publisher");
    let mut second = PublishLoop::new(other.clone(), PublishLoopHandle::default()).await.expect("publisher");
    assert_eq!(first.tick().await.expect("tick"), 0, "nothing is due yet");
    let wait = due - sesame_model::time::now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let (a, b) = tokio::join!(first.tick(), second.tick());
    assert_eq!(a.expect("tick") + b.expect("tick"), 1, "one generation publishes them all");
    let generations = project.store.generations(10).await.expect("generations");
    let events: u64 = generations[0].summary["events"].as_u64().unwrap_or_default();
    assert_eq!(events, N as u64, "each schedule landed once: {:?}", generations[0].summary);
    for i in 0..N {
        let key = sesame_model::DocKey::new("items", format!("i{i}"));
        assert!(project.store.draft(&key).await.expect("draft").is_none(), "the draft of {key} was published");
        assert!(project.store.schedules(&key).await.expect("schedules").is_empty());
    }
    assert_eq!(first.tick().await.expect("tick") + second.tick().await.expect("tick"), 0, "nothing lands twice");
}

/// 10,000 schedules due at the same second (what 100 accounts at their limit
/// of 100 each can set) all land, each once, in batches the publisher takes
/// in its stride, and publish together.
#[tokio::test]
async fn ten_thousand_schedules_due_at_one_second_all_land_once() {
    use sesame_store::{ScheduleAction, ScheduleRow};
    const N: usize = 10_000;
    let dir = project_dir();
    let project = Arc::new(Project::open(dir.path()).await.expect("open"));
    sesame_engine::build(&project, &Quiet).await.expect("build");
    // Set up in one transaction: what `set_schedule` checks is tested above;
    // here the volume is what matters. The setup takes 2-3 s here and over 4 s
    // on a loaded CI host: the earliest schedule is due well after it.
    let due = sesame_model::time::now_ms() + 10_000;
    let mut tx = project.store.begin_write(Debounce::NONE).await.expect("begin");
    for i in 0..N {
        let key = sesame_model::DocKey::new("items", format!("i{i}"));
        let mut data = serde_json::Map::new();
        data.insert("title".into(), format!("Item {i}").into());
        let doc = sesame_model::Document {
            key: key.clone(),
            owner: None,
            created: due / 1000,
            updated: due / 1000,
            status: sesame_model::Status::Live,
            flags: Vec::new(),
            data: data.into(),
            media: Default::default(),
            domain: None,
        };
        tx.put_draft(&doc, None).await.expect("draft");
        let row = ScheduleRow {
            key,
            action: ScheduleAction::Publish,
            due: due - (i as i64 % 1000),
            account: None,
            author: "admin".into(),
            admin: true,
            error: None,
        };
        tx.put_schedule(&row).await.expect("schedule");
    }
    tx.commit().await.expect("commit");

    let mut publisher = PublishLoop::new(project.clone(), PublishLoopHandle::default()).await.expect("publisher");
    let early = due - 999 - sesame_model::time::now_ms();
    assert!(early > 0, "the setup took until {}ms past the earliest schedule", -early);
    assert_eq!(publisher.tick().await.expect("tick"), 0, "nothing is due yet");
    let wait = due - sesame_model::time::now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let started = std::time::Instant::now();
    let mut generations = 0;
    while !project.store.due_schedules(i64::MAX, 1).await.expect("due").is_empty() || generations == 0 {
        generations += publisher.tick().await.expect("tick");
    }
    let took = started.elapsed();
    eprintln!("{N} schedules due at one second published in {took:?} as {generations} generation(s)");
    let summaries = project.store.generations(10).await.expect("generations");
    let events: u64 =
        summaries.iter().take(generations).map(|g| g.summary["events"].as_u64().unwrap_or_default()).sum();
    assert_eq!(events, N as u64, "each schedule landed once");
    assert!(project.store.drafts_of(None, 10).await.expect("drafts").is_empty(), "every draft was published");
    for i in [0, N / 2, N - 1] {
        let key = sesame_model::DocKey::new("items", format!("i{i}"));
        assert!(project.store.document(&key).await.expect("get").is_some(), "{key} is published");
    }
    assert_eq!(publisher.tick().await.expect("tick"), 0, "nothing lands twice");
}

/// Scheduled changes publish on time: 100 schedules due one every 30 ms,
/// with the publisher running as `serve` runs it, are each published once,
/// within a second of their time at p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_changes_publish_within_a_second_of_their_time_at_p99() {
    const N: usize = 100;
    let dir = project_dir();
    let project = Arc::new(Project::open(dir.path()).await.expect("open"));
    sesame_engine::build(&project, &Quiet).await.expect("build");
    let admin = sesame_engine::Actor { account: None, handle: "admin".into(), admin: true };
    let first = sesame_model::time::now_ms() + 3_000;
    let mut due = std::collections::HashMap::new();
    for i in 0..N {
        let key = sesame_model::DocKey::new("items", format!("i{i}"));
        let mut doc = serde_json::Map::new();
        doc.insert("title".into(), format!("Item {i}").into());
        sesame_engine::drafts::save_draft(&project, &admin, &key, sesame_model::Op::Put(doc)).await.expect("draft");
        let at = first + 30 * i as i64;
        let request = sesame_engine::drafts::ScheduleRequest { publish_at: Some(at), unpublish_at: None };
        sesame_engine::drafts::set_schedule(&project, &admin, &key, request).await.expect("schedule");
        due.insert(key, at);
    }
    assert!(sesame_model::time::now_ms() < first, "set up before the first is due");

    let published = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut publisher = PublishLoop::new(project.clone(), PublishLoopHandle::default()).await.expect("publisher");
    publisher.on_published({
        let published = published.clone();
        move |outcome| {
            let now = sesame_model::time::now_ms();
            let mut published = published.lock().expect("lock");
            published.extend(outcome.docs.iter().map(|key| (key.clone(), now)));
        }
    });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(publisher.run(shutdown));
    let all = async {
        while published.lock().expect("lock").len() < N {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let waited = tokio::time::timeout(Duration::from_secs(30), all).await;
    stop.send(true).expect("stop");
    running.await.expect("publisher");
    waited.expect("every schedule is published");

    let published = published.lock().expect("lock").clone();
    assert_eq!(published.len(), N, "each once");
    let mut late: Vec<i64> = published.iter().map(|(key, at)| at - due[key]).collect();
    late.sort_unstable();
    let (p50, p99, max) = (late[N / 2], late[N * 99 / 100 - 1], late[N - 1]);
    eprintln!("published after their time: p50 {p50} ms, p99 {p99} ms, max {max} ms");
    assert!(late[0] >= 0, "none before its time: {late:?}");
    assert!(p99 <= 1_000, "p99 {p99} ms late: {late:?}");
}
