//! Safe with strangers: each test is an attack that once worked, tried
//! against a real server (on SQLite or PostgreSQL, as the test run selects).

use reqwest::Method;
use reqwest::StatusCode;
use reqwest::header::ETAG;
use serde_json::{Value, json};

use crate::support::{ADMIN, Api, Server, built_example_with, change_id, eventually, microsites_with, ok, quick};

/// Starts `serve` with the admin token.
fn serve(dir: &std::path::Path) -> Server {
    Server::in_process_with_admin(dir)
}

/// The token `sesame accounts claim|create` printed.
fn printed_token(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split_once("Bearer TOKEN): ").map(|(_, t)| t.trim().to_string()))
        .unwrap_or_else(|| panic!("no token in {out}"))
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.expect("a JSON error body"))
}

/// Publishes one change of `token` and returns its generation.
async fn published(api: &Api, token: &str, r: reqwest::Response) -> u64 {
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let change = change_id(&r.json().await.expect("json"));
    api.published(token, change).await["generation"].as_u64().expect("generation")
}

#[tokio::test]
async fn takeover_by_sign_up_is_refused_until_the_operator_hands_the_content_over() {
    let dir = microsites_with(quick);
    let server = serve(dir.path());
    let api = Api::new(&server);
    // The imported site /ada/ names "ada": nobody may register that handle.
    let r = api.http.post(format!("{}/api/accounts", api.base)).json(&json!({"handle": "ada"})).send().await;
    let (status, body) = error_of(r.expect("request")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "handle");
    assert!(body["error"].as_str().expect("error").contains("sesame accounts claim"), "{body}");
    // Nor may any other account edit it.
    let mallory = api.sign_up("mallory").await;
    for (method, path) in [(Method::PATCH, "/api/sites/ada"), (Method::PUT, "/api/collections/sites/docs/ada")] {
        let r = api.send(method.clone(), path, &mallory, Some(json!({"name": "pwned"}))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    // The operator hands it over; its owner edits it.
    let ada = printed_token(&ok(dir.path(), &["accounts", "claim", "ada"]));
    let r = api.send(Method::PATCH, "/api/sites/ada", &ada, Some(json!({"name": "Ada, claimed"}))).await;
    published(&api, &ada, r).await;
    assert!(api.get("/ada/").await.text().await.expect("body").contains("<h1>Ada, claimed</h1>"));
    let r = api.send(Method::PATCH, "/api/sites/ada", &mallory, Some(json!({"name": "pwned"}))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "still not mallory's");
}

#[tokio::test]
async fn squatting_another_handle_is_refused() {
    let dir = microsites_with(quick);
    let server = serve(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    // One site per account, at its own handle: not bob's, not a second one.
    for id in ["bob", "alice2"] {
        let r = api.send(Method::PUT, &format!("/api/collections/sites/docs/{id}"), &alice, Some(json!({}))).await;
        let (status, body) = error_of(r).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{id}: {body}");
    }
    let r = api.send(Method::PUT, "/api/sites/bob", &alice, Some(json!({"name": "Not Bob"}))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Handles that would confuse (punycode, double hyphens) are malformed;
    // route and platform names are taken by the system.
    for (handle, status) in [
        ("xn--80ak6aa92e", StatusCode::UNPROCESSABLE_ENTITY),
        ("a--b", StatusCode::UNPROCESSABLE_ENTITY),
        ("sites", StatusCode::CONFLICT),
        ("static", StatusCode::CONFLICT),
        ("api", StatusCode::CONFLICT),
        ("admin", StatusCode::CONFLICT),
    ] {
        let r = api.http.post(format!("{}/api/accounts", api.base)).json(&json!({ "handle": handle })).send().await;
        assert_eq!(r.expect("request").status(), status, "{handle}");
    }
    // Bob arrives later and finds his handle and his site free.
    let bob = api.sign_up("bob").await;
    let r = api.put_site(&bob, "bob", "Bob's").await;
    published(&api, &bob, r).await;
    assert!(api.get("/bob/").await.text().await.expect("body").contains("Bob&#39;s"));
}

#[tokio::test]
async fn gallery_items_belong_to_their_writer_whatever_they_claim() {
    let dir = built_example_with("gallery", &|c| {
        c + "\n[queue]\nquiet_ms = 100\nmax_wait_ms = 400\n[api]\nmax_updates_per_hour = 600\n"
    });
    let server = serve(dir.path());
    let api = Api::new(&server);
    // An owner of imported sprites (alice, 101hello) cannot be signed up as.
    for handle in ["101hello", "alice"] {
        let r = api.http.post(format!("{}/api/accounts", api.base)).json(&json!({ "handle": handle })).send().await;
        assert_eq!(r.expect("request").status(), StatusCode::CONFLICT, "{handle}");
    }
    let trent = api.sign_up("trent").await;
    let zed = api.sign_up("zed").await;
    // Any new id; the owner field is forced to the writer.
    let doc = json!({"title": "Mine", "owner": "zed", "created": "2024-01-01", "tags": ["x"]});
    let r = api.send(Method::PUT, "/api/collections/sprites/docs/trent-1", &trent, Some(doc)).await;
    published(&api, &trent, r).await;
    let stored: Value =
        api.send(Method::GET, "/api/collections/sprites/docs/trent-1", &trent, None).await.json().await.expect("json");
    assert_eq!(stored["doc"]["owner"], "trent");
    let r = api.send(Method::PUT, "/api/collections/sprites/docs/trent-1", &zed, Some(json!({"title": "Zed's now"})));
    assert_eq!(r.await.status(), StatusCode::FORBIDDEN);
    // Imported items belong to nobody's account: not editable by users.
    let r = api.send(Method::PATCH, "/api/collections/sprites/docs/132", &trent, Some(json!({"title": "x"}))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// Mallory's site in two versions, then taken down by an admin: the
/// generations of both versions.
async fn mallory_taken_down(api: &Api) -> (String, u64, u64) {
    let mallory = api.sign_up("mallory").await;
    let g1 = published(api, &mallory, api.put_site(&mallory, "mallory", "Mallory v1").await).await;
    let g2 = published(api, &mallory, api.put_site(&mallory, "mallory", "Mallory v2").await).await;
    let takedown = json!({"collection": "sites", "id": "mallory"});
    let r = api.send(Method::POST, "/api/admin/takedown", ADMIN, Some(takedown)).await;
    published(api, ADMIN, r).await;
    assert_eq!(api.get("/mallory/").await.status(), StatusCode::GONE);
    (mallory, g1, g2)
}

#[tokio::test]
async fn moderation_sticks_through_rollback_and_the_owners_writes() {
    let dir = microsites_with(quick);
    let server = serve(dir.path());
    let api = Api::new(&server);
    let (mallory, g1, _) = mallory_taken_down(&api).await;
    let r = api.send(Method::POST, "/api/sites/mallory/rollback", &mallory, Some(json!({"generation": g1}))).await;
    published(&api, &mallory, r).await;
    assert_eq!(api.get("/mallory/").await.status(), StatusCode::GONE, "a rollback does not undo a takedown");
    let r = api.put_site(&mallory, "mallory", "Mallory v3").await;
    let status = api.published(&mallory, change_id(&r.json().await.expect("json"))).await;
    assert!(status["urls"].as_array().is_none_or(Vec::is_empty), "no page serves it: {status}");
    assert_eq!(api.get("/mallory/").await.status(), StatusCode::GONE, "nor does a new write");
    let r = api.send(Method::DELETE, "/api/collections/sites/docs/mallory", &mallory, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "deleting it would free the path");
    let r = api.send(Method::DELETE, "/api/collections/sites/docs/mallory", ADMIN, None).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "an admin restores before deleting");
    // Only an admin's restore brings it back, with the latest content.
    let r = api.send(Method::POST, "/api/admin/restore", ADMIN, Some(json!({"collection": "sites", "id": "mallory"})));
    published(&api, ADMIN, r.await).await;
    let page = api.get("/mallory/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("body").contains("Mallory v3"));
    drop(server);
    assert!(ok(dir.path(), &["verify"]).contains("identical"));
}

#[tokio::test]
async fn moderation_sticks_through_versioned_urls() {
    let dir = microsites_with(quick);
    let server = serve(dir.path());
    let api = Api::new(&server);
    let mallory = api.sign_up("mallory").await;
    let g1 = published(&api, &mallory, api.put_site(&mallory, "mallory", "Mallory v1").await).await;
    let etag = api.get("/mallory/").await.headers()[ETAG].to_str().expect("ascii").trim_matches('"').to_string();
    assert_eq!(api.get(&format!("/mallory/?v={g1}")).await.status(), StatusCode::OK);
    let takedown = json!({"collection": "sites", "id": "mallory"});
    published(&api, ADMIN, api.send(Method::POST, "/api/admin/takedown", ADMIN, Some(takedown)).await).await;
    for path in [format!("/mallory/?v={g1}"), format!("/_v/{etag}"), format!("/sites/?v={g1}")] {
        let r = api.get(&path).await;
        assert_eq!(r.status(), StatusCode::GONE, "{path}");
        assert!(!r.text().await.expect("body").contains("Mallory v1"), "{path}");
    }
    assert_eq!(api.get(&format!("/ada/?v={g1}")).await.status(), StatusCode::OK, "other pages keep their history");
    let restore = json!({"collection": "sites", "id": "mallory"});
    published(&api, ADMIN, api.send(Method::POST, "/api/admin/restore", ADMIN, Some(restore)).await).await;
    assert_eq!(api.get(&format!("/mallory/?v={g1}")).await.status(), StatusCode::OK, "restored, history is back");
}

#[tokio::test]
async fn moderation_sticks_when_another_document_claims_the_path() {
    // Sites open to any id: a second document of mallory's would also live at /mallory/.
    let dir = microsites_with(|c| quick(c).replace("create = \"own-handle\"", "create = \"any\""));
    let server = serve(dir.path());
    let api = Api::new(&server);
    let (mallory, _, _) = mallory_taken_down(&api).await;
    let r = api.send(Method::PUT, "/api/collections/sites/docs/mallory-2", &mallory, Some(json!({"name": "Back"})));
    let (status, body) = error_of(r.await).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "path");
    assert!(body["error"].as_str().expect("error").contains("/mallory/ belongs to another document (sites/mallory)"));
    // The operator's content contesting the path does not take it over either.
    let events = crate::support::write(
        dir.path(),
        "contest.ndjson",
        "{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"a-mallory\",\"doc\":{\"owner\":\"mallory\",\"name\":\"Twin\"}}\n",
    );
    ok(dir.path(), &["apply", events.to_str().expect("utf-8")]);
    let r = api.get("/mallory/").await;
    assert_eq!(r.status(), StatusCode::GONE, "the taken-down document keeps its path");
    assert!(!r.text().await.expect("body").contains("Twin"));
}

#[tokio::test]
async fn invalidations_are_rate_limited() {
    // A purge endpoint that counts calls.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let receiver = axum::Router::new().route(
        "/purge",
        axum::routing::post(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { axum::Json(json!({ "success": true })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let dir = microsites_with(move |c| {
        quick(c) + &format!("\n[purge]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/purge\"\n")
    });
    let server = serve(dir.path());
    let api = Api::new(&server);
    let token = api.sign_up("ivan").await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(api.send(Method::POST, "/api/sites/ivan/invalidate", &token, None).await.status());
    }
    let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    assert_eq!(accepted, 12, "the hourly budget: {statuses:?}");
    assert!(statuses[12..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS));
    let r = api.send(Method::POST, "/api/sites/ivan/invalidate", &token, None).await;
    assert!(r.headers().contains_key("retry-after"));
    // Each accepted invalidation was queued before its 202: wait until the
    // queue is done, then count.
    eventually("the purge queue done", || async {
        let pending = server.metric("sesame_purge_pending").await;
        if pending == 0.0 { Ok(()) } else { Err(format!("{pending} jobs pending")) }
    })
    .await;
    let made = calls.load(std::sync::atomic::Ordering::Relaxed);
    assert!((12..=24).contains(&made), "one or two purge calls per invalidation: {made}");
}
