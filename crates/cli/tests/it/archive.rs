//! Taking a site along: an owner's archive (`GET /api/sites/{h}/export`)
//! holds their documents, images and pages; restored on a fresh sesame
//! (`POST /api/sites/{h}/import`) it serves the same pages; a hostile
//! archive is refused whole with the entry named, and nothing is written.

use std::io::Read;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const DRAFT: &str = "/api/collections/sites/docs/ann/draft";
const SCHEDULE: &str = "/api/collections/sites/docs/ann/schedule";

fn unpack(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut entries = Vec::new();
    for entry in tar.entries().expect("a tar.gz") {
        let mut entry = entry.expect("an entry");
        let name = entry.path().expect("a path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read an entry");
        entries.push((name, bytes));
    }
    entries
}

/// A tar.gz of raw entries: names are written as given (`..` too) and a
/// `None` body makes a symbolic link.
fn archive(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()));
    for (name, body) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        match body {
            Some(bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                tar.append(&header, *bytes).expect("append");
            }
            None => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_link_name("/etc/passwd").expect("link");
                header.set_size(0);
                header.set_cksum();
                tar.append(&header, &[][..]).expect("append");
            }
        }
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

async fn import(api: &Api, token: &str, handle: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    api.http
        .post(format!("{}/api/sites/{handle}/import", api.base))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .expect("request")
}

type Chunks = tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

/// A request body sent in chunks (no length declared) as they are handed to
/// the sender, open until the sender is dropped.
fn held_body() -> (Chunks, reqwest::Body) {
    let (send, chunks) = tokio::sync::mpsc::channel(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk, chunks))
    }));
    (send, body)
}

