//! Behaviour every `MetaStore` backend must share: each test runs on a real
//! SQLite file and on a fresh PostgreSQL database.

// Test bodies are plain async fns (run by `on_both!`), which clippy does not
// recognise as tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use sesame_model::{AccountId, AliasRow, DocKey, Document, SeqRow, Status};
use sesame_store::{
    Author, Commit, Credential, Debounce, EventState, MediaAdded, MediaRow, MetaStore, PublishedDocs, Registration,
    Retain, Role,
};

const ANN: Author<'static> = Author { handle: "ann", account: None };

fn doc(id: &str, title: &str) -> Document {
    let mut data = serde_json::Map::new();
    data.insert("title".into(), title.into());
    Document {
        key: DocKey::new("items", id),
        owner: Some(Arc::from("ann")),
        created: 1,
        updated: 2,
        status: Status::Live,
        flags: vec!["adult".into()],
        data: data.into(),
        media: Default::default(),
        domain: None,
    }
}

/// Keeps a backend's resources alive for the test.
enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Db(#[allow(dead_code)] sesame_testkit::PgDatabase),
}

async fn sqlite() -> (Guard, Arc<dyn MetaStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let store = sesame_store::open(&url).await.expect("open store");
    (Guard::Dir(dir), store)
}

async fn postgres() -> (Guard, Arc<dyn MetaStore>) {
    let db = sesame_testkit::PgDatabase::create();
    let store = sesame_store::open(&db.url).await.expect("open store");
    (Guard::Db(db), store)
}

/// Runs a test body on both backends.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[tokio::test] async fn $name() { let (_g, store) = super::sqlite().await; super::$name(store).await; })*
        }
        mod postgres_backend {
            $(#[tokio::test] async fn $name() { let (_g, store) = super::postgres().await; super::$name(store).await; })*
        }
    };
}

on_both!(
    import_is_atomic_and_records_events,
    commits_documents_and_events_together,
    writes_are_debounced_per_document,
    accounts_tokens_and_leases,
    passwords_sessions_and_tokens,
    finding_documents_and_failed_changes,
    garbage_collection_keeps_what_retained_generations_need,
    per_page_tables_of_earlier_versions_are_dropped,
    generations_are_announced,
    generations_record_their_manifest_roots,
    a_commit_on_a_stale_base_is_refused,
    content_keeps_its_handle_until_the_operator_hands_it_over,
    a_path_belongs_to_one_document,
    media_quotas_hold_under_parallel_uploads,
    drafts_schedules_and_preview_links,
    custom_domains_are_claimed_verified_and_handed_over,
    certificates_are_ordered_within_a_budget_and_backed_off,
);

/// Generation `base + 1`, publishing `published` and completing `events`,
/// with a root named after it.
fn commit(base: u64, published: PublishedDocs, events: Vec<i64>) -> Commit {
    Commit {
        base,
        kind: "test",
        created: sesame_model::time::now(),
        root: Some(format!("root-{}", base + 1)),
        summary: serde_json::json!({"pages": 1}),
        published,
        seqs: vec![],
        aliases_added: vec![],
        aliases_removed: vec![],
        events,
    }
}

async fn import_is_atomic_and_records_events(store: Arc<dyn MetaStore>) {
    let mut tx = store.begin_import().await.unwrap();
    tx.add(&[doc("1", "a"), doc("2", "b")]).await.unwrap();
    drop(tx); // rolled back
    assert!(store.latest_snapshot().await.unwrap().docs.is_empty());
    assert_eq!(store.pending_events().await.unwrap(), 0);

    let mut tx = store.begin_import().await.unwrap();
    tx.add(&[doc("1", "a"), doc("2", "b")]).await.unwrap();
    tx.add(&[doc("1", "a2")]).await.unwrap();
    tx.commit().await.unwrap();
    let snap = store.latest_snapshot().await.unwrap();
    assert_eq!(snap.docs.len(), 2);
    // The watermark is the newest event id (PostgreSQL ids may skip those of
    // rolled-back transactions).
    let newest = store.pending(10, i64::MAX).await.unwrap().events.last().unwrap().id;
    assert_eq!(snap.watermark, newest);
    let one = snap.docs.iter().find(|d| &*d.key.id == "1").unwrap();
    assert_eq!(one.data.get_str("title").unwrap(), "a2");
    assert_eq!(one.flags, vec!["adult".to_string()]);
    assert_eq!(store.pending_events().await.unwrap(), 3);
    assert!(store.published_snapshot().await.unwrap().docs.is_empty());
}

