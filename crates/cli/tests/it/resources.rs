//! Bounded resources: what a hostile or careless client can make the server
//! hold (memory, storage, connections, descriptors) has a ceiling, and the
//! server keeps serving everyone else and stops when asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{Peak, Server, built_example_with, client, metric, microsites_with, open_fds, rss};

/// A small deterministic generator (no dependency for a test's dice).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Eight clients each ask for the `/latest/` listing (and its feed) after a
/// made-up cursor for every `i` of `rounds`: a distinct date and id each, so
/// that nothing is asked twice; every eighth redirect is followed, so that
/// its page is rendered and cached. The answers: (pages, redirects, others).
async fn flood(base: &str, rounds: std::ops::Range<u64>) -> (usize, usize, usize) {
    let (ok, moved, bad) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (base, rounds, ok, moved, bad) = (base.to_string(), rounds.clone(), ok.clone(), moved.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ (t + 1) ^ (rounds.start << 20));
            for i in rounds {
                // Distinct made-up cursors: a date in the dataset's years and an id.
                let date = 1_500_000_000 + dice.next() % 300_000_000;
                let feed = if i % 2 == 0 { "" } else { "feed.json" };
                let url = format!("{base}/latest/{feed}?after={date}!made-up-{t}-{i}");
                let r = http.get(&url).send().await.expect("request");
                match r.status() {
                    StatusCode::MOVED_PERMANENTLY => {
                        moved.fetch_add(1, Ordering::Relaxed);
                        if i % 8 == 0 {
                            let to = r.headers()[LOCATION].to_str().expect("ascii").to_string();
                            let page = http.get(format!("{base}{to}")).send().await.expect("request");
                            if page.status() != StatusCode::OK {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let count = |n: &AtomicUsize| n.load(Ordering::Relaxed);
    (count(&ok), count(&moved), count(&bad))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_distinct_cursors_stay_within_the_cache_bound() {
    const CACHE: f64 = 1024.0 * 1024.0;
    // Objects in a directory whatever the backend: the test S3 server lists
    // and writes the gallery's 45,000 objects too slowly to add anything here.
    let dir =
        crate::support::built_example_with_local_objects("gallery", &|c| c + "\n[serve]\non_request_cache_mb = 1\n");
    let stored_before = crate::support::stored_objects(dir.path()).await;
    let server = Server::start(dir.path());
    let http = client();
    // Warm up (the first pages rendered on request grow the allocator's
    // per-thread heaps once), then measure what 20,000 more cursors add.
    for _ in 0..3 {
        http.get(server.url("/latest/feed.json")).send().await.expect("feed").bytes().await.expect("body");
    }
    flood(&server.base, 2_500..2_750).await;
    let before = rss(server.pid());
    let (ok, moved, bad) = flood(&server.base, 0..2_500).await;
    assert_eq!(bad, 0, "every answer is a page or a redirect to one");
    assert!(moved > 19_000, "made-up cursors are redirected, not rendered");
    let metrics = http.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let cached = metric(&metrics, "sesame_on_request_cache_bytes");
    assert!(cached > 0.0 && cached <= CACHE, "cache holds {cached} bytes, bound {CACHE}");
    let grown = rss(server.pid()).saturating_sub(before);
    eprintln!("cursors: {} redirected, {} served, cache {cached} bytes, memory grew {} KiB", moved, ok, grown >> 10);
    // Pages kept past the cache bound would be hundreds of MiB (16 KB a
    // page). What the allocator keeps after a burst is not: 0 here alone,
    // 16 to 26 MiB while the whole suite loads the machine (it grows by
    // whole segments), so the bound leaves room for that.
    assert!(grown < 48 << 20, "memory grew by {} MiB over 20,000 cursors", grown >> 20);
    assert_eq!(
        crate::support::stored_objects(dir.path()).await,
        stored_before,
        "pages rendered on request store nothing"
    );
}

/// Opens a connection that sends a request head one line at a time, a line
/// a second, and never finishes it.
async fn slow_loris(addr: String) {
    let Ok(mut stream) = TcpStream::connect(&addr).await else { return };
    if stream.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").await.is_err() {
        return;
    }
    for i in 0.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if stream.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
            return; // closed by the server
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_connections_stop_neither_requests_nor_shutdown() {
    let dir = microsites_with(|c| {
        c + "\n[serve]\nmax_connections = 200\nheader_timeout_seconds = 3\nidle_timeout_seconds = 5\n\
             shutdown_timeout_seconds = 3\n"
    });
    let server = Server::start(dir.path());
    let lorises: Vec<_> = (0..1000).map(|_| tokio::spawn(slow_loris(server.addr.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Normal visitors get their pages, each on a connection of its own.
    for i in 0..20 {
        let started = Instant::now();
        let r = client().get(server.url("/ada/")).timeout(Duration::from_secs(10)).send().await;
        let r = r.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        assert!(started.elapsed() < Duration::from_secs(3), "request {i} took {:?}", started.elapsed());
    }
    let fds = open_fds(server.pid());
    assert!(fds < 200 + 64, "{fds} descriptors open with a cap of 200 connections");
    // Stopping is bounded by the shutdown timeout, slow connections or not.
    eprintln!("slow connections: {fds} descriptors while 1,000 dribbled");
    let took = server.terminate();
    eprintln!("shutdown took {took:?}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    for l in lorises {
        l.abort();
    }
}

/// Every `<loc>` of the site's sitemaps, as paths.
async fn sitemap_paths(server: &Server, base_url: &str) -> Vec<String> {
    let http = client();
    let text = |path: String| {
        let http = http.clone();
        let url = server.url(&path);
        async move { http.get(url).send().await.expect("sitemap").text().await.expect("text") }
    };
    let locs = |xml: &str| sesame_testkit::crawler::sitemap_locs(xml, base_url);
    let mut paths = Vec::new();
    for file in locs(&text("/sitemap.xml".into()).await) {
        paths.extend(locs(&text(file).await));
    }
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawler_that_never_closes_connections_gets_every_page() {
    const CAP: usize = 100;
    let dir = built_example_with("gallery", &|c| c + &format!("\n[serve]\nmax_connections = {CAP}\n"));
    let server = Server::start(dir.path());
    let paths = sitemap_paths(&server, "http://127.0.0.1:8080").await;
    assert!(paths.len() > 5000, "{} pages in the sitemap", paths.len());
    let pid = server.pid();
    let peak_fds = Peak::watch(move || open_fds(pid) as u64);
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicUsize::new(0));
    let mut crawlers = Vec::new();
    for _ in 0..8 {
        let (paths, next, addr) = (paths.clone(), next.clone(), server.addr.clone());
        crawlers.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let (status, stream) =
                    sesame_testkit::crawler::fetch_and_keep(&addr, path, Duration::from_secs(10)).await;
                if status != 200 {
                    failures.push(format!("{path}: {status}"));
                }
                kept.extend(stream);
            }
            (failures, kept.len())
        }));
    }
    let mut failures = Vec::new();
    let mut kept = 0;
    for c in crawlers {
        let (f, k) = c.await.expect("crawler");
        failures.extend(f);
        kept += k;
    }
    assert!(
        failures.is_empty(),
        "{} of {} pages failed, e.g. {:?}",
        failures.len(),
        paths.len(),
        &failures[..5.min(failures.len())]
    );
    assert_eq!(kept, paths.len(), "the crawler held every connection open");
    let peak = peak_fds.stop() as usize;
    eprintln!("crawl: {} pages, peak {peak} descriptors", paths.len());
    assert!(peak < CAP + 64, "{peak} descriptors at the peak with a cap of {CAP} connections");
}
