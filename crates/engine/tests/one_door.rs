//! One door: every way a change comes in reaches the same rules. Each test
//! states one rule and runs every entry point that can express it on the
//! same input, on a real SQLite file, asserting the same outcome:
//!
//! | door | what calls it |
//! |---|---|
//! | `write` as an account | API `PUT`/`PATCH`/`DELETE`, dashboard saves |
//! | `write` as an admin | the same as an admin, `/admin/takedown\|restore\|flag` |
//! | `preview` | API drafts, the dashboard's preview frame |
//! | `ingest` as an admin | `/admin/moderate` |
//! | `ingest` as the operator | `sesame apply`, `sesame moderate` |
//! | `import` | `sesame import` |

use std::sync::Arc;

use serde_json::{Map, Value, json};
use sesame_engine::{Actor, By, Debounce, Event, Located, Missing, Project, WriteError, ingest};
use sesame_model::{DocKey, Op, Status};
use sesame_store::{Credential, Registration, Role};

const CONFIG: &str = r#"
base_url = "https://example.org"
[collections.sites]
title = "name"
owner = "owner"
create = "own-handle"
schema = "schemas/sites.json"

[[routes]]
kind = "document"
collection = "sites"
path = "/{owner}/"
template = "site.html"
"#;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": { "name": { "type": "string", "maxLength": 40 }, "owner": { "type": "string" } }
}"#;

/// A project, and its accounts: `ann` (a user) and `root` (an admin).
struct Fixture {
    _dir: tempfile::TempDir,
    project: Project,
    ann: Actor,
    admin: Actor,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write("sesame.toml", CONFIG);
    write("schemas/sites.json", SCHEMA);
    write("templates/site.html", "<h1>{{ doc.name }}</h1><p>by {{ doc.owner }}</p>");
    let project = Project::open(dir.path()).await.expect("open");
    let account = |handle: &'static str, role: Role| {
        let store = project.store.clone();
        async move {
            // A token hash of its own (tokens are unique).
            let credential = Credential::Token(&format!("{handle:0>64}"));
            match store.create_account(handle, role, credential, Some("sites")).await.expect("account") {
                Registration::Created(id) => {
                    Actor { account: Some(id), handle: handle.into(), admin: role == Role::Admin }
                }
                other => panic!("{handle}: {other:?}"),
            }
        }
    };
    let ann = account("ann", Role::User).await;
    let admin = account("root", Role::Admin).await;
    Fixture { _dir: dir, project, ann, admin }
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

/// A door's answer: the document it stored (or previewed), or its refusal.
type Outcome = Result<Option<sesame_model::Document>, String>;

/// The ways in that take one change to one document.
#[derive(Debug, Clone, Copy)]
enum Door {
    Account,
    Admin,
    AdminBulk,
    Operator,
}

impl Door {
    const ALL: [Door; 4] = [Door::Account, Door::Admin, Door::AdminBulk, Door::Operator];

    /// Applies `op` to `key` through this door; the stored document after it.
    async fn apply(self, f: &Fixture, key: &DocKey, op: Op) -> Outcome {
        let refused = |e: WriteError| e.to_string();
        match self {
            Door::Account | Door::Admin => {
                let actor = if matches!(self, Door::Account) { &f.ann } else { &f.admin };
                sesame_engine::write(&f.project, actor, key, op, Debounce::NONE).await.map_err(refused)?;
            }
            Door::AdminBulk | Door::Operator => {
                let by = if matches!(self, Door::AdminBulk) { By::Actor(&f.admin) } else { By::Operator(None) };
                let event = event_of(key, op);
                let located = [Located { file: Arc::from("events"), line: 1, event }];
                ingest(&f.project, &located, by, Missing::Fail, Debounce::NONE).await.map_err(|e| {
                    // A line error names where; the rule is what follows.
                    e.to_string().trim_start_matches("events: line 1: ").to_string()
                })?;
            }
        }
        Ok(f.project.store.document(key).await.expect("read").map(|s| s.doc))
    }
}