async fn commits_documents_and_events_together(store: Arc<dyn MetaStore>) {
    let mut tx = store.begin_import().await.unwrap();
    tx.add(&[doc("1", "a")]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.latest_generation().await.unwrap(), 0);

    let key = DocKey::new("items", "1");
    let mut c = commit(0, vec![(key.clone(), Some(Arc::new(doc("1", "a"))))], vec![1]);
    c.seqs.push(SeqRow { route: "r".into(), group: String::new(), doc: key.clone(), seq: 0 });
    c.aliases_added.push(AliasRow { route: "d".into(), path: "/old/".into(), doc: key.clone() });
    let g1 = store.commit(c).await.unwrap();
    assert_eq!(g1, 1);
    assert_eq!(store.pending_events().await.unwrap(), 0);
    let published = store.published_snapshot().await.unwrap();
    assert_eq!((published.docs.len(), published.seqs.len(), published.aliases.len()), (1, 1, 1));
    assert_eq!(store.published_documents().await.unwrap(), published.docs, "the documents alone");

    let g2 = store.commit(commit(g1, vec![(key.clone(), None)], vec![])).await.unwrap();
    assert!(store.published_snapshot().await.unwrap().docs.is_empty());
    assert!(store.published_documents().await.unwrap().is_empty());
    let gens = store.generations(10).await.unwrap();
    assert_eq!(gens.iter().map(|g| g.id).collect::<Vec<_>>(), vec![g2, g1]);
    assert_eq!(gens[1].summary["pages"], 1);

    // History: document versions, by generation.
    assert_eq!(store.oldest_retained().await.unwrap(), 1, "before any garbage collection");
    let versions = store.versions(&key, 10).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| (v.generation, v.doc.is_some())).collect::<Vec<_>>(),
        vec![(2, false), (1, true)]
    );
    assert_eq!(store.version_at(&key, 1).await.unwrap().unwrap().doc.unwrap().data.get_str("title").unwrap(), "a");
    // The generation live at a time: the newest committed by then.
    let created = gens[0].created;
    assert_eq!(store.generation_at(created).await.unwrap(), g2);
    assert_eq!(store.generation_at(gens[1].created - 1).await.unwrap(), 0, "none yet");
}

async fn writes_are_debounced_per_document(store: Arc<dyn MetaStore>) {
    let debounce = Debounce { quiet_ms: 60_000, max_wait_ms: 600_000 };
    let mut tx = store.begin_write(debounce).await.unwrap();
    let first = tx.put(&doc("1", "a"), None, "upsert", Some(ANN)).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    tx.put(&doc("2", "b"), None, "upsert", Some(ANN)).await.unwrap();
    tx.commit().await.unwrap();
    let now = sesame_model::time::now_ms();
    // Only the undebounced document is due now; the other one in a minute.
    let due = store.pending(100, now + 1).await.unwrap();
    assert_eq!(due.events.iter().map(|e| &*e.key.id).collect::<Vec<_>>(), vec!["2"]);
    assert!(store.next_due().await.unwrap().unwrap() <= now + 1);
    assert_eq!(store.pending(100, now + 61_000).await.unwrap().events.len(), 2);
    // Forcing makes it due now; a failure is recorded with its reason.
    assert_eq!(store.force_due(&[DocKey::new("items", "1")]).await.unwrap(), 1);
    assert_eq!(store.pending(100, sesame_model::time::now_ms() + 1).await.unwrap().events.len(), 2);
    store.fail_events(&[first], "template exploded").await.unwrap();
    let info = store.event(first).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.error.as_deref(), info.account.as_deref()),
        (EventState::Failed, Some("template exploded"), Some("ann"))
    );
}

