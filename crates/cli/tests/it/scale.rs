//! Scale-out: separate API, router and publisher processes on PostgreSQL and an
//! S3-compatible server, with a publisher killed by SIGKILL while it publishes.
//! Runs on that backend whatever `SESAME_TEST_BACKEND` says.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use sesame_testkit::eventually_within;

use crate::support::{Server, built_example_at_scale, client, ok};

const HANDLES: [&str; 4] = ["ana", "ben", "cyd", "dot"];

/// Whether a process currently holds the publish lease, from its metrics.
async fn holds_lease(http: &reqwest::Client, publisher: &Server) -> bool {
    match http.get(publisher.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default().lines().any(|l| l == "sesame_publish_lease_held 1"),
        Err(_) => false,
    }
}

/// One account writing its site until told to stop; returns the acknowledged
/// change ids and the name of its last acknowledged write.
async fn write_until(base: String, handle: &'static str, token: String, stop: Arc<AtomicBool>) -> (Vec<i64>, String) {
    let http = client();
    let (mut acked, mut last) = (Vec::new(), String::new());
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("{handle} write {i} {}", word(i));
        // Mostly whole-site writes, some partial updates.
        let request = if i.is_multiple_of(3) {
            http.patch(format!("{base}/api/sites/{handle}")).json(&json!({ "name": name, "bio": format!("*{i}*") }))
        } else {
            http.put(format!("{base}/api/sites/{handle}")).json(&json!({ "name": name }))
        };
        let r = request.bearer_auth(&token).send().await.expect("the API answers");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "write {i} of {handle}");
        let body: Value = r.json().await.expect("json");
        acked.push(body["change"].as_i64().expect("change id"));
        last = name;
        tokio::time::sleep(Duration::from_millis(u64::from(i % 7) * 5)).await;
    }
    (acked, last)
}

/// A little variety in the written text without a random-number dependency.
fn word(i: u32) -> &'static str {
    ["alpha", "bravo", "charlie", "delta", "echo"][(i as usize * 7 + 3) % 5]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_a_router_and_the_api_survive_a_worker_kill() {
    let dir = built_example_at_scale("microsites");
    let config = dir.path().join("sesame.toml");
    let text = std::fs::read_to_string(&config).expect("read config");
    let text = text
        .replace("quiet_ms = 2000", "quiet_ms = 100")
        .replace("max_wait_ms = 60000", "max_wait_ms = 400")
        .replace("max_updates_per_hour = 600", "max_updates_per_hour = 100000");
    std::fs::write(&config, text).expect("write config");

    let any = "127.0.0.1:0";
    let api = Server::role(dir.path(), "api", &[], any);
    let router = Server::role(dir.path(), "router", &[], any);
    let publishers = [Server::role(dir.path(), "publisher", &[], any), Server::role(dir.path(), "publisher", &[], any)];
    let http = client();

    let mut tokens = Vec::new();
    for h in HANDLES {
        let r = http.post(api.url("/api/accounts")).json(&json!({ "handle": h })).send().await.expect("sign up");
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        tokens.push(body["token"].as_str().expect("token").to_string());
    }

    // Readers hit the router throughout; any 5xx or failed request is counted.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let (reads, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let mut readers = Vec::new();
    for r in 0..2 {
        let (base, stop, reads, bad) = (router.base.clone(), stop_reading.clone(), reads.clone(), bad.clone());
        readers.push(tokio::spawn(async move {
            let http = client();
            let mut paths = vec!["/".to_string(), "/sites/".into(), "/sitemap.xml".into()];
            paths.extend(HANDLES.iter().map(|h| format!("/{h}/")));
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[i % paths.len()];
                i += 1;
                match http.get(format!("{base}{path}")).timeout(Duration::from_secs(10)).send().await {
                    Ok(resp) if resp.status().is_server_error() => {
                        bad.lock().expect("lock").push(format!("{path}: {}", resp.status()));
                    }
                    Ok(resp) => {
                        let _ = resp.bytes().await;
                    }
                    Err(e) => bad.lock().expect("lock").push(format!("{path}: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let stop_writing = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = HANDLES
        .iter()
        .zip(&tokens)
        .map(|(h, t)| tokio::spawn(write_until(api.base.clone(), h, t.clone(), stop_writing.clone())))
        .collect();

    // Kill whichever publisher is publishing, while it publishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        assert!(Instant::now() < deadline, "no publisher ever took the publish lease");
        let mut holder = None;
        for (i, w) in publishers.iter().enumerate() {
            if holds_lease(&http, w).await {
                holder = Some(i);
            }
        }
        if let Some(i) = holder {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let [a, b] = publishers;
    let (killed, survivor) = if victim == 0 { (a, b) } else { (b, a) };
    killed.kill();
    let killed_at = Instant::now();

    // Writes keep coming; the survivor takes over once the lease expires.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_writing.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut last_names = HashMap::new();
    for (h, w) in HANDLES.iter().zip(writers) {
        let (ids, name) = w.await.expect("writer");
        acked.extend(ids.into_iter().map(|id| (*h, id)));
        last_names.insert(*h, name);
    }
    assert!(acked.len() > 40, "only {} writes were acknowledged", acked.len());

    // Every acknowledged write gets published.
    let token_of: HashMap<&str, &str> = HANDLES.iter().copied().zip(tokens.iter().map(String::as_str)).collect();
    for (h, change) in &acked {
        eventually_within(&format!("change {change} of {h} published"), Duration::from_secs(60), || async {
            let r = http
                .get(api.url(&format!("/api/changes/{change}")))
                .bearer_auth(token_of[h])
                .send()
                .await
                .expect("change status");
            assert_eq!(r.status(), StatusCode::OK);
            let body: Value = r.json().await.expect("json");
            match body["status"].as_str() {
                Some("published") => Ok(()),
                Some("queued" | "building") => Err(body.to_string()),
                other => panic!("change {change} of {h}: {other:?} {body}"),
            }
        })
        .await;
    }

    let all_published = killed_at.elapsed();

    // The router follows: each site serves its last acknowledged write.
    for (h, name) in &last_names {
        eventually_within(&format!("/{h}/ serving {name:?}"), Duration::from_secs(10), || async {
            let page = http.get(router.url(&format!("/{h}/"))).send().await.expect("get").text().await.expect("text");
            if page.contains(name.as_str()) { Ok(()) } else { Err("an older version".to_string()) }
        })
        .await;
    }
    stop_reading.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    let bad = bad.lock().expect("lock");
    assert!(
        bad.is_empty(),
        "the router failed {} of {} requests: {:?}",
        bad.len(),
        reads.load(Ordering::Relaxed),
        &bad[..bad.len().min(10)]
    );
    assert!(reads.load(Ordering::Relaxed) > 100, "the readers hardly ran");
    eprintln!(
        "{} writes acknowledged and published, {} reads without a 5xx; all published {:.1} s after the kill",
        acked.len(),
        reads.load(Ordering::Relaxed),
        all_published.as_secs_f64()
    );

    drop((api, router, survivor));
    let report = ok(dir.path(), &["verify"]);
    assert!(report.contains("identical"), "{report}");
}
