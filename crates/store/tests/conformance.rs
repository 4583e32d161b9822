//! Behaviour every `MetaStore` backend must share, run here on a real SQLite file.

use std::sync::Arc;

use sesame_model::{AliasRow, DocKey, Document, SeqRow, Status};
use sesame_store::{Commit, EventsDone, MetaStore, ObjectRow, PublishedDocs, Target};

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
        data,
    }
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn MetaStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    (dir, sesame_store::open(&url).await.expect("open store"))
}

fn page(hash: &str) -> Target {
    Target::Page { object: ObjectRow { hash: hash.into(), size: 3, encodings: 1 }, content_type: "text/html".into() }
}

fn commit(
    pointers: Vec<(String, Target, String)>,
    removed: Vec<String>,
    published: PublishedDocs,
    events: EventsDone,
) -> Commit {
    let objects = pointers
        .iter()
        .filter_map(|(_, t, _)| match t {
            Target::Page { object, .. } => Some(object.clone()),
            _ => None,
        })
        .collect();
    Commit {
        kind: "test",
        summary: serde_json::json!({"pages": 1}),
        objects,
        pointers,
        removed,
        published,
        seqs: vec![],
        aliases_added: vec![],
        aliases_removed: vec![],
        events,
    }
}

#[tokio::test]
async fn import_is_atomic_and_records_events() {
    let (_dir, store) = sqlite().await;
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
    assert_eq!(snap.watermark, 3);
    let one = snap.docs.iter().find(|d| &*d.key.id == "1").unwrap();
    assert_eq!(one.data["title"], "a2");
    assert_eq!(one.flags, vec!["adult".to_string()]);
    assert_eq!(store.pending_events().await.unwrap(), 3);
    assert!(store.published_snapshot().await.unwrap().docs.is_empty());
}

#[tokio::test]
async fn commits_pointers_history_and_events_together() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin_import().await.unwrap();
    tx.add(&[doc("1", "a")]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.latest_generation().await.unwrap(), 0);

    let mut c = commit(
        vec![
            ("/a/".into(), page("h1"), "doc:items/1".into()),
            ("/old/".into(), Target::Redirect("/a/".into()), String::new()),
        ],
        vec![],
        vec![(DocKey::new("items", "1"), Some(Arc::new(doc("1", "a"))))],
        EventsDone::UpTo(1),
    );
    c.seqs.push(SeqRow { route: "r".into(), group: String::new(), doc: DocKey::new("items", "1"), seq: 0 });
    c.aliases_added.push(AliasRow { route: "d".into(), path: "/old/".into(), doc: DocKey::new("items", "1") });
    let g1 = store.commit(c).await.unwrap();
    assert_eq!(g1, 1);
    assert_eq!(store.pending_events().await.unwrap(), 0);
    let published = store.published_snapshot().await.unwrap();
    assert_eq!((published.docs.len(), published.seqs.len(), published.aliases.len()), (1, 1, 1));
    assert_eq!(store.missing_objects(&["h1".into(), "h2".into()]).await.unwrap(), vec!["h2".to_string()]);

    let mut pointers = store.pointers().await.unwrap();
    pointers.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(pointers.len(), 2);
    assert_eq!(pointers[0].target, page("h1"));
    assert_eq!(pointers[0].deps, "doc:items/1");

    let g2 = store.commit(commit(vec![], vec!["/old/".into()], vec![], EventsDone::Ids(vec![]))).await.unwrap();
    assert_eq!(store.pointers().await.unwrap().len(), 1);
    let (latest, changed) = store.pointers_since(g1).await.unwrap();
    assert_eq!(latest, g2);
    assert_eq!(changed.len(), 1);
    assert_eq!((changed[0].path.as_str(), &changed[0].target), ("/old/", &Target::Removed));
    let gens = store.generations(10).await.unwrap();
    assert_eq!(gens.iter().map(|g| g.id).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(gens[1].summary["pages"], 1);
}