async fn accounts_tokens_and_leases(store: Arc<dyn MetaStore>) {
    let Registration::Created(id) =
        store.create_account("ann", Role::User, Credential::Token("hash-a"), None).await.unwrap()
    else {
        panic!("ann is new")
    };
    assert_eq!(
        store.create_account("ann", Role::Admin, Credential::Token("hash-b"), None).await.unwrap(),
        Registration::Taken
    );
    let ann = store.account_by_token("hash-a").await.unwrap().unwrap();
    assert_eq!((ann.id, ann.handle.as_str(), ann.role), (id, "ann", Role::User));
    assert!(store.account_by_token("hash-b").await.unwrap().is_none());
    let Registration::Created(bob) =
        store.create_account("bob", Role::Admin, Credential::Token("hash-c"), None).await.unwrap()
    else {
        panic!("bob is new")
    };
    assert_ne!(bob, id, "every account has its own id");
    assert_eq!(store.account_by_token("hash-c").await.unwrap().unwrap().role, Role::Admin);

    assert!(store.acquire_lease("publish", "w1", 60_000).await.unwrap());
    assert!(store.acquire_lease("publish", "w1", 60_000).await.unwrap(), "renewable by its holder");
    assert!(!store.acquire_lease("publish", "w2", 60_000).await.unwrap());
    store.release_lease("publish", "w1").await.unwrap();
    assert!(store.acquire_lease("publish", "w2", 1).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(store.acquire_lease("publish", "w1", 60_000).await.unwrap(), "an expired lease is taken over");

    // Settings beside the generations: unset, set, replaced.
    assert_eq!(store.meta("rendered_with").await.unwrap(), None);
    store.set_meta("rendered_with", "a").await.unwrap();
    store.set_meta("rendered_with", "b").await.unwrap();
    assert_eq!(store.meta("rendered_with").await.unwrap().as_deref(), Some("b"));
}

async fn passwords_sessions_and_tokens(store: Arc<dyn MetaStore>) {
    let Registration::Created(ann) =
        store.create_account("ann", Role::User, Credential::Password("$argon2id$a"), None).await.unwrap()
    else {
        panic!("ann is new")
    };
    let (account, password) = store.account_for_login("ann").await.unwrap().unwrap();
    assert_eq!((account.id, password.as_deref()), (ann, Some("$argon2id$a")));
    assert!(store.account_for_login("nobody").await.unwrap().is_none());
    assert!(store.tokens(ann).await.unwrap().is_empty(), "a browser sign-up has no token");

    // Sessions: live until they expire or end; an account keeps a bounded number.
    let later = sesame_model::time::now() + 3600;
    store.start_session("s1", ann, later).await.unwrap();
    store.start_session("gone", ann, sesame_model::time::now() - 1).await.unwrap();
    assert_eq!(store.session_account("s1").await.unwrap().unwrap().handle, "ann");
    assert!(store.session_account("gone").await.unwrap().is_none(), "expired");
    store.end_session("s1").await.unwrap();
    assert!(store.session_account("s1").await.unwrap().is_none(), "ended");
    for i in 0..sesame_store::MAX_SESSIONS + 5 {
        store.start_session(&format!("many-{i}"), ann, later).await.unwrap();
    }
    let live = futures_count(&store, (0..sesame_store::MAX_SESSIONS + 5).map(|i| format!("many-{i}"))).await;
    assert_eq!(live, sesame_store::MAX_SESSIONS as usize, "sessions kept");
    assert!(store.session_account(&format!("many-{}", sesame_store::MAX_SESSIONS + 4)).await.unwrap().is_some());
    // A new password ends every session.
    assert!(store.set_password("ann", "$argon2id$b").await.unwrap());
    assert_eq!(futures_count(&store, (0..sesame_store::MAX_SESSIONS + 5).map(|i| format!("many-{i}"))).await, 0);
    assert!(!store.set_password("nobody", "x").await.unwrap());
    store.start_session("s2", ann, later).await.unwrap();
    assert_eq!(store.end_sessions(ann).await.unwrap(), 1);

    // Tokens: listed by their owner only, revoked by their owner only.
    let Registration::Created(bob) =
        store.create_account("bob", Role::User, Credential::Token("hash-b"), None).await.unwrap()
    else {
        panic!("bob is new")
    };
    store.add_token(ann, "hash-a1", "laptop").await.unwrap();
    let tokens = store.tokens(ann).await.unwrap();
    assert_eq!(tokens.iter().map(|t| (t.hash.as_str(), t.label.as_str())).collect::<Vec<_>>(), [("hash-a1", "laptop")]);
    assert!(!store.revoke_token(bob, "hash-a1").await.unwrap(), "not bob's");
    assert!(store.account_by_token("hash-a1").await.unwrap().is_some());
    assert!(store.revoke_token(ann, "hash-a1").await.unwrap());
    assert!(store.account_by_token("hash-a1").await.unwrap().is_none());
}

/// How many of these sessions are live.
async fn futures_count(store: &Arc<dyn MetaStore>, sessions: impl Iterator<Item = String>) -> usize {
    let mut n = 0;
    for s in sessions {
        n += usize::from(store.session_account(&s).await.unwrap().is_some());
    }
    n
}

async fn finding_documents_and_failed_changes(store: Arc<dyn MetaStore>) {
    let mut tx = store.begin_import().await.unwrap();
    let mut odd = doc("b_1", "Fifty% Off");
    odd.owner = Some(Arc::from("zed"));
    tx.add(&[doc("a1", "Hello World"), odd]).await.unwrap();
    tx.commit().await.unwrap();
    let ids = |docs: Vec<Document>| docs.into_iter().map(|d| d.key.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.find_documents(None, "a1", 10).await.unwrap()), ["a1"], "by id");
    assert_eq!(ids(store.find_documents(Some("items"), "zed", 10).await.unwrap()), ["b_1"], "by owner");
    assert_eq!(ids(store.find_documents(None, "hello", 10).await.unwrap()), ["a1"], "by title, any case");
    assert_eq!(ids(store.find_documents(None, "fifty%", 10).await.unwrap()), ["b_1"], "% is text");
    assert!(store.find_documents(None, "_", 10).await.unwrap().iter().all(|d| d.key.id.contains('_')), "_ is text");
    assert!(store.find_documents(Some("other"), "a1", 10).await.unwrap().is_empty(), "by collection");
    assert_eq!(store.find_documents(Some("items"), "", 1).await.unwrap().len(), 1, "the latest, any of them");

    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    let first = tx.put(&doc("a1", "x"), None, "upsert", Some(ANN)).await.unwrap();
    let second = tx.put(&doc("c", "y"), None, "upsert", Some(ANN)).await.unwrap();
    tx.commit().await.unwrap();
    store.fail_events(&[first, second], "template exploded").await.unwrap();
    let failed = store.failed_events(1).await.unwrap();
    assert_eq!((failed.len(), failed[0].id, failed[0].error.as_deref()), (1, second, Some("template exploded")));
}

