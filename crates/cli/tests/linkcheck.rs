//! A site owner's link checker: `linkinator` from npm (pinned in
//! `e2e/package-lock.json`, on Node's built-in fetch, i.e. undici) crawls
//! the whole gallery example through a real `sesame serve` whose connection
//! cap is 100, and every link gets an answer. The test command installs the
//! Node packages (`npm ci` in `e2e/`); without them this test fails, saying
//! what is missing.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use support::*;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("workspace root")
}

/// Regression: at its connection cap the server closed the connection quiet
/// longest, which linkinator (undici) was often about to reuse or had not yet
/// written its request on; 10,858 of 17,018 links got no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkinator_gets_an_answer_for_every_link_of_the_gallery_at_a_cap_of_100_connections() {
    let cli = workspace().join("e2e/node_modules/linkinator/build/src/cli.js");
    assert!(cli.exists(), "linkinator is missing: run `npm ci --prefix e2e` (scripts/test does)");
    let version =
        Command::new("node").arg("--version").output().expect("run node (install Node.js: scripts/test does)");
    let major: u32 = String::from_utf8_lossy(&version.stdout)
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "linkinator 7 needs Node.js 20 or later, found {:?}",
        String::from_utf8_lossy(&version.stdout)
    );
    let project = built_example_with("gallery", &|c| c + "\n[serve]\nmax_connections = 100\n");
    let server = Server::start(project.path());
    // The example's pages name http://127.0.0.1:8080 as their canonical
    // base; the checker is pointed back at this server for those links.
    let mut linkinator = Command::new("node");
    linkinator.arg(&cli).arg(format!("{}/", server.base)).args(["--recurse", "--format", "json"]).args([
        "--url-rewrite-search",
        "http://127.0.0.1:8080",
        "--url-rewrite-replace",
        &server.base,
    ]);
    let out = tokio::task::spawn_blocking(move || linkinator.output())
        .await
        .expect("task")
        .expect("run node (install Node.js: scripts/test does)");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("linkinator printed no report ({e}):\n{}", String::from_utf8_lossy(&out.stderr)));
    let links = report["links"].as_array().expect("links");
    let mut statuses: BTreeMap<i64, usize> = BTreeMap::new();
    let mut unanswered = Vec::new();
    for link in links {
        let status = link["status"].as_i64().unwrap_or(0);
        *statuses.entry(status).or_default() += 1;
        if status != 200 && unanswered.len() < 5 {
            unanswered.push(link.clone());
        }
    }
    let metrics = client().get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let count = |name: &str| metric(&metrics, name);
    eprintln!(
        "linkinator: {} links, by status {statuses:?}; server: {} connections, {} refused, closed for a slow head {}, \
         at the header timeout {}, idle {}",
        links.len(),
        count("sesame_http_connections_total"),
        count("sesame_http_connections_refused_total"),
        count("sesame_http_connections_closed_total{reason=\"evicted\"}"),
        count("sesame_http_connections_closed_total{reason=\"header_timeout\"}"),
        count("sesame_http_connections_closed_total{reason=\"idle\"}"),
    );
    assert!(links.len() > 15_000, "{} links checked", links.len());
    assert_eq!(statuses.get(&0), None, "links without an HTTP answer, e.g. {unanswered:?}");
    assert_eq!(statuses.keys().collect::<Vec<_>>(), vec![&200], "links not answered 200, e.g. {unanswered:?}");
    assert!(out.status.success(), "linkinator failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
