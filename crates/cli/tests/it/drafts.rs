//! Drafts, preview links and scheduled publishing over HTTP, on the backend
//! `SESAME_TEST_BACKEND` selects: a draft reaches no public page until its
//! owner publishes it, a shared link works until revoked, and a schedule
//! lands on time, once, through a `kill -9` of the server.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const DRAFT: &str = "/api/collections/sites/docs/ann/draft";

async fn body_of(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

/// The field a 4xx names.
async fn field_of(r: reqwest::Response) -> String {
    body_of(r).await["field"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_draft_is_seen_by_its_owner_and_its_links_only_until_published() {
    let dir = microsites_with(quick);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let bob = api.sign_up("bob").await;
    let r = api.put_site(&ann, "ann", "Ann Public").await;
    api.published(&ann, change_id(&body_of(r).await)).await;

    // Saved as a put would be checked, and not published.
    let r = api.send(Method::PUT, DRAFT, &ann, Some(json!({"name": "Ann Draft\u{7}"}))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(r).await, "/name", "a draft is checked as a put");
    let r = api.send(Method::PUT, DRAFT, &ann, Some(json!({"name": "Ann Draft", "bio": "*soon*"}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = api.send(Method::PATCH, DRAFT, &ann, Some(json!({"bio": "*later*"}))).await;
    let draft = body_of(r).await;
    assert_eq!(draft["doc"], json!({"name": "Ann Draft", "bio": "*later*", "owner": "ann"}), "{draft}");
    let r = api.send(Method::PUT, "/api/sites/bob", &bob, Some(json!({"name": "Bob"}))).await;
    api.published(&bob, change_id(&body_of(r).await)).await;
    for path in ["/ann/", "/", "/sitemap.xml", "/ann/index.xml"] {
        let text = api.get(path).await.text().await.expect("body");
        assert!(!text.contains("Ann Draft"), "{path} shows the draft");
    }
    let published = api.get("/ann/").await.text().await.expect("body");
    assert!(published.contains("Ann Public"));

    // Another account sees and changes nothing of it.
    for (method, path, body) in [
        (Method::GET, DRAFT.to_string(), None),
        (Method::PUT, DRAFT.to_string(), Some(json!({"name": "Bob was here"}))),
        (Method::PATCH, DRAFT.to_string(), Some(json!({"name": "Bob was here"}))),
        (Method::DELETE, DRAFT.to_string(), None),
        (Method::POST, format!("{DRAFT}/publish"), None),
        (Method::POST, format!("{DRAFT}/links"), Some(json!({}))),
        (Method::GET, format!("{DRAFT}/links"), None),
        (Method::GET, "/api/collections/sites/docs/ann/schedule".to_string(), None),
        (
            Method::PUT,
            "/api/collections/sites/docs/ann/schedule".to_string(),
            Some(json!({"publish_at": "2099-01-01T00:00:00Z"})),
        ),
    ] {
        let r = api.send(method.clone(), &path, &bob, body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path} as another account");
    }
    // Nor a draft of a document it may not create.
    let r = api.send(Method::PUT, "/api/collections/sites/docs/cy/draft", &bob, Some(json!({"name": "Cy"}))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A shared link shows the draft to whoever has it, unindexed and uncached.
    let r = api.send(Method::POST, &format!("{DRAFT}/links"), &ann, Some(json!({"expires_in": 10}))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(r).await, "expires_in");
    let r = api.send(Method::POST, &format!("{DRAFT}/links"), &ann, Some(json!({"expires_in": 3600}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let link = body_of(r).await;
    let url = link["url"].as_str().expect("url");
    let path = &url[url.find("/api/previews/").expect("a preview path")..];
    let shared = api.get(path).await;
    assert_eq!(shared.status(), StatusCode::OK);
    for (name, value) in
        [("x-robots-tag", "noindex"), ("cache-control", "no-store"), ("referrer-policy", "no-referrer")]
    {
        assert_eq!(shared.headers()[name], value, "{name}");
    }
    assert!(shared.text().await.expect("body").contains("Ann Draft"));
    // A guessed, altered or malformed token finds nothing.
    let token = path.trim_start_matches("/api/previews/");
    let mut altered = token.to_string();
    altered.replace_range(10..11, if &token[10..11] == "0" { "1" } else { "0" });
    for wrong in [altered.as_str(), "ssm_0000", "ssm_%2e%2e%2fx", "%2e%2e"] {
        assert_eq!(api.get(&format!("/api/previews/{wrong}")).await.status(), StatusCode::NOT_FOUND, "{wrong}");
    }
    // Listed without its token; revoked, it is gone.
    let listed = body_of(api.send(Method::GET, &format!("{DRAFT}/links"), &ann, None).await).await;
    assert_eq!(listed.as_array().expect("list").len(), 1);
    assert!(!listed.to_string().contains(token), "the token is shown only once");
    let id = link["id"].as_str().expect("id");
    let r = api.send(Method::DELETE, &format!("{DRAFT}/links/{id}"), &bob, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api.send(Method::DELETE, &format!("{DRAFT}/links/{id}"), &ann, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.get(path).await.status(), StatusCode::NOT_FOUND, "a revoked link");

    // Published by its owner: the site changes, the draft and its links go.
    let r = api.send(Method::POST, &format!("{DRAFT}/links"), &ann, Some(json!({}))).await;
    let link = body_of(r).await;
    let url = link["url"].as_str().expect("url");
    let path = url[url.find("/api/previews/").expect("a preview path")..].to_string();
    let r = api.send(Method::POST, &format!("{DRAFT}/publish"), &ann, None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    api.published(&ann, change_id(&body_of(r).await)).await;
    assert!(api.get("/ann/").await.text().await.expect("body").contains("Ann Draft"));
    assert_eq!(api.send(Method::GET, DRAFT, &ann, None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.get(&path).await.status(), StatusCode::NOT_FOUND, "a published draft's link");
    let r = api.send(Method::POST, &format!("{DRAFT}/publish"), &ann, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing left to publish");
}

#[tokio::test]
async fn a_schedule_in_the_past_too_far_ahead_without_a_draft_or_beyond_the_limit_is_refused() {
    // A collection any account may add to, so one account can hold many documents.
    let dir = microsites_with(|c| {
        quick(c).replace("max_updates_per_hour = 600", "max_updates_per_hour = 100000")
            + "\n[collections.notes]\ntitle = \"title\"\ncreate = \"any\"\n"
    });
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let schedule = "/api/collections/notes/docs/n0/schedule";
    let soon = |s: i64| sesame_model::time::rfc3339_ms(sesame_model::time::now_ms() + s * 1000);
    let r = api.send(Method::PUT, schedule, &ann, Some(json!({"publish_at": soon(60)}))).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(field_of(r).await, "publish_at", "no draft to publish");
    let r = api.send(Method::PUT, "/api/collections/notes/docs/n0/draft", &ann, Some(json!({"title": "n0"}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Malformed: 422; well-formed but impossible now: 409. Each names its field.
    for (body, status, field) in [
        (json!({"publish_at": "tomorrow"}), StatusCode::UNPROCESSABLE_ENTITY, "publish_at"),
        (json!({"publish_at": soon(-5)}), StatusCode::CONFLICT, "publish_at"),
        (json!({"publish_at": soon(100 * 366 * 86_400)}), StatusCode::CONFLICT, "publish_at"),
        (json!({"publish_at": soon(60), "unpublish_at": soon(30)}), StatusCode::CONFLICT, "unpublish_at"),
        (json!({"unpublish_at": soon(30)}), StatusCode::CONFLICT, "unpublish_at"),
    ] {
        let r = api.send(Method::PUT, schedule, &ann, Some(body.clone())).await;
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(field_of(r).await, field, "{body}");
    }
    let r = api
        .send(Method::PUT, schedule, &ann, Some(json!({"publish_at": soon(3600), "unpublish_at": soon(7200)})))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let set = body_of(r).await;
    assert!(set["publish_at"].is_string() && set["unpublish_at"].is_string(), "{set}");
    // Setting it again replaces it: still two.
    let r = api
        .send(Method::PUT, schedule, &ann, Some(json!({"publish_at": soon(3000), "unpublish_at": soon(7000)})))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // One account holds at most 100 schedules waiting (two are set).
    for i in 1..=98 {
        let doc = format!("/api/collections/notes/docs/n{i}");
        let r = api.send(Method::PUT, &format!("{doc}/draft"), &ann, Some(json!({"title": format!("n{i}")}))).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = api.send(Method::PUT, &format!("{doc}/schedule"), &ann, Some(json!({"publish_at": soon(3600)}))).await;
        assert_eq!(r.status(), StatusCode::OK, "schedule {i}");
    }
    let doc = "/api/collections/notes/docs/n99";
    api.send(Method::PUT, &format!("{doc}/draft"), &ann, Some(json!({"title": "n99"}))).await;
    let r = api.send(Method::PUT, &format!("{doc}/schedule"), &ann, Some(json!({"publish_at": soon(3600)}))).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(field_of(r).await, "schedule");
    // Clearing one makes room.
    let r = api.send(Method::PUT, schedule, &ann, Some(json!({"publish_at": soon(3000)}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = api.send(Method::PUT, &format!("{doc}/schedule"), &ann, Some(json!({"publish_at": soon(3600)}))).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Polls `path` until `done` holds of its status and body; returns when.
async fn when(api: &Api, path: &str, done: impl Fn(StatusCode, &str) -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.get(path).await;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if done(status, &text) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{path} never changed: {status} {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_scheduled_publish_and_unpublish_land_on_time_once_through_a_kill_9() {
    let dir = microsites_with(quick);
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let r = api.put_site(&ann, "ann", "Ann Before").await;
    api.published(&ann, change_id(&body_of(r).await)).await;
    let r = api.send(Method::PUT, DRAFT, &ann, Some(json!({"name": "Ann Scheduled"}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let now = sesame_model::time::now_ms();
    let (publish_at, unpublish_at) = (now + 6_000, now + 10_000);
    let r = api
        .send(
            Method::PUT,
            "/api/collections/sites/docs/ann/schedule",
            &ann,
            Some(json!({
                "publish_at": sesame_model::time::rfc3339_ms(publish_at),
                "unpublish_at": sesame_model::time::rfc3339_ms(unpublish_at),
            })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Killed with the schedule waiting (and the publisher idle: a publisher
    // killed while it holds the publish lease is succeeded when the lease
    // expires); a new server takes over.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.kill();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    // Instants on the test's clock for the store's due times.
    let at = |ms: i64| Instant::now() + Duration::from_millis((ms - sesame_model::time::now_ms()).max(0) as u64);
    let (publish_due, unpublish_due) = (at(publish_at), at(unpublish_at));

    let published = when(&api, "/ann/", |s, t| s == StatusCode::OK && t.contains("Ann Scheduled")).await;
    assert!(published + Duration::from_millis(50) >= publish_due, "published before its time");
    let late = published.saturating_duration_since(publish_due);
    assert!(late < Duration::from_secs(1), "published {late:?} after its time");
    let gone = when(&api, "/ann/", |s, _| s != StatusCode::OK).await;
    assert!(gone + Duration::from_millis(50) >= unpublish_due, "unpublished before its time");
    let late = gone.saturating_duration_since(unpublish_due);
    assert!(late < Duration::from_secs(1), "unpublished {late:?} after its time");

    // Once each: the first version, the scheduled one, the unpublish.
    let versions = body_of(api.send(Method::GET, "/api/sites/ann/versions", &ann, None).await).await;
    let states: Vec<&str> =
        versions.as_array().expect("versions").iter().map(|v| v["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["deleted", "live", "live"], "{versions}");
    // The unpublished content is kept as the draft; nothing is scheduled.
    let draft = body_of(api.send(Method::GET, DRAFT, &ann, None).await).await;
    assert_eq!(draft["doc"]["name"], "Ann Scheduled", "{draft}");
    assert_eq!(draft["schedule"], json!({"publish_at": null, "unpublish_at": null}));
}