async fn garbage_collection_keeps_what_retained_generations_need(store: Arc<dyn MetaStore>) {
    let key = DocKey::new("items", "1");
    for (base, title) in ["a", "b", "c"].into_iter().enumerate() {
        let published = vec![(key.clone(), Some(Arc::new(doc("1", title))))];
        store.commit(commit(base as u64, published, vec![])).await.unwrap();
    }
    let far_future = sesame_model::time::now() + 10;
    // Keep the newest two generations: version "a" is no longer needed, "b" is (generation 2's).
    let c =
        store.collect_garbage(Retain { generations: 2, since: far_future, released_before: far_future }).await.unwrap();
    assert_eq!((c.versions, c.oldest_retained), (1, 2));
    assert_eq!(store.oldest_retained().await.unwrap(), 2);
    assert_eq!(store.version_at(&key, 2).await.unwrap().unwrap().doc.unwrap().data.get_str("title").unwrap(), "b");
    assert!(store.version_at(&key, 1).await.unwrap().is_none(), "generation 1 is not retained");
    // Everything younger than a day is kept, whatever the count.
    let c = store.collect_garbage(Retain { generations: 1, since: 0, released_before: far_future }).await.unwrap();
    assert_eq!((c.versions, c.oldest_retained), (0, 1));
}

/// The per-page tables of earlier versions: a store this version created
/// has them empty (its first migration made them) until they are dropped.
async fn per_page_tables_of_earlier_versions_are_dropped(store: Arc<dyn MetaStore>) {
    assert!(store.legacy_rows().await.unwrap());
    store.commit(commit(0, vec![], vec![])).await.unwrap();
    assert!(store.legacy_pointers_as_of(1).await.unwrap().is_empty());
    store.drop_legacy_rows().await.unwrap();
    assert!(!store.legacy_rows().await.unwrap());
    store.drop_legacy_rows().await.unwrap();
}

async fn generations_are_announced(store: Arc<dyn MetaStore>) {
    // PostgreSQL pushes new generations; SQLite has nothing to push (callers poll).
    let Some(mut rx) = store.watch_generations().await else { return };
    let g = store.commit(commit(0, vec![], vec![])).await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.expect("notified in time");
    assert_eq!(seen, Some(g));
}

async fn generations_record_their_manifest_roots(store: Arc<dyn MetaStore>) {
    assert_eq!(store.latest_root().await.unwrap(), (0, None), "nothing before the first build");
    for base in 0..3 {
        store.commit(commit(base, vec![], vec![])).await.unwrap();
    }
    assert_eq!(store.latest_root().await.unwrap(), (3, Some("root-3".into())));
    assert_eq!(store.roots_since(2).await.unwrap(), ["root-2", "root-3"], "oldest first");
    assert_eq!(store.root_of(2).await.unwrap().as_deref(), Some("root-2"));
    assert_eq!(store.root_of(9).await.unwrap(), None, "no such generation");
    // A manifest rewritten whole is recorded on its generation again.
    store.set_root(3, "rewritten").await.unwrap();
    assert_eq!(store.latest_root().await.unwrap(), (3, Some("rewritten".into())));
    assert_eq!(store.generations(1).await.unwrap()[0].root.as_deref(), Some("rewritten"));
    // A generation committed before roots were recorded names none.
    store.commit(Commit { root: None, ..commit(3, vec![], vec![]) }).await.unwrap();
    assert_eq!(store.latest_root().await.unwrap(), (4, None));
    assert_eq!(store.roots_since(1).await.unwrap().len(), 3);
    assert_eq!(store.root_of(4).await.unwrap(), None);
}

async fn a_commit_on_a_stale_base_is_refused(store: Arc<dyn MetaStore>) {
    let mut tx = store.begin_import().await.unwrap();
    tx.add(&[doc("1", "a")]).await.unwrap();
    tx.commit().await.unwrap();
    let event = store.pending(10, i64::MAX).await.unwrap().events[0].id;
    let on = |base, root: &str| Commit { root: Some(root.into()), ..commit(base, vec![], vec![event]) };

    // Two publishers racing on the same base: exactly one becomes generation 1.
    let (x, y) = tokio::join!(store.commit(on(0, "hx")), store.commit(on(0, "hy")));
    let stale = |r: &sesame_store::Result<u64>| matches!(r, Err(sesame_store::StoreError::Stale { base: 0 }));
    assert!(matches!((&x, &y), (Ok(1), _) | (_, Ok(1))), "{x:?} {y:?}");
    assert!(stale(&x) != stale(&y), "exactly one is refused: {x:?} {y:?}");
    let winner = if x.is_ok() { "hx" } else { "hy" };
    assert_eq!(store.latest_root().await.unwrap(), (1, Some(winner.into())), "the loser changed nothing");

    // A publisher that fell further behind is refused too.
    store.commit(on(1, "h2")).await.unwrap();
    assert!(matches!(store.commit(on(1, "h3")).await, Err(sesame_store::StoreError::Stale { base: 1 })));
    assert_eq!(store.latest_root().await.unwrap(), (2, Some("h2".into())));
}