fn event_of(key: &DocKey, op: Op) -> Event {
    let (collection, id) = (key.collection.to_string(), Value::from(&*key.id));
    match op {
        Op::Put(doc) => Event::Upsert { collection, id, doc },
        Op::Delete => Event::Delete { collection, id },
        Op::Takedown => Event::Takedown { collection, id },
        Op::Restore => Event::Restore { collection, id },
        Op::Flag(flag, value) => Event::Flag { collection, id, flag, value },
        other => panic!("no event for {other:?}"),
    }
}

/// `sesame import` of one line into `sites`: the stored document.
async fn import(f: &Fixture, line: &str) -> Outcome {
    let reader = std::io::Cursor::new(line.to_string());
    sesame_engine::import(&f.project, reader, "in.ndjson", "sites", &sesame_engine::Quiet)
        .await
        .map_err(|e| e.to_string().trim_start_matches("in.ndjson: line 1: ").to_string())?;
    let id = serde_json::from_str::<Value>(line).expect("json")["id"].as_str().expect("id").to_string();
    Ok(f.project.store.document(&DocKey::new("sites", id)).await.expect("read").map(|s| s.doc))
}

fn owner(outcome: &Outcome) -> Option<String> {
    outcome.as_ref().expect("stored").as_ref().and_then(|d| d.owner.as_deref().map(str::to_string))
}

#[tokio::test]
async fn every_door_checks_keys_by_the_same_rule() {
    let f = fixture().await;
    for (collection, id) in [("nope", "ann"), ("sites", "a/b"), ("sites", ""), ("sites", "..")] {
        let expected = f.project.site.doc_key(collection, id).expect_err("refused").to_string();
        // The API takes the key from the path with the same function.
        let event = Event::Upsert { collection: collection.into(), id: id.into(), doc: fields(json!({"name": "x"})) };
        let located = [Located { file: Arc::from("events"), line: 1, event }];
        for by in [By::Actor(&f.admin), By::Operator(None)] {
            let refused = ingest(&f.project, &located, by, Missing::Fail, Debounce::NONE).await.expect_err("refused");
            assert_eq!(refused.to_string(), format!("events: line 1: {expected}"), "{collection}/{id}");
        }
        if collection == "sites" {
            let line = json!({"id": id, "name": "x"}).to_string();
            assert_eq!(import(&f, &line).await.expect_err("refused"), expected, "import {id:?}");
        }
    }
}

#[tokio::test]
async fn every_door_refuses_the_same_fields() {
    let f = fixture().await;
    for (bad, field) in [
        (json!({"name": 5}), "/name"),
        (json!({"name": "a\u{0}b"}), "/name"),
        (json!({"name": "x".repeat(41)}), "/name"),
        (json!({"name": "ok", "owner": ["ann"]}), "/owner"),
    ] {
        let key = DocKey::new("sites", "ann");
        for door in Door::ALL {
            let refused = door.apply(&f, &key, Op::Put(fields(bad.clone()))).await.expect_err("refused");
            assert!(refused.starts_with(&format!("{field}: ")), "{door:?} {bad}: {refused}");
        }
        let refused = sesame_engine::preview(&f.project, &f.ann, &key, Op::Put(fields(bad.clone())))
            .await
            .expect_err("refused")
            .to_string();
        assert!(refused.starts_with(&format!("{field}: ")), "preview {bad}: {refused}");
        let mut line = fields(bad.clone());
        line.insert("id".into(), "ann".into());
        let refused = import(&f, &Value::Object(line).to_string()).await.expect_err("refused");
        assert!(refused.starts_with(&format!("{field}: ")), "import {bad}: {refused}");
    }
}

