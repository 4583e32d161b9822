//! A careless crawler: every page of the sitemap fetched on a new keep-alive
//! connection that the crawler then keeps open (as a link checker on Node's
//! default agent, or a search engine's crawler, does). What it measures is
//! whether the server keeps answering 200 while such clients pile up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::Mutex;

/// How long a connect or a read may take before the page counts as failed.
const WAIT: Duration = Duration::from_secs(5);

/// The paths of every `<loc>` in the sitemap index and its files.
async fn sitemap(base: &str, base_url: &str) -> Result<Vec<String>> {
    let http = reqwest::Client::new();
    let locs = |xml: &str| sesame_testkit::crawler::sitemap_locs(xml, base_url);
    let index = http.get(format!("{base}/sitemap.xml")).send().await?.text().await?;
    let mut paths = Vec::new();
    for file in locs(&index) {
        let xml = http.get(format!("{base}{file}")).send().await?.text().await?;
        paths.extend(locs(&xml));
    }
    Ok(paths)
}

/// Crawls every page of the sitemap with `concurrency` fetchers, holding at
/// most `hold` connections open (the oldest is dropped past that, as a
/// client's own descriptor limit would force), for at most `deadline`.
/// Prints one summary line.
pub(crate) async fn crawl(
    base: &str,
    base_url: &str,
    concurrency: usize,
    hold: usize,
    deadline: Duration,
) -> Result<()> {
    let addr = base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let paths = Arc::new(sitemap(base, base_url).await.context("reading the sitemap")?);
    let next = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (paths, next, held, statuses, addr) =
            (paths.clone(), next.clone(), held.clone(), statuses.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { return };
                let (status, stream) = sesame_testkit::crawler::fetch_and_keep(&addr, path, WAIT).await;
                *statuses.lock().await.entry(status).or_default() += 1;
                if let Some(stream) = stream {
                    let mut held = held.lock().await;
                    held.push_back(stream);
                    if held.len() > hold {
                        held.pop_front();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let statuses = statuses.lock().await;
    let ok = statuses.get(&200).copied().unwrap_or(0);
    let fetched: usize = statuses.values().sum();
    let others: Vec<String> = statuses
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(s, n)| format!("{n}×{}", if *s == 0 { "none".to_string() } else { s.to_string() }))
        .collect();
    println!(
        "pages {fetched}/{} ok {ok} failed {} ({}) seconds {seconds:.1} pages_per_s {:.0}",
        paths.len(),
        fetched - ok,
        if others.is_empty() { "-".to_string() } else { others.join(" ") },
        fetched as f64 / seconds
    );
    Ok(())
}