async fn content_keeps_its_handle_until_the_operator_hands_it_over(store: Arc<dyn MetaStore>) {
    // Imported content names "ann" as its owner, and "cid" has a site.
    let mut site = doc("cid", "Cid's site");
    site.key = DocKey::new("sites", "cid");
    site.owner = None;
    let mut tx = store.begin_import().await.unwrap();
    tx.add(&[doc("1", "a"), doc("2", "b"), site]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.document(&DocKey::new("items", "1")).await.unwrap().unwrap().account, None);
    for handle in ["ann", "cid"] {
        assert_eq!(
            store
                .create_account(handle, Role::User, Credential::Token(&format!("t-{handle}")), Some("sites"))
                .await
                .unwrap(),
            Registration::OwnsContent,
            "{handle}"
        );
    }
    assert!(store.account_by_token("t-ann").await.unwrap().is_none(), "nothing was created");

    let claimed = store.claim_account("ann", "t-ann", Some("sites")).await.unwrap();
    assert_eq!((claimed.created, claimed.documents), (true, 2));
    let ann = store.account_by_token("t-ann").await.unwrap().unwrap();
    assert_eq!(ann.id, claimed.account);
    let stored = store.document(&DocKey::new("items", "2")).await.unwrap().unwrap();
    assert_eq!(stored.account, Some(ann.id));
    // A second claim adds a token and finds nothing left to hand over.
    let again = store.claim_account("ann", "t-ann-2", Some("sites")).await.unwrap();
    assert_eq!((again.account, again.created, again.documents), (ann.id, false, 0));
    // Writes keep the owning account; events record their author.
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    let event = tx
        .put(&doc("3", "c"), Some(ann.id), "upsert", Some(Author { handle: "ann", account: Some(ann.id) }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.document(&DocKey::new("items", "3")).await.unwrap().unwrap().account, Some(ann.id));
    assert_eq!(store.event(event).await.unwrap().unwrap().account_id, Some(ann.id));
    assert_eq!(AccountId(ann.id.0), ann.id);
}

async fn a_path_belongs_to_one_document(store: Arc<dyn MetaStore>) {
    let (one, two) = (DocKey::new("items", "1"), DocKey::new("items", "2"));
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    assert!(tx.claim_paths(&one, &["/a/".into(), "/x/1/".into()]).await.unwrap().is_empty());
    tx.put(&doc("1", "a"), None, "upsert", None).await.unwrap();
    tx.commit().await.unwrap();
    // Another document asking for /a/ is told who holds it and gets the rest.
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    let contested = tx.claim_paths(&two, &["/a/".into(), "/x/2/".into()]).await.unwrap();
    assert_eq!(contested, vec![("/a/".to_string(), one.clone())]);
    drop(tx); // refused: rolled back
    // A document moving keeps no stale claim; a deletion frees its paths.
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    assert!(tx.claim_paths(&one, &["/b/".into()]).await.unwrap().is_empty());
    assert!(tx.claim_paths(&two, &["/a/".into()]).await.unwrap().is_empty(), "/a/ was given up");
    tx.delete(&one, "delete", None).await.unwrap();
    assert!(tx.claim_paths(&two, &["/a/".into(), "/b/".into()]).await.unwrap().is_empty(), "freed by the deletion");
    tx.commit().await.unwrap();

    // Reindexing follows new rules once; a contested path goes to a
    // taken-down document first.
    let mut removed = doc("6", "z");
    removed.status = Status::Removed;
    let mut tx = store.begin_import().await.unwrap();
    tx.add(&[doc("5", "e"), removed]).await.unwrap();
    tx.commit().await.unwrap();
    let rule = |d: &Document| vec!["/same/".to_string(), format!("/own/{}/", d.key.id)];
    assert!(store.reindex_paths("v2", &rule).await.unwrap());
    assert!(!store.reindex_paths("v2", &rule).await.unwrap(), "nothing to do for the same rules");
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    let mut contested =
        tx.claim_paths(&DocKey::new("items", "new"), &["/same/".into(), "/own/5/".into()]).await.unwrap();
    contested.sort();
    assert_eq!(
        contested,
        vec![("/own/5/".to_string(), DocKey::new("items", "5")), ("/same/".to_string(), DocKey::new("items", "6"))],
        "the taken-down document keeps /same/"
    );
    assert_eq!(
        store.taken_down(&[DocKey::new("items", "5"), DocKey::new("items", "6")]).await.unwrap(),
        vec![DocKey::new("items", "6")]
    );
}

fn medium(hash: &str, size: u64) -> MediaRow {
    MediaRow {
        hash: hash.into(),
        format: sesame_model::MediaFormat::Png,
        width: 1,
        height: 1,
        size,
        created: 1,
        variants: None,
    }
}

async fn media_quotas_hold_under_parallel_uploads(store: Arc<dyn MetaStore>) {
    let Registration::Created(ann) =
        store.create_account("ann", Role::User, Credential::Token("hash-a"), None).await.unwrap()
    else {
        panic!("ann is new");
    };
    let Registration::Created(bob) =
        store.create_account("bob", Role::User, Credential::Token("hash-b"), None).await.unwrap()
    else {
        panic!("bob is new");
    };
    let stored = |r: MediaAdded| matches!(r, MediaAdded::Stored { .. });
    assert!(stored(store.add_media(&medium("m1", 600), Some(ann), Some(1000)).await.unwrap()));
    // The same bytes again cost nothing more; the quota counts each medium once.
    assert!(stored(store.add_media(&medium("m1", 600), Some(ann), Some(1000)).await.unwrap()));
    assert_eq!(
        store.add_media(&medium("m2", 600), Some(ann), Some(1000)).await.unwrap(),
        MediaAdded::OverQuota { used: 600 }
    );
    // Another account owning the same bytes is charged for them too, once.
    assert!(stored(store.add_media(&medium("m1", 600), Some(bob), Some(1000)).await.unwrap()));
    let owned = store.media(&["m1".into()], Some(bob)).await.unwrap();
    assert!(owned[0].1, "bob owns m1 as well");

    // Twenty parallel uploads with room for four: exactly four are stored.
    let uploads = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.add_media(&medium(&format!("p{i}"), 100), Some(bob), Some(1000)).await })
    });
    let mut accepted = 0;
    for upload in uploads {
        accepted += usize::from(stored(upload.await.unwrap().unwrap()));
    }
    assert_eq!(accepted, 4, "600 + 4 × 100 fills bob's 1000 bytes");
}