/// Who a document belongs to is decided once: an account's are its own
/// whatever the fields say, an admin's keep the owner named or go to the
/// site's handle, the operator's are as written; a preview shows the owner
/// the save stores.
#[tokio::test]
async fn every_door_decides_the_owner_by_the_same_rule() {
    let f = fixture().await;
    let put = |v: Value| Op::Put(fields(v));
    // An account names another owner: the site is its own anyway.
    let ann = DocKey::new("sites", "ann");
    let claimed = json!({"name": "Ann", "owner": "mallory"});
    let preview = sesame_engine::preview(&f.project, &f.ann, &ann, put(claimed.clone())).await.expect("preview");
    let stored = Door::Account.apply(&f, &ann, put(claimed)).await;
    assert_eq!(owner(&stored).as_deref(), Some("ann"));
    let after = sesame_engine::preview(&f.project, &f.ann, &ann, put(json!({"name": "Ann", "owner": "ann"})));
    assert_eq!(preview, after.await.expect("preview"), "the preview showed what was saved");

    // An admin writes a site without an owner: it is the handle's, in the
    // preview as in the save; naming one keeps it.
    let bob = DocKey::new("sites", "bob");
    let preview = sesame_engine::preview(&f.project, &f.admin, &bob, put(json!({"name": "Bob"}))).await.expect("p");
    assert!(String::from_utf8_lossy(&preview).contains("by bob"), "{}", String::from_utf8_lossy(&preview));
    for door in [Door::Admin, Door::AdminBulk] {
        let key = DocKey::new("sites", format!("bob-{door:?}").to_lowercase());
        let stored = door.apply(&f, &key, put(json!({"name": "Bob"}))).await;
        assert_eq!(owner(&stored).as_deref(), Some(&*key.id), "{door:?}");
        // (Its page is at /{owner}/: one owner a door.)
        let carol = format!("carol-{door:?}").to_lowercase();
        let stored = door.apply(&f, &key, put(json!({"name": "Bob", "owner": carol}))).await;
        assert_eq!(owner(&stored), Some(carol.clone()), "{door:?}");
        // Without the field again, the document keeps its owner.
        let stored = door.apply(&f, &key, put(json!({"name": "Bob 2"}))).await;
        assert_eq!(owner(&stored), Some(carol), "{door:?}");
    }

    // The operator's content is taken as written, by `apply` and `import`.
    let stored =
        Door::Operator.apply(&f, &DocKey::new("sites", "dan"), put(json!({"name": "D", "owner": "erin"}))).await;
    assert_eq!(owner(&stored).as_deref(), Some("erin"));
    let stored = Door::Operator.apply(&f, &DocKey::new("sites", "fay"), put(json!({"name": "F"}))).await;
    assert_eq!(owner(&stored), None);
    assert_eq!(owner(&import(&f, r#"{"id": "gus", "name": "G", "owner": "erin"}"#).await).as_deref(), Some("erin"));
    assert_eq!(owner(&import(&f, r#"{"id": "hal", "name": "H"}"#).await), None);
}

/// Moderation: every admin door takes down the same way, a second takedown
/// changes nothing, an account cannot moderate, and its own writes keep the
/// takedown.
#[tokio::test]
async fn every_door_moderates_by_the_same_rule() {
    let f = fixture().await;
    let key = DocKey::new("sites", "ann");
    Door::Account.apply(&f, &key, Op::Put(fields(json!({"name": "Ann"})))).await.expect("written");
    for door in [Door::Admin, Door::AdminBulk, Door::Operator] {
        let down = door.apply(&f, &key, Op::Takedown).await.expect("taken down").expect("kept");
        assert_eq!(down.status, Status::Removed, "{door:?}");
        let events = f.project.store.pending_events().await.expect("pending");
        door.apply(&f, &key, Op::Takedown).await.expect("no-op");
        assert_eq!(f.project.store.pending_events().await.expect("pending"), events, "{door:?}: no event for a no-op");
        let refused = Door::Account.apply(&f, &key, Op::Restore).await.expect_err("refused");
        assert_eq!(refused, "moderation is for admins");
        let edited = Door::Account.apply(&f, &key, Op::Put(fields(json!({"name": "Ann again"})))).await;
        assert_eq!(edited.expect("written").map(|d| d.status), Some(Status::Removed), "{door:?}: the takedown sticks");
        let refused = Door::Account.apply(&f, &key, Op::Delete).await.expect_err("refused");
        assert!(refused.contains("taken down by a moderator"), "{refused}");
        door.apply(&f, &key, Op::Restore).await.expect("restored");
    }
}
