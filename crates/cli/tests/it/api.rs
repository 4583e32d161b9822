//! The write path end to end: accounts and tokens over real HTTP, debounced
//! publishing, rate limits, rollback, versioned URLs, CDN purge calls, and
//! clear 4xx answers for bad input.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, RETRY_AFTER};
use serde_json::{Value, json};

use crate::support::{ADMIN, Api, Server, change_id, client, eventually, microsites_with, ok, quick};

#[tokio::test]
async fn accounts_own_their_sites_and_edits_get_published() {
    let dir = microsites_with(quick);
    let server = Server::in_process_with_admin(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    let bob = api.sign_up("bob").await;

    let r = api.put_site(&alice, "alice", "Alice's Garden").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let change = change_id(&r.json().await.expect("json"));
    // Bob may not edit, patch, delete or even see Alice's site or change.
    assert_eq!(api.put_site(&bob, "alice", "Bob was here").await.status(), StatusCode::FORBIDDEN);
    let patch = api.send(reqwest::Method::PATCH, "/api/sites/alice", &bob, Some(json!({"name": "x"}))).await;
    assert_eq!(patch.status(), StatusCode::FORBIDDEN);
    let body: Value = patch.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("another account"), "{body}");
    assert_eq!(
        api.send(reqwest::Method::DELETE, "/api/collections/sites/docs/alice", &bob, None).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.send(reqwest::Method::GET, &format!("/api/changes/{change}"), &bob, None).await.status(),
        StatusCode::NOT_FOUND
    );

    let status = api.published(&alice, change).await;
    assert_eq!(status["urls"][0], "http://127.0.0.1:8080/alice/");
    let page = api.get("/alice/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-security-policy"].to_str().expect("ascii").contains("object-src 'none'"));
    assert!(page.text().await.expect("body").contains("<h1>Alice&#39;s Garden</h1>"));
    let directory = api.get("/sites/").await.text().await.expect("body");
    assert!(directory.contains("Alice&#39;s Garden"));

    // The account can read its own latest document; a second sign-up with
    // the same handle, a reserved handle and an invalid one are refused.
    let mine: Value =
        api.send(reqwest::Method::GET, "/api/sites/alice", &alice, None).await.json().await.expect("json");
    assert_eq!(mine["doc"]["name"], "Alice's Garden");
    assert_eq!(mine["owner"], "alice");
    let taken = api
        .http
        .post(format!("{}/api/accounts", api.base))
        .json(&json!({"handle": "alice"}))
        .send()
        .await
        .expect("request");
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    for (handle, status) in [
        ("api", StatusCode::CONFLICT),
        ("static", StatusCode::CONFLICT),
        ("sites", StatusCode::CONFLICT),
        // Derived from the site's routes and files (regression: `sitemap` was taken).
        ("sitemap", StatusCode::CONFLICT),
        ("sitemaps", StatusCode::CONFLICT),
        ("robots", StatusCode::CONFLICT),
        ("media", StatusCode::CONFLICT),
        ("404", StatusCode::CONFLICT),
        ("Bad_Handle", StatusCode::UNPROCESSABLE_ENTITY),
        ("-x", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let field = "handle";
        let r = api
            .http
            .post(format!("{}/api/accounts", api.base))
            .json(&json!({ "handle": handle }))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), status, "{handle}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["field"], field, "{handle}: {body}");
    }

    // Admins moderate; users may not.
    let r = api
        .send(reqwest::Method::POST, "/api/admin/takedown", &bob, Some(json!({"collection": "sites", "id": "alice"})))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api
        .send(reqwest::Method::POST, "/api/admin/takedown", ADMIN, Some(json!({"collection": "sites", "id": "alice"})))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    api.published(ADMIN, change_id(&r.json().await.expect("json"))).await;
    assert_eq!(api.get("/alice/").await.status(), StatusCode::GONE);
    let r = api
        .send(
            reqwest::Method::POST,
            "/api/admin/moderate",
            ADMIN,
            Some(json!({"collection": "sites", "removed": [], "adult": ["alice", "nobody"]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["changed"].as_u64(), body["missing"].as_u64()), (Some(1), Some(1)));
    let r = api
        .send(reqwest::Method::POST, "/api/admin/restore", ADMIN, Some(json!({"collection": "sites", "id": "alice"})))
        .await;
    api.published(ADMIN, change_id(&r.json().await.expect("json"))).await;
    let page = api.get("/alice/").await.text().await.expect("body");
    assert!(page.contains("<meta name=\"robots\" content=\"noindex\">"), "adult flag kept: noindex");

    // Operations endpoints.
    let health: Value = api.get("/healthz").await.json().await.expect("json");
    assert_eq!(health["status"], "ok");
    let metrics = api.get("/metrics").await.text().await.expect("body");
    for name in [
        "sesame_events_accepted_total",
        "sesame_batches_total",
        "sesame_pages_rendered_total",
        "sesame_publish_latency_seconds_bucket",
        "sesame_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    drop(server);
    assert!(ok(dir.path(), &["verify"]).contains("identical"));
}

#[tokio::test]
async fn fifty_rapid_saves_cost_one_render_and_the_last_one_wins() {
    let dir = microsites_with(|c| c.replace("quiet_ms = 2000", "quiet_ms = 1500"));
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let token = api.sign_up("carol").await;
    let mut changes = Vec::new();
    for i in 0..50 {
        let r = api.put_site(&token, "carol", &format!("Carol, draft {i}")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "save {i}");
        changes.push(change_id(&r.json().await.expect("json")));
    }
    let last = api.published(&token, *changes.last().expect("50 changes")).await;
    let generation = last["generation"].as_u64().expect("generation");
    for id in &changes {
        let s = api.published(&token, *id).await;
        assert_eq!(s["generation"].as_u64(), Some(generation), "all 50 saves published by one generation");
    }
    let page = api.get("/carol/").await.text().await.expect("body");
    assert!(page.contains("Carol, draft 49"));
    let versions: Value =
        api.send(reqwest::Method::GET, "/api/sites/carol/versions", &token, None).await.json().await.expect("json");
    assert_eq!(versions.as_array().expect("list").len(), 1, "one published version: {versions}");
    // One batch: the site page, its two feeds and the directory page
    // rendered once each (and the sitemap chunk).
    let metrics = api.get("/metrics").await.text().await.expect("body");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(value("sesame_batches_total"), 1.0, "{metrics}");
    assert_eq!(value("sesame_events_coalesced_total"), 49.0);
    assert!(value("sesame_pages_rendered_total") <= 5.0, "site page, its feeds, directory, sitemap chunk");
}

#[tokio::test]
async fn past_the_hourly_limit_writes_get_429_and_nothing_accepted_is_lost() {
    let dir = microsites_with(|c| quick(c).replace("max_updates_per_hour = 600", "max_updates_per_hour = 5"));
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let token = api.sign_up("dan").await;
    let mut last = 0;
    for i in 0..5 {
        let r = api.put_site(&token, "dan", &format!("Dan {i}")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        last = change_id(&r.json().await.expect("json"));
    }
    let r = api.put_site(&token, "dan", "Dan 5").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()[RETRY_AFTER].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry > 0 && retry <= 720, "{retry}");
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"].as_str().expect("error").starts_with("max updates per hour reached, try again in "),
        "{body}"
    );
    api.published(&token, last).await;
    assert!(api.get("/dan/").await.text().await.expect("body").contains("Dan 4"));
}

#[tokio::test]
async fn rollback_serves_the_old_bytes_and_roll_forward_the_new() {
    let dir = microsites_with(quick);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let token = api.sign_up("erin").await;
    let first = change_id(&api.put_site(&token, "erin", "Erin v1").await.json().await.expect("json"));
    let g1 = api.published(&token, first).await["generation"].as_u64().expect("generation");
    let v1 = api.get("/erin/").await.headers()[ETAG].clone();
    let second = change_id(&api.put_site(&token, "erin", "Erin v2").await.json().await.expect("json"));
    let g2 = api.published(&token, second).await["generation"].as_u64().expect("generation");
    let v2 = api.get("/erin/").await.headers()[ETAG].clone();
    assert_ne!(v1, v2);

    // The old version stays reachable at an immutable URL.
    let old = api.get(&format!("/erin/?v={g1}")).await;
    assert_eq!(old.headers()[ETAG], v1);
    assert_eq!(old.headers()[CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(old.text().await.expect("body").contains("<link rel=\"canonical\" href=\"http://127.0.0.1:8080/erin/\">"));

    let versions: Value =
        api.send(reqwest::Method::GET, "/api/sites/erin/versions", &token, None).await.json().await.expect("json");
    let listed: Vec<u64> = versions.as_array().expect("list").iter().filter_map(|v| v["generation"].as_u64()).collect();
    assert_eq!(listed, vec![g2, g1]);

    let back =
        api.send(reqwest::Method::POST, "/api/sites/erin/rollback", &token, Some(json!({ "generation": g1 }))).await;
    assert_eq!(back.status(), StatusCode::ACCEPTED);
    api.published(&token, change_id(&back.json().await.expect("json"))).await;
    assert_eq!(api.get("/erin/").await.headers()[ETAG], v1, "rollback serves the old bytes");
    let forward =
        api.send(reqwest::Method::POST, "/api/sites/erin/rollback", &token, Some(json!({ "generation": g2 }))).await;
    api.published(&token, change_id(&forward.json().await.expect("json"))).await;
    assert_eq!(api.get("/erin/").await.headers()[ETAG], v2, "roll forward serves the new bytes");
    let nowhere =
        api.send(reqwest::Method::POST, "/api/sites/erin/rollback", &token, Some(json!({ "generation": 0 }))).await;
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    // A deleted site is written anew, not rolled back.
    let deleted = api.send(reqwest::Method::DELETE, "/api/collections/sites/docs/erin", &token, None).await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    api.published(&token, change_id(&deleted.json().await.expect("json"))).await;
    let back =
        api.send(reqwest::Method::POST, "/api/sites/erin/rollback", &token, Some(json!({ "generation": g1 }))).await;
    assert_eq!(back.status(), StatusCode::NOT_FOUND);
    let body: Value = back.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("was deleted; write it again"), "{body}");
    drop(server);
    assert!(ok(dir.path(), &["verify"]).contains("identical"));
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_never_a_5xx() {
    let dir = microsites_with(|c| {
        c.replace("max_updates_per_hour = 600", "max_updates_per_hour = 600\nmax_body_bytes = 4096")
    });
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let token = api.sign_up("fay").await;
    let raw = |method: reqwest::Method, path: &str, content_type: &str, body: Vec<u8>| {
        api.http
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(&token)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Response, StatusCode, Option<&str>)> = vec![
        (
            raw(reqwest::Method::PUT, "/api/sites/fay", "application/json", b"{\"name\": ".to_vec())
                .await
                .expect("request"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            raw(reqwest::Method::PUT, "/api/sites/fay", "application/json", b"[1, 2]".to_vec()).await.expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            raw(reqwest::Method::PUT, "/api/sites/fay", "application/json", br#"{"name": 42}"#.to_vec())
                .await
                .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("/name"),
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/api/sites/fay",
                "application/json",
                br#"{"sections": [{"body": true}]}"#.to_vec(),
            )
            .await
            .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("/sections/0/body"),
        ),
        (
            raw(reqwest::Method::PUT, "/api/sites/fay", "text/plain", b"{}".to_vec()).await.expect("request"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/api/sites/fay",
                "application/json",
                format!("{{\"name\": \"{}\"}}", "x".repeat(10_000)).into_bytes(),
            )
            .await
            .expect("request"),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
        (
            raw(reqwest::Method::PUT, "/api/sites/Not-A-Handle", "application/json", b"{}".to_vec())
                .await
                .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("handle"),
        ),
        (
            raw(reqwest::Method::PUT, "/api/collections/blogs/docs/x", "application/json", b"{}".to_vec())
                .await
                .expect("request"),
            StatusCode::NOT_FOUND,
            Some("collection"),
        ),
        (
            raw(reqwest::Method::PUT, "/api/collections/sites/docs/..%2F..%2Fetc", "application/json", b"{}".to_vec())
                .await
                .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("id"),
        ),
        (
            raw(reqwest::Method::PUT, "/api/collections/sites/docs/.hidden", "application/json", b"{}".to_vec())
                .await
                .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("id"),
        ),
        (
            raw(
                reqwest::Method::POST,
                "/api/sites/fay/rollback",
                "application/json",
                br#"{"generation": "soon"}"#.to_vec(),
            )
            .await
            .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("generation"),
        ),
        (
            raw(
                reqwest::Method::POST,
                "/api/accounts",
                "application/json",
                br#"{"handle": "ok", "extra": 1}"#.to_vec(),
            )
            .await
            .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("extra"),
        ),
        (
            raw(reqwest::Method::GET, "/api/changes/notanumber", "application/json", Vec::new())
                .await
                .expect("request"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            raw(reqwest::Method::GET, "/api/nope", "application/json", Vec::new()).await.expect("request"),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            api.http.put(format!("{}/api/sites/fay", api.base)).json(&json!({})).send().await.expect("request"),
            StatusCode::UNAUTHORIZED,
            None,
        ),
        (
            api.http
                .put(format!("{}/api/sites/fay", api.base))
                .bearer_auth("ssm_wrong")
                .json(&json!({}))
                .send()
                .await
                .expect("request"),
            StatusCode::UNAUTHORIZED,
            None,
        ),
    ];
    for (i, (response, status, field)) in cases.into_iter().enumerate() {
        assert_eq!(response.status(), status, "case {i}");
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("case {i}: not JSON: {e}"));
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "case {i}: {body}");
        if let Some(f) = field {
            assert_eq!(body["field"], f, "case {i}: {body}");
        }
    }
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes() {
    let dir = microsites_with(|c| c);
    let server = Server::in_process(dir.path());
    let doc: Value = Api::new(&server).get("/api/openapi.json").await.json().await.expect("json");
    // Image fields name an image by its reference; text refuses control
    // characters (regression: image fields were only "string").
    let image = &doc["components"]["schemas"]["Fields_sites"]["$defs"]["image"];
    assert_eq!(image["pattern"], "^[0-9a-f]{64}\\.(png|jpg|gif|webp)$", "{image}");
    let bio = &doc["components"]["schemas"]["Fields_sites"]["properties"]["bio"];
    assert!(bio["pattern"].as_str().is_some_and(|p| p.contains("\\u0000-\\u0008")), "{bio}");
    let mut paths: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(p, ops)| ops.as_object().expect("ops").keys().map(move |m| format!("{} {p}", m.to_uppercase())))
        .collect();
    paths.sort();
    let expected = [
        "DELETE /api/collections/sites/docs/{id}",
        "DELETE /api/collections/sites/docs/{id}/draft",
        "DELETE /api/collections/sites/docs/{id}/draft/links/{link}",
        "DELETE /api/sites/{handle}/domains/{host}",
        "GET /api/changes/{id}",
        "GET /api/collections/sites/docs/{id}",
        "GET /api/collections/sites/docs/{id}/draft",
        "GET /api/collections/sites/docs/{id}/draft/links",
        "GET /api/collections/sites/docs/{id}/schedule",
        "GET /api/previews/{token}",
        "GET /api/sites/{handle}",
        "GET /api/sites/{handle}/domains",
        "GET /api/sites/{handle}/export",
        "GET /api/sites/{handle}/versions",
        "PATCH /api/collections/sites/docs/{id}",
        "PATCH /api/collections/sites/docs/{id}/draft",
        "PATCH /api/sites/{handle}",
        "POST /api/accounts",
        "POST /api/admin/flag",
        "POST /api/admin/moderate",
        "POST /api/admin/restore",
        "POST /api/admin/takedown",
        "POST /api/collections/sites/docs/{id}/draft/links",
        "POST /api/collections/sites/docs/{id}/draft/publish",
        "POST /api/media",
        "POST /api/preview/collections/sites/docs/{id}",
        "POST /api/preview/sites/{handle}",
        "POST /api/sites/{handle}/build",
        "POST /api/sites/{handle}/domains",
        "POST /api/sites/{handle}/domains/{host}/check",
        "POST /api/sites/{handle}/import",
        "POST /api/sites/{handle}/invalidate",
        "POST /api/sites/{handle}/rollback",
        "PUT /api/collections/sites/docs/{id}",
        "PUT /api/collections/sites/docs/{id}/draft",
        "PUT /api/collections/sites/docs/{id}/schedule",
        "PUT /api/sites/{handle}",
    ];
    assert_eq!(paths, expected);
}

/// Twenty `kill -9`s at random moments while clients write: every write
/// answered 202 is published after the restart, and the site equals a full
/// build.
#[tokio::test]
async fn acknowledged_writes_survive_twenty_kill_9s() {
    let dir = microsites_with(|c| {
        c.replace("quiet_ms = 2000", "quiet_ms = 100")
            .replace("max_wait_ms = 60000", "max_wait_ms = 400")
            // The check at the end reads the status of every acknowledged write.
            .replace("max_updates_per_hour = 600", "max_updates_per_hour = 1000000\nstatus_reads_per_minute = 1000000")
    });
    let handles = ["gus", "hal", "ivy"];
    let mut tokens = Vec::new();
    let mut acked: Vec<(String, i64)> = Vec::new();
    // Kill moments from a fixed-seed generator: random, and the same every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let server = Server::start(dir.path());
        let api = Api::new(&server);
        if tokens.is_empty() {
            for h in handles {
                tokens.push(api.sign_up(h).await);
            }
        }
        // Clients stream writes; the server is killed while they do.
        let mut clients = Vec::new();
        for (h, token) in handles.iter().zip(&tokens) {
            let (h, token, base) = (h.to_string(), token.clone(), server.base.clone());
            clients.push(tokio::spawn(async move {
                let http = client();
                let mut mine = Vec::new();
                for i in 0.. {
                    let name = format!("{h} round {round} write {i}");
                    let r = http
                        .put(format!("{base}/api/sites/{h}"))
                        .bearer_auth(&token)
                        .json(&json!({ "name": name }))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == StatusCode::ACCEPTED => {
                            let body: Value = r.json().await.expect("json");
                            mine.push((token.clone(), change_id(&body)));
                        }
                        Ok(r) => panic!("unexpected {}", r.status()),
                        Err(_) => break, // the server is gone
                    }
                }
                mine
            }));
        }
        tokio::time::sleep(Duration::from_millis(100 + seed % 900)).await;
        server.kill();
        for c in clients {
            acked.extend(c.await.expect("client"));
        }
    }
    assert!(acked.len() > 100, "only {} writes were acknowledged", acked.len());
    // After a restart every acknowledged write gets published.
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    for (token, change) in &acked {
        api.published(token, *change).await;
    }
    for (h, token) in handles.iter().zip(&tokens) {
        let latest: Value =
            api.send(reqwest::Method::GET, &format!("/api/sites/{h}"), token, None).await.json().await.expect("json");
        let name = latest["doc"]["name"].as_str().expect("name").replace('\'', "&#39;");
        assert!(
            api.get(&format!("/{h}/")).await.text().await.expect("body").contains(&name),
            "{h} serves its latest write"
        );
    }
    drop(server);
    assert!(ok(dir.path(), &["verify"]).contains("identical"));
}

#[tokio::test]
async fn purge_calls_arrive_in_cloudflare_format_and_batches() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/client/v4/zones/zone1/purge_cache",
        axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                sink.lock().expect("lock").push((auth, body));
                axum::Json(json!({ "success": true }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let dir = microsites_with(move |c| {
        quick(c)
            + &format!(
                "\n[purge]\nkind = \"cloudflare\"\nurl = \"http://127.0.0.1:{port}/client/v4/zones/zone1/purge_cache\"\nbatch = 2\n"
            )
    });
    let server = Server::start_with(dir.path(), &[("SESAME_PURGE_TOKEN", "cf-token")], "127.0.0.1:0");
    let api = Api::new(&server);
    let mut changes = Vec::new();
    for h in ["jo", "kim", "lee"] {
        let token = api.sign_up(h).await;
        changes.push((token.clone(), change_id(&api.put_site(&token, h, h).await.json().await.expect("json"))));
    }
    for (token, change) in &changes {
        api.published(token, *change).await;
    }
    let urls = eventually("purges of the three sites", || async {
        let calls = received.lock().expect("lock").clone();
        let urls: Vec<String> = calls
            .iter()
            .flat_map(|(_, b)| b["files"].as_array().cloned().unwrap_or_default())
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect();
        if !["jo", "kim", "lee"].iter().all(|h| urls.contains(&format!("http://127.0.0.1:8080/{h}/"))) {
            return Err(format!("{calls:?}"));
        }
        for (auth, body) in &calls {
            assert_eq!(auth, "Bearer cf-token");
            let list = body.get("files").or_else(|| body.get("tags")).and_then(Value::as_array).expect("files or tags");
            assert!(!list.is_empty() && list.len() <= 2, "batched by 2: {body}");
        }
        Ok(urls)
    })
    .await;
    assert!(urls.contains(&"http://127.0.0.1:8080/sites/".to_string()), "the directory changed too");
    assert!(urls.iter().all(|u| !u.contains("/_v/") && !u.contains("?v=")), "immutable URLs are never purged");
    // Explicit invalidation of one site.
    let token = &changes[0].0;
    let r = api.send(reqwest::Method::POST, "/api/sites/jo/invalidate", token, None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn gc_keeps_retained_generations_and_recently_released_objects() {
    let dir = microsites_with(|c| c + "\n[retention]\ngenerations = 2\ndays = 0\ngrace_seconds = 0\n");
    let d = dir.path();
    let mut texts = Vec::new();
    for i in 0..4 {
        texts.push(format!("{{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"ada\",\"doc\":{{\"owner\":\"ada\",\"name\":\"Ada {i}\"}}}}\n"));
    }
    let events = crate::support::write(d, "edits.ndjson", &texts.concat());
    ok(d, &["apply", events.to_str().expect("utf-8"), "--batch", "1"]);
    // Generations: 1 (build) and 2..=5 (one per edit); keep 4 and 5.
    let out = ok(d, &["gc"]);
    assert!(out.starts_with("garbage collected: "), "{out}");
    assert!(!out.starts_with("garbage collected: 0 objects"), "old versions went: {out}");
    assert!(ok(d, &["verify"]).contains("identical"), "nothing current was deleted");
    // The operator exports any retained generation as it was published.
    for (g, name) in [(4, "Ada 2"), (5, "Ada 3")] {
        let out = tempfile::tempdir().expect("temp dir");
        let at = out.path().to_str().expect("utf-8");
        ok(d, &["export", at, "--generation", &g.to_string()]);
        let page = std::fs::read_to_string(out.path().join("ada/index.html")).expect("the site's page");
        assert!(page.contains(name), "generation {g} shows {name}");
        assert!(out.path().join("sitemap.xml").is_file() && out.path().join("ada/index.html.gz").is_file());
    }
    let out = tempfile::tempdir().expect("temp dir");
    let at = out.path().to_str().expect("utf-8");
    let err = crate::support::fails(d, &["export", at, "--generation", "2"]);
    assert!(err.contains("generation 2 is no longer retained: the oldest kept is 4"), "{err}");
    let err = crate::support::fails(d, &["export", at, "--generation", "9"]);
    assert!(err.contains("there is no generation 9: the newest is 5"), "{err}");
    let server = Server::in_process(d);
    let api = Api::new(&server);
    for (g, name) in [(4, "Ada 2"), (5, "Ada 3")] {
        let r = api.get(&format!("/ada/?v={g}")).await;
        assert_eq!(r.status(), StatusCode::OK, "retained generation {g}");
        assert!(r.text().await.expect("body").contains(name));
    }
    assert_eq!(api.get("/ada/?v=2").await.status(), StatusCode::NOT_FOUND, "generation 2 is no longer retained");
    drop(server);

    // With a grace period, nothing released a moment ago is deleted.
    let config = d.join("sesame.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, text.replace("grace_seconds = 0", "grace_seconds = 3600")).expect("write");
    let more = crate::support::write(
        d,
        "more.ndjson",
        "{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"ada\",\"doc\":{\"owner\":\"ada\",\"name\":\"Ada 9\"}}\n",
    );
    ok(d, &["apply", more.to_str().expect("utf-8")]);
    let out = ok(d, &["gc"]);
    assert!(out.starts_with("garbage collected: 0 objects"), "{out}");
}

#[tokio::test]
async fn host_mode_serves_each_site_on_its_own_host() {
    let dir = microsites_with(|c| c + "\n[serve]\nhost_suffix = \"users.example.net\"\n");
    let server = Server::in_process(dir.path());
    let (status, body) = server.raw_get_host("/", "ada.users.example.net").await;
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Ada Park</h1>"));
    let (status, body) = server.raw_get_host("/", "www.example.org").await;
    assert_eq!(status, 200);
    assert!(body.contains("Everyone gets a page"), "other hosts get the main site");
    let (status, _) = server.raw_get_host("/", "nobody.users.example.net").await;
    assert_eq!(status, 404);
}