/// A draft is no document and no event; dropping it drops its publish
/// schedule and links; a schedule falls due, lands once, or keeps why it
/// was refused; a link stops working when it expires.
async fn drafts_schedules_and_preview_links(store: Arc<dyn MetaStore>) {
    use sesame_store::{PreviewLinkRow, ScheduleAction, ScheduleRow};
    let key = DocKey::new("items", "a");
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    tx.put_draft(&doc("a", "Draft"), None).await.unwrap();
    let schedule = |action, due| ScheduleRow {
        key: key.clone(),
        action,
        due,
        account: None,
        author: "admin".into(),
        admin: true,
        error: None,
    };
    tx.put_schedule(&schedule(ScheduleAction::Publish, 1_000)).await.unwrap();
    tx.put_schedule(&schedule(ScheduleAction::Unpublish, 5_000)).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.document(&key).await.unwrap().is_none(), "a draft is no document");
    assert_eq!(store.pending_events().await.unwrap(), 0, "and no event");
    assert_eq!(store.draft(&key).await.unwrap().unwrap().data["title"], "Draft");
    assert_eq!(store.drafts_of(None, 10).await.unwrap().len(), 1);
    assert_eq!(store.next_due().await.unwrap(), Some(1_000), "schedules are in the queue");
    assert_eq!(store.due_schedules(999, 10).await.unwrap().len(), 0);
    assert_eq!(store.due_schedules(5_000, 10).await.unwrap().len(), 2);

    // Landing deletes it if it still falls due then: once, whoever lands it.
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    assert!(!tx.delete_schedule(&key, ScheduleAction::Publish, Some(999)).await.unwrap(), "moved since read");
    assert!(tx.delete_schedule(&key, ScheduleAction::Publish, Some(1_000)).await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    assert!(!tx.delete_schedule(&key, ScheduleAction::Publish, Some(1_000)).await.unwrap(), "landed once");
    drop(tx);

    // A refused one keeps its reason and is no longer due.
    store.fail_schedule(&key, ScheduleAction::Unpublish, 5_000, "refused").await.unwrap();
    assert_eq!(store.due_schedules(i64::MAX, 10).await.unwrap().len(), 0);
    assert_eq!(store.next_due().await.unwrap(), None);
    assert_eq!(store.schedules(&key).await.unwrap()[0].error.as_deref(), Some("refused"));

    // Links work until they expire or are revoked.
    let link = |hash: &str, expires| PreviewLinkRow { hash: hash.into(), key: key.clone(), created: 10, expires };
    store.add_preview_link(&link("aaaa1111", 100)).await.unwrap();
    store.add_preview_link(&link("bbbb2222", 100)).await.unwrap();
    assert!(store.preview_link("aaaa1111", 99).await.unwrap().is_some());
    assert!(store.preview_link("aaaa1111", 100).await.unwrap().is_none(), "expired");
    assert!(!store.revoke_preview_link(&key, "%").await.unwrap(), "an id is hex, never a pattern");
    assert!(store.revoke_preview_link(&key, "aaaa").await.unwrap());
    assert!(store.preview_link("aaaa1111", 50).await.unwrap().is_none(), "revoked");

    // Dropping the draft drops its publish schedule and links, not the unpublish.
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    tx.put_schedule(&schedule(ScheduleAction::Publish, 2_000)).await.unwrap();
    assert!(tx.delete_draft(&key).await.unwrap());
    assert!(!tx.delete_draft(&key).await.unwrap());
    tx.commit().await.unwrap();
    assert!(store.draft(&key).await.unwrap().is_none());
    assert!(store.preview_links(&key).await.unwrap().is_empty());
    let left: Vec<ScheduleAction> = store.schedules(&key).await.unwrap().into_iter().map(|s| s.action).collect();
    assert_eq!(left, [ScheduleAction::Unpublish]);

    // An account's schedules, for its archive: its own, earliest first.
    let Registration::Created(ann) =
        store.create_account("ann", Role::User, Credential::Token("hash-d"), None).await.unwrap()
    else {
        panic!("ann is new");
    };
    let mut tx = store.begin_write(Debounce::NONE).await.unwrap();
    for (id, due) in [("b", 9_000), ("c", 3_000)] {
        let row =
            ScheduleRow { key: DocKey::new("items", id), account: Some(ann), ..schedule(ScheduleAction::Publish, due) };
        tx.put_schedule(&row).await.unwrap();
    }
    tx.commit().await.unwrap();
    let ids = |rows: Vec<ScheduleRow>| rows.into_iter().map(|s| s.key.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.schedules_of(ann, 10).await.unwrap()), ["c", "b"]);
    assert_eq!(ids(store.schedules_of(ann, 1).await.unwrap()), ["c"]);
}