#[tokio::test]
async fn an_owners_archive_restored_on_a_fresh_sesame_serves_the_same_pages() {
    let limits = |c: String| quick(c).replace("[api]", "[api]\narchives_per_hour = 2");
    let first = microsites_with(limits);
    let server = Server::in_process(first.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let bob = api.sign_up("bob").await;
    let r = api.upload(&ann, image_bytes(image::ImageFormat::Png, 40, 30), "image/png").await;
    let uploaded: Value = r.json().await.expect("json");
    let image = uploaded["ref"].as_str().expect("ref").to_string();
    let site = json!({"name": "Ann Takes It Along", "bio": "*mine*", "avatar": image});
    let r = api.send(Method::PUT, "/api/sites/ann", &ann, Some(site)).await;
    api.published(&ann, change_id(&r.json().await.expect("json"))).await;
    // A draft of the next version, due in an hour and off the site in two.
    let in_hours = |h: i64| sesame_model::time::rfc3339_ms(sesame_model::time::now_ms() + h * 3_600_000);
    let schedule = json!({"publish_at": in_hours(1), "unpublish_at": in_hours(2)});
    let r = api.send(Method::PUT, DRAFT, &ann, Some(json!({"name": "Ann, Next", "avatar": image}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = api.send(Method::PUT, SCHEDULE, &ann, Some(schedule.clone())).await;
    assert_eq!(r.status(), StatusCode::OK);

    let r = api.send(Method::GET, "/api/sites/ann/export", &bob, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "someone else's site");
    let r = api.send(Method::GET, "/api/sites/ann/export", &ann, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    assert!(r.headers()["content-disposition"].to_str().expect("ascii").contains("ann.sesame.tar.gz"));
    let bytes = r.bytes().await.expect("the archive").to_vec();
    let entries = unpack(&bytes);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let hash = image.split('.').next().expect("hash");
    for wanted in ["documents/sites.ndjson", "site/ann/index.html", &format!("site/media/{image}")] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("site/static/")), "the static files: {names:?}");
    assert!(!names.iter().any(|n| n.starts_with("site/bob/")), "only the owner's pages");
    let documents =
        String::from_utf8(entries.iter().find(|(n, _)| n == "documents/sites.ndjson").expect("docs").1.clone())
            .expect("utf-8");
    let line: Value = serde_json::from_str(documents.trim()).expect("one document");
    assert_eq!((line["id"].as_str(), line["name"].as_str()), (Some("ann"), Some("Ann Takes It Along")));
    assert!(documents.contains(hash));
    let drafts = entries.iter().find(|(n, _)| n == "drafts/sites.ndjson").expect("the drafts file");
    let line: Value = serde_json::from_slice(&drafts.1).expect("one draft line");
    assert_eq!(line["draft"]["name"], "Ann, Next", "{line}");
    assert_eq!((&line["publish_at"], &line["unpublish_at"]), (&schedule["publish_at"], &schedule["unpublish_at"]));
    // The account's budget of archives.
    assert_eq!(api.send(Method::GET, "/api/sites/ann/export", &ann, None).await.status(), StatusCode::OK);
    assert_eq!(
        api.send(Method::GET, "/api/sites/ann/export", &ann, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // On a fresh sesame, as the account of the same handle there.
    let second = microsites_with(quick);
    let other = Server::in_process(second.path());
    let there = Api::new(&other);
    let ann_there = there.sign_up("ann").await;
    let r = import(&there, &ann_there, "ann", bytes).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let restored: Value = r.json().await.expect("json");
    let counts = ["documents", "media", "drafts", "schedules"].map(|k| restored[k].as_u64());
    assert_eq!(counts, [Some(1), Some(1), Some(1), Some(2)], "{restored}");
    there.published(&ann_there, change_id(&restored)).await;
    let before = api.get("/ann/").await.text().await.expect("body");
    let after = there.get("/ann/").await.text().await.expect("body");
    assert!(after.contains("Ann Takes It Along"));
    assert_eq!(before, after, "the same page on both: the draft is not published");
    assert_eq!(there.get(&format!("/media/{image}")).await.status(), StatusCode::OK, "with its image");
    let mine = there.send(Method::GET, "/api/sites/ann", &ann_there, None).await;
    assert_eq!(mine.status(), StatusCode::OK, "owned by the importing account");
    // The draft and its schedule came along, the importing account's.
    let draft: Value = there.send(Method::GET, DRAFT, &ann_there, None).await.json().await.expect("json");
    assert_eq!(draft["doc"]["name"], "Ann, Next", "{draft}");
    let set: Value = there.send(Method::GET, SCHEDULE, &ann_there, None).await.json().await.expect("json");
    assert_eq!((&set["publish_at"], &set["unpublish_at"]), (&schedule["publish_at"], &schedule["unpublish_at"]));
}

/// A schedule whose time passed while the site was away (between its export
/// and its restore) lands as soon as the archive is restored.
#[tokio::test]
async fn a_schedule_due_while_away_lands_once_restored() {
    let dir = microsites_with(quick);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let documents = json!({"id": "ann", "name": "Ann, Before"}).to_string();
    let drafts =
        json!({"id": "ann", "draft": {"name": "Ann, After"}, "publish_at": "2020-01-01T00:00:00Z"}).to_string();
    let body = archive(&[
        ("documents/sites.ndjson", Some(documents.as_bytes())),
        ("drafts/sites.ndjson", Some(drafts.as_bytes())),
    ]);
    let r = import(&api, &ann, "ann", body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let restored: Value = r.json().await.expect("json");
    assert_eq!(restored["schedules"], 1, "{restored}");
    let landed = async {
        while !api.get("/ann/").await.text().await.expect("body").contains("Ann, After") {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), landed).await.expect("the draft is published at once");
    assert_eq!(api.send(Method::GET, DRAFT, &ann, None).await.status(), StatusCode::NOT_FOUND, "and gone");
    let set: Value = api.send(Method::GET, SCHEDULE, &ann, None).await.json().await.expect("json");
    assert!(set["publish_at"].is_null(), "landed once: {set}");
}

#[tokio::test]
async fn a_hostile_archive_is_refused_whole_with_its_entry_named() {
    let dir = microsites_with(|c| quick(c).replace("[api]", "[api]\narchives_per_hour = 100\narchive_max_mb = 1"));
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let mine = br#"{"id": "ann", "name": "Ann"}"#.as_slice();
    let zeros = vec![0u8; 8 << 20];
    let bob_too = b"{\"id\": \"ann\", \"name\": \"Ann\"}\n{\"id\": \"bob\", \"name\": \"Not Ann's\"}\n".as_slice();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("empty", Vec::new(), StatusCode::UNPROCESSABLE_ENTITY, "archive"),
        (
            "traversal",
            archive(&[("documents/sites.ndjson", Some(mine)), ("../../evil.ndjson", Some(mine))]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "../../evil.ndjson",
        ),
        ("absolute", archive(&[("/etc/cron.d/x", Some(mine))]), StatusCode::UNPROCESSABLE_ENTITY, "/etc/cron.d/x"),
        ("a link", archive(&[("site/ann/index.html", None)]), StatusCode::UNPROCESSABLE_ENTITY, "site/ann/index.html"),
        ("elsewhere", archive(&[("etc/passwd", Some(mine))]), StatusCode::UNPROCESSABLE_ENTITY, "etc/passwd"),
        (
            "a bomb",
            archive(&[("documents/sites.ndjson", Some(mine)), ("site/zeros.html", Some(&zeros))]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "archive",
        ),
        ("not an archive", b"PK\x03\x04 not a tar.gz".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "archive"),
        (
            "another's document",
            archive(&[("documents/sites.ndjson", Some(bob_too))]),
            StatusCode::FORBIDDEN,
            "documents/sites.ndjson:2",
        ),
        (
            "another's draft",
            archive(&[("drafts/sites.ndjson", Some(br#"{"id": "bob", "draft": {"name": "Not Ann's"}}"#))]),
            StatusCode::FORBIDDEN,
            "drafts/sites.ndjson:1",
        ),
        (
            "a schedule a century ahead",
            archive(&[
                ("documents/sites.ndjson", Some(mine)),
                ("drafts/sites.ndjson", Some(br#"{"id": "ann", "unpublish_at": "2126-01-01T00:00:00Z"}"#)),
            ]),
            StatusCode::CONFLICT,
            "drafts/sites.ndjson:1",
        ),
        (
            "a draft line with a field of its own",
            archive(&[("drafts/sites.ndjson", Some(br#"{"id": "ann", "publish": "soon"}"#))]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "drafts/sites.ndjson:1",
        ),
        (
            "an undeclared collection",
            archive(&[("documents/secrets.ndjson", Some(mine))]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "documents/secrets.ndjson:1",
        ),
    ];
    for (what, body, status, field) in cases {
        let size = body.len();
        let r = import(&api, &ann, "ann", body).await;
        assert_eq!(r.status(), status, "{what} ({size} bytes)");
        let error: Value = r.json().await.expect("a JSON error");
        assert_eq!(error["field"].as_str(), Some(field), "{what}: {error}");
        // Nothing written: the site is still not there.
        let site = api.send(Method::GET, "/api/sites/ann", &ann, None).await;
        assert_eq!(site.status(), StatusCode::NOT_FOUND, "{what} wrote something");
    }
    // Too large to be read at all.
    let r = import(&api, &ann, "ann", vec![0u8; (1 << 20) + 1]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // And another account's site is not one to import into.
    let bob = api.sign_up("bob").await;
    let r = import(&api, &bob, "ann", archive(&[("documents/sites.ndjson", Some(mine))])).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A good one still goes in.
    let r = import(&api, &ann, "ann", archive(&[("documents/sites.ndjson", Some(mine))])).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// A restore reads the archive as it arrives, never whole: an image early in
/// the upload is stored while the rest is still on its way, and an upload
/// sent in chunks (no length declared) is cut off at `archive_max_mb`.
#[tokio::test]
async fn an_archive_is_restored_as_it_arrives() {
    // The image's stored bytes (named by their hash), from another sesame.
    let elsewhere = microsites_with(quick);
    let source = Server::in_process(elsewhere.path());
    let there = Api::new(&source);
    let someone = there.sign_up("someone").await;
    let r = there.upload(&someone, image_bytes(image::ImageFormat::Png, 40, 30), "image/png").await;
    let image = r.json::<Value>().await.expect("json")["ref"].as_str().expect("ref").to_string();
    let png = there.get(&format!("/media/{image}")).await.bytes().await.expect("the image").to_vec();

    let dir = microsites_with(|c| quick(c).replace("[api]", "[api]\narchives_per_hour = 100\narchive_max_mb = 1"));
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    // The image first, flushed so that it can be unpacked on its own, then
    // the documents.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let entry = |name: &str, bytes: &[u8], tar: &mut tar::Builder<_>| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, bytes).expect("append");
    };
    entry(&format!("site/media/{image}"), &png, &mut tar);
    std::io::Write::flush(tar.get_mut()).expect("flush");
    let first = std::mem::take(tar.get_mut().get_mut());
    let site = format!("{}\n", json!({"id": "ann", "name": "Ann, streamed", "avatar": image}));
    entry("documents/sites.ndjson", site.as_bytes(), &mut tar);
    let rest = tar.into_inner().expect("tar").finish().expect("gzip");

    let (send, body) = held_body();
    let upload = tokio::spawn({
        let (api, ann) = (api.clone(), ann.clone());
        async move { import(&api, &ann, "ann", body).await }
    });
    send.send(Ok(first)).await.expect("first part");
    let stored = async {
        while api.get(&format!("/media/{image}")).await.status() != StatusCode::OK {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), stored)
        .await
        .expect("the image is stored before the rest of the archive is sent");
    send.send(Ok(rest)).await.expect("the rest");
    drop(send);
    let r = upload.await.expect("task");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let restored: Value = r.json().await.expect("json");
    assert_eq!((restored["documents"].as_u64(), restored["media"].as_u64()), (Some(1), Some(1)), "{restored}");

    // Chunked, with no length to refuse it by: cut off past the limit.
    // Random bytes: gzip cannot shrink them.
    let mut rng = fastrand::Rng::with_seed(7);
    let noise: Vec<u8> = (0..(3 << 19)).map(|_| rng.u8(..)).collect();
    let big = archive(&[("site/noise.bin", Some(&noise))]);
    assert!(big.len() > 1 << 20, "incompressible: {} bytes", big.len());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let r = import(&api, &ann, "ann", reqwest::Body::wrap_stream(futures::stream::iter(chunks))).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json::<Value>().await.expect("json")["field"], "archive");
}

/// An upload still arriving after `archive_upload_seconds` is cut off with
/// 408, nothing written, and the next restore is not held off by it.
#[tokio::test]
async fn an_upload_slower_than_its_time_gets_408() {
    let dir =
        microsites_with(|c| quick(c).replace("[api]", "[api]\narchives_per_hour = 100\narchive_upload_seconds = 1"));
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let whole = archive(&[("documents/sites.ndjson", Some(br#"{"id": "ann", "name": "Ann"}"#))]);
    // Half the archive, and then nothing more while the connection stays open.
    let (send, body) = held_body();
    send.send(Ok(whole[..whole.len() / 2].to_vec())).await.expect("the first half");
    let started = std::time::Instant::now();
    let r = import(&api, &ann, "ann", body).await;
    assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "cut off after a second: {:?}", started.elapsed());
    assert_eq!(r.json::<Value>().await.expect("json")["field"], "archive");
    drop(send);
    assert_eq!(api.send(Method::GET, "/api/sites/ann", &ann, None).await.status(), StatusCode::NOT_FOUND);
    let r = import(&api, &ann, "ann", whole).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "the next restore goes in");
}