/// A host may be claimed by several sites; the one whose token the DNS
/// shows is verified, and takes the host from another verified claim; a
/// check without the proof keeps a verification but not liveness.
async fn custom_domains_are_claimed_verified_and_handed_over(store: Arc<dyn MetaStore>) {
    use sesame_store::{DomainCheck, DomainRow};
    let claim = |site: &str, token: &str| DomainRow {
        host: "ann.test".into(),
        site: site.into(),
        account: None,
        token: token.into(),
        created: 100,
        checked: None,
        problem: None,
        verified: None,
        live: None,
    };
    assert!(store.attach_domain(&claim("ann", "t-ann")).await.unwrap());
    assert!(!store.attach_domain(&claim("ann", "t-other")).await.unwrap(), "once per site");
    assert!(store.attach_domain(&claim("bob", "t-bob")).await.unwrap(), "a contested host");
    assert_eq!(store.domains_of("ann").await.unwrap()[0].token, "t-ann");
    assert_eq!(store.domains_to_check(10).await.unwrap().len(), 2);

    let check = |proven, points_here, problem: Option<&str>| DomainCheck {
        proven,
        points_here,
        problem: problem.map(String::from),
    };
    let waiting = store.record_domain_check("ann.test", "ann", &check(false, true, Some("no TXT")), 200).await.unwrap();
    let waiting = waiting.expect("ann's claim");
    assert_eq!((waiting.checked, waiting.verified, waiting.problem.as_deref()), (Some(200), None, Some("no TXT")));
    let ann = store.record_domain_check("ann.test", "ann", &check(true, true, None), 300).await.unwrap().unwrap();
    assert_eq!((ann.verified, ann.live, ann.problem), (Some(300), Some(300), None));
    assert_eq!(store.verified_domains().await.unwrap().iter().map(|d| d.site.as_str()).collect::<Vec<_>>(), ["ann"]);
    // A check that cannot see the proof keeps the host ann's, not live.
    let ann = store.record_domain_check("ann.test", "ann", &check(false, false, Some("gone")), 400).await.unwrap();
    assert_eq!(ann.map(|a| (a.verified, a.live)), Some((Some(300), None)));
    // Bob's token in the DNS: the host is bob's, and ann's claim says why not.
    store.record_domain_check("ann.test", "bob", &check(true, true, None), 500).await.unwrap();
    let verified = store.verified_domains().await.unwrap();
    assert_eq!(verified.iter().map(|d| d.site.as_str()).collect::<Vec<_>>(), ["bob"]);
    let ann = store.domain("ann.test", "ann").await.unwrap().unwrap();
    assert_eq!(ann.verified, None);
    assert!(ann.problem.unwrap().contains("another site's token"));
    // A certificate is served while a claim on its host is verified, and
    // goes (with its key) with the last verified claim.
    let certificate = sesame_store::CertificateRow {
        host: "ann.test".into(),
        chain: "chain".into(),
        key: "key".into(),
        not_after: 9_000,
        issued: 500,
        first_issued: 500,
    };
    assert!(store.put_certificate(&certificate).await.unwrap());
    let elsewhere = sesame_store::CertificateRow { host: "other.test".into(), ..certificate.clone() };
    assert!(!store.put_certificate(&elsewhere).await.unwrap(), "none for a host no claim holds");
    assert_eq!(store.certificates().await.unwrap(), std::slice::from_ref(&certificate), "only verified hosts'");
    // A renewal replaces it and keeps since when the host has had one.
    let renewed = sesame_store::CertificateRow { not_after: 19_000, issued: 8_000, first_issued: 8_000, ..certificate };
    assert!(store.put_certificate(&renewed).await.unwrap());
    let certificate = sesame_store::CertificateRow { first_issued: 500, ..renewed };
    assert_eq!(store.certificates().await.unwrap(), std::slice::from_ref(&certificate));
    assert_eq!(store.certificate_dates("ann.test").await.unwrap(), Some((8_000, 19_000)));
    assert!(!format!("{certificate:?}").contains("key\""), "the key is never in a log");
    assert!(store.detach_domain("ann.test", "ann").await.unwrap(), "ann's unverified claim");
    assert_eq!(store.certificates().await.unwrap().len(), 1, "bob's claim still holds it");
    assert!(store.detach_domain("ann.test", "bob").await.unwrap());
    assert!(!store.detach_domain("ann.test", "bob").await.unwrap());
    assert!(store.verified_domains().await.unwrap().is_empty());
    assert!(store.record_domain_check("ann.test", "bob", &check(true, true, None), 600).await.unwrap().is_none());
    store.attach_domain(&claim("carl", "t-carl")).await.unwrap();
    store.record_domain_check("ann.test", "carl", &check(true, true, None), 700).await.unwrap();
    assert!(store.certificates().await.unwrap().is_empty(), "deleted with the last verified claim");
    assert_eq!(store.certificate_dates("ann.test").await.unwrap(), None);
}

/// What the certificate issuer keeps: one account per directory, the
/// hosts due a certificate, the order budget, failed orders and the
/// HTTP-01 answers.
async fn certificates_are_ordered_within_a_budget_and_backed_off(store: Arc<dyn MetaStore>) {
    use sesame_store::{AcmeHost, CertificateRow, DomainCheck, DomainRow};
    const DIRECTORY: &str = "https://acme.test/dir";
    assert_eq!(store.acme_account(DIRECTORY).await.unwrap(), None);
    assert_eq!(store.put_acme_account(DIRECTORY, "first", 1).await.unwrap(), "first");
    assert_eq!(store.put_acme_account(DIRECTORY, "second", 2).await.unwrap(), "first", "the first one stays");
    assert_eq!(store.acme_account(DIRECTORY).await.unwrap().as_deref(), Some("first"));

    // Only live verified claims are due one.
    for (host, proven, points_here) in [("a.test", true, true), ("b.test", true, true), ("c.test", true, false)] {
        let row = DomainRow {
            host: host.into(),
            site: "ann".into(),
            account: None,
            token: format!("t-{host}"),
            created: 100,
            checked: None,
            problem: None,
            verified: None,
            live: None,
        };
        store.attach_domain(&row).await.unwrap();
        let check = DomainCheck { proven, points_here, problem: None };
        store.record_domain_check(host, "ann", &check, 200).await.unwrap();
    }
    store
        .attach_domain(&DomainRow {
            host: "d.test".into(),
            token: "t-d".into(),
            ..store.domain("a.test", "ann").await.unwrap().unwrap()
        })
        .await
        .unwrap();
    assert_eq!(store.hosts_to_certify(1_000, 1_000, 10).await.unwrap(), ["a.test", "b.test"]);
    assert_eq!(store.hosts_to_certify(1_000, 1_000, 1).await.unwrap(), ["a.test"]);
    // A certificate takes its host off until it is due for renewal.
    let certificate = CertificateRow {
        host: "a.test".into(),
        chain: "c".into(),
        key: "k".into(),
        not_after: 5_000,
        issued: 900,
        first_issued: 900,
    };
    assert!(store.put_certificate(&certificate).await.unwrap());
    assert_eq!(store.hosts_to_certify(1_000, 1_000, 10).await.unwrap(), ["b.test"]);
    assert_eq!(
        store.hosts_to_certify(1_000, 9_000, 10).await.unwrap(),
        ["b.test"],
        "not before two thirds of its life"
    );
    assert_eq!(store.hosts_to_certify(4_000, 2_000, 10).await.unwrap(), ["b.test", "a.test"], "renewals too");
    // A failed order holds its host back until it may be retried.
    let failed = AcmeHost { host: "b.test".into(), failures: 2, retry_at: 1_500, problem: "rate limited".into() };
    store.put_acme_host(&failed).await.unwrap();
    assert_eq!(store.acme_host("b.test").await.unwrap(), Some(failed.clone()));
    assert!(store.hosts_to_certify(1_000, 1_000, 10).await.unwrap().is_empty());
    assert_eq!(store.hosts_to_certify(1_500, 1_000, 10).await.unwrap(), ["b.test"]);
    // Its certificate forgets its failures.
    assert!(store.put_certificate(&CertificateRow { host: "b.test".into(), ..certificate }).await.unwrap());
    assert_eq!(store.acme_host("b.test").await.unwrap(), None);

    // The budget: 2 orders within the window; older ones do not count.
    assert!(store.place_order("a.test", 100, 0, 2).await.unwrap());
    assert!(store.place_order("b.test", 200, 0, 2).await.unwrap());
    assert!(!store.place_order("c.test", 300, 0, 2).await.unwrap(), "the budget is spent");
    assert!(store.place_order("c.test", 300, 150, 2).await.unwrap(), "the first left the window");
    let orders = store.orders_since(0).await.unwrap();
    assert_eq!(orders, [("b.test".to_string(), 200), ("c.test".to_string(), 300)]);

    // Challenge answers, by token.
    store.put_challenge("tok", "a.test", "tok.thumb", 100).await.unwrap();
    assert_eq!(store.challenge("tok").await.unwrap(), Some(("a.test".into(), "tok.thumb".into())));
    store.drop_challenge("tok").await.unwrap();
    assert_eq!(store.challenge("tok").await.unwrap(), None);
    store.put_alpn_challenge("a.test", "chain", "key", 100).await.unwrap();
    assert_eq!(store.alpn_challenge("a.test").await.unwrap(), Some(("chain".into(), "key".into())));
    assert_eq!(store.alpn_challenge("b.test").await.unwrap(), None);
    store.drop_alpn_challenge("a.test").await.unwrap();
    assert_eq!(store.alpn_challenge("a.test").await.unwrap(), None);
}
