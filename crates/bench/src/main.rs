//! `sesame-bench`: the load driver of the whole-system benchmarks in `bench/`.
//!
//! - `latency`: adds, edits and removes documents one at a time through the
//!   API of a running `sesame serve` and times each from the 202 to the moment
//!   the router serves the new bytes.
//! - `burst`: saves sites in bursts (one account many times, many accounts a
//!   few times) and reports what publishing cost per accepted write.
//! - `sink`: answers 200 to every request (a purge endpoint for `burst`).
//! - `crawl`: fetches every page of the sitemap on a new connection each,
//!   never closing them (a careless crawler).
//!
//! Costs come from the server's Prometheus counters, read before and after.

mod crawl;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "sesame-bench", about = "Load driver for sesame's whole-system benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish latency of single adds, edits and removals (run the server with
    /// `quiet_ms = 0` and `max_wait_ms = 0`).
    Latency {
        /// Base URL of `sesame serve`.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// Collection of the documents written.
        #[arg(long, default_value = "sprites")]
        collection: String,
        /// Document path pattern, with `{id}`.
        #[arg(long, default_value = "/sprites/{id}/")]
        path: String,
        /// Number of events (a third each of adds, edits, removals).
        #[arg(long, default_value_t = 999)]
        events: usize,
        /// Date of the added documents (the newest month keeps them on the
        /// first listing pages).
        #[arg(long, default_value = "2026-11-01")]
        date: String,
        /// Label of this run in the printed row.
        #[arg(long, default_value = "")]
        label: String,
        /// How often the router is polled for the new page, in microseconds
        /// (the resolution of the measurement; polling costs the server CPU).
        #[arg(long, default_value_t = 500)]
        poll_us: u64,
        /// Events run before the measured ones and not counted, rounded up to
        /// whole add, edit, remove cycles: the first publishes after the
        /// server starts run on cold caches.
        #[arg(long, default_value_t = 30)]
        warmup: usize,
    },
    /// Publishing cost per accepted write under bursts of site saves.
    Burst {
        /// Base URL of `sesame serve`.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// Accounts saving concurrently.
        #[arg(long, default_value_t = 1)]
        accounts: usize,
        /// Saves per account.
        #[arg(long, default_value_t = 50)]
        saves: usize,
        /// Spread each account's saves over this many seconds (0: back to back).
        #[arg(long, default_value_t = 0.0)]
        over: f64,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Prefix of the handles created.
        #[arg(long, default_value = "burst")]
        prefix: String,
    },
    /// Fetches every page of the sitemap, each on a new keep-alive connection
    /// that stays open.
    Crawl {
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// The site's configured `base_url`, as the sitemap names pages.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base_url: String,
        /// Fetches in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Most connections held open by the crawler (its own descriptors).
        #[arg(long, default_value_t = 8000)]
        hold: usize,
        /// Stop after this many seconds (pages not fetched by then are not counted).
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// Answers every request with 200 (a purge endpoint).
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: std::net::SocketAddr,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Latency { base, collection, path, events, date, label, poll_us, warmup } => {
            let run = Run { events, warmup: warmup.div_ceil(3) * 3, poll: Duration::from_micros(poll_us) };
            latency(&Api::new(base), &collection, &path, run, &date, &label).await
        }
        Command::Burst { base, accounts, saves, over, concurrency, prefix } => {
            burst(&Api::new(base), accounts, saves, over, concurrency, &prefix).await
        }
        Command::Crawl { base, base_url, concurrency, hold, max_seconds } => {
            crawl::crawl(&base, &base_url, concurrency, hold, Duration::from_secs(max_seconds)).await
        }
        Command::Sink { listen } => {
            let app = axum::Router::new().fallback(|| async { "ok" });
            let listener = tokio::net::TcpListener::bind(listen).await?;
            axum::serve(listener, app).await?;
            Ok(())
        }
    }
}

struct Api {
    base: String,
    http: Client,
}

impl Api {
    fn new(base: String) -> Api {
        Api { base: base.trim_end_matches('/').to_string(), http: Client::new() }
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("requesting {path}"))?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Creates an account; returns its token.
    async fn sign_up(&self, handle: &str) -> Result<String> {
        let (status, body) = self.send(Method::POST, "/api/accounts", "", Some(json!({ "handle": handle }))).await?;
        ensure!(status == StatusCode::CREATED, "signing up {handle}: {status} {body}");
        Ok(body["token"].as_str().context("token")?.to_string())
    }

    /// A write that must be accepted; returns its change id.
    async fn write(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Result<i64> {
        let (status, reply) = self.send(method, path, token, body).await?;
        ensure!(status == StatusCode::ACCEPTED, "{path}: {status} {reply}");
        reply["change"].as_i64().context("change id")
    }

    /// Polls a change until it is published.
    async fn published(&self, token: &str, change: i64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, body) = self.send(Method::GET, &format!("/api/changes/{change}"), token, None).await?;
            match body["status"].as_str() {
                Some("published") => return Ok(()),
                Some("queued" | "building") => {}
                other => bail!("change {change}: {other:?} {body}"),
            }
            ensure!(Instant::now() < deadline, "change {change} not published after 300 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's counters and gauges.
    async fn metrics(&self) -> Result<Metrics> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }
}

/// Prometheus samples by series name.
type Metrics = HashMap<String, f64>;

/// Counter increases between two readings.
struct Delta(Metrics, Metrics);

impl Delta {
    fn get(&self, name: &str) -> f64 {
        self.1.get(name).copied().unwrap_or(0.0) - self.0.get(name).copied().unwrap_or(0.0)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Add,
    Edit,
    Remove,
}

/// How many events the latency run sends, and how it watches for them.
struct Run {
    events: usize,
    /// Leading events not counted (a multiple of 3).
    warmup: usize,
    poll: Duration,
}

async fn latency(api: &Api, collection: &str, pattern: &str, run: Run, date: &str, label: &str) -> Result<()> {
    let Run { events, warmup, poll } = run;
    let token = api.sign_up(&format!("lat{}", fastrand::u32(..))).await?;
    let mut samples: HashMap<&str, Vec<Sample>> = HashMap::new();
    let mut accept_ms = Vec::new();
    let tag = fastrand::u32(..);
    for n in 0..warmup + events {
        // add, edit, remove the same document: the site ends as it began.
        let (op, name) = [(Op::Add, "add"), (Op::Edit, "edit"), (Op::Remove, "remove")][n % 3];
        let id = format!("bench-{tag}-{}", n / 3);
        let api_path = format!("/api/collections/{collection}/docs/{id}");
        let page = format!("{}{}", api.base, pattern.replace("{id}", &id));
        let before_etag = match op {
            Op::Edit => etag(&api.http, &page).await?,
            _ => None,
        };
        let doc =
            |title: &str| json!({ "title": title, "created": date, "tags": ["benchmark", "data"], "slug": id.clone() });
        let before = api.metrics().await?;
        let sent = Instant::now();
        match op {
            Op::Add => api.write(Method::PUT, &api_path, &token, Some(doc("A new benchmark item"))).await?,
            Op::Edit => api.write(Method::PUT, &api_path, &token, Some(doc("An edited benchmark item"))).await?,
            Op::Remove => api.write(Method::DELETE, &api_path, &token, None).await?,
        };
        let accepted = Instant::now();
        // Poll the router until it serves the new state of the page.
        loop {
            let r = api.http.get(&page).send().await?;
            let status = r.status();
            let tag = r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
            let done = match op {
                Op::Add => status == StatusCode::OK,
                Op::Edit => status == StatusCode::OK && tag != before_etag,
                Op::Remove => status == StatusCode::GONE || status == StatusCode::NOT_FOUND,
            };
            if done {
                break;
            }
            ensure!(accepted.elapsed() < Duration::from_secs(120), "{id}: not published after 120 s ({status})");
            tokio::time::sleep(poll).await;
        }
        let ms = accepted.elapsed().as_secs_f64() * 1e3;
        // The batch's counters are bumped right after its commit.
        let mut after = api.metrics().await?;
        for _ in 0..100 {
            if Delta(before.clone(), after.clone()).get("sesame_batches_total") >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            after = api.metrics().await?;
        }
        if n < warmup {
            continue;
        }
        accept_ms.push((accepted - sent).as_secs_f64() * 1e3);
        let d = Delta(before, after);
        samples.entry(name).or_default().push(Sample {
            ms,
            rendered: d.get("sesame_pages_rendered_total"),
            objects: d.get("sesame_objects_written_total"),
            bytes: d.get("sesame_bytes_written_total"),
        });
        if (n + 1 - warmup) % 100 == 0 {
            eprintln!("{label}: {} of {events} events", n + 1 - warmup);
        }
    }
    println!(
        "| scheme | op | events | p50 ms | p99 ms | max ms | pages rendered / event | objects written / event | KB written / event |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for op in ["add", "edit", "remove"] {
        let v = samples.remove(op).unwrap_or_default();
        let mut ms: Vec<f64> = v.iter().map(|s| s.ms).collect();
        ms.sort_by(f64::total_cmp);
        let mean = |f: fn(&Sample) -> f64| v.iter().map(f).sum::<f64>() / v.len().max(1) as f64;
        println!(
            "| {label} | {op} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            v.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN),
            mean(|s| s.rendered),
            mean(|s| s.objects),
            mean(|s| s.bytes) / 1024.0,
        );
    }
    accept_ms.sort_by(f64::total_cmp);
    eprintln!(
        "{label}: the API answered 202 in p50 {:.1} ms, p99 {:.1} ms",
        percentile(&accept_ms, 0.5),
        percentile(&accept_ms, 0.99)
    );
    Ok(())
}

/// One event: latency and what its generation cost.
struct Sample {
    ms: f64,
    rendered: f64,
    objects: f64,
    bytes: f64,
}

async fn etag(http: &Client, url: &str) -> Result<Option<String>> {
    let r = http.get(url).send().await?;
    ensure!(r.status() == StatusCode::OK, "{url}: {}", r.status());
    Ok(r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string))
}

async fn burst(api: &Api, accounts: usize, saves: usize, over: f64, concurrency: usize, prefix: &str) -> Result<()> {
    let run = fastrand::u32(..);
    let handles: Vec<String> = (0..accounts).map(|i| format!("{prefix}{run}x{i}")).collect();
    eprintln!("creating {accounts} accounts and their sites");
    let tokens: Vec<String> = futures::stream::iter(&handles)
        .map(|h| async move {
            let token = api.sign_up(h).await?;
            let body = json!({ "name": format!("{h}, draft 0"), "bio": "A *first* draft." });
            api.write(Method::PUT, &format!("/api/sites/{h}"), &token, Some(body)).await?;
            Ok::<_, anyhow::Error>(token)
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    // Baseline: one save of one site, published alone.
    wait_all_published(api, &handles, &tokens).await?;
    let single = {
        let before = api.metrics().await?;
        let change = api
            .write(
                Method::PATCH,
                &format!("/api/sites/{}", handles[0]),
                &tokens[0],
                Some(json!({ "name": format!("{}, alone", handles[0]) })),
            )
            .await?;
        api.published(&tokens[0], change).await?;
        settle(api).await?;
        let d = Delta(before, api.metrics().await?);
        Costs::of(&d, 1.0)
    };
    eprintln!("bursting: {accounts} accounts × {saves} saves");
    let before = api.metrics().await?;
    let started = Instant::now();
    let gap = if saves > 1 { Duration::from_secs_f64(over / (saves - 1) as f64) } else { Duration::ZERO };
    let last: Vec<i64> = futures::stream::iter(handles.iter().zip(&tokens))
        .map(|(h, token)| async move {
            let mut last = 0;
            for i in 1..=saves {
                let body = json!({ "name": format!("{h}, draft {i}") });
                last = api.write(Method::PATCH, &format!("/api/sites/{h}"), token, Some(body)).await?;
                if i < saves {
                    tokio::time::sleep(gap).await;
                }
            }
            Ok::<_, anyhow::Error>(last)
        })
        .buffered(if over > 0.0 { accounts.max(concurrency) } else { concurrency })
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let accepted_in = started.elapsed();
    for (token, change) in tokens.iter().zip(&last) {
        api.published(token, *change).await?;
    }
    settle(api).await?;
    let d = Delta(before, api.metrics().await?);
    let writes = d.get("sesame_events_accepted_total");
    let burst = Costs::of(&d, writes);
    println!(
        "**{accounts} account(s) × {saves} saves**: {writes} writes accepted in {:.1} s, all published {:.1} s after the first, in {} generations.",
        accepted_in.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        d.get("sesame_batches_total")
    );
    println!();
    println!("| per accepted write | batched | one save published alone | ratio |");
    println!("|---|---|---|---|");
    for (name, b, s) in [
        ("pages rendered", burst.rendered, single.rendered),
        ("objects written", burst.objects, single.objects),
        ("KB written", burst.bytes / 1024.0, single.bytes / 1024.0),
        ("purge calls", burst.purges, single.purges),
        ("generations", burst.batches, single.batches),
    ] {
        println!("| {name} | {b:.3} | {s:.2} | {:.3} |", b / s);
    }
    Ok(())
}

async fn wait_all_published(api: &Api, handles: &[String], tokens: &[String]) -> Result<()> {
    // The sites' first versions: poll one status per account through its versions list.
    for (h, token) in handles.iter().zip(tokens) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (status, body) = api.send(Method::GET, &format!("/api/sites/{h}/versions"), token, None).await?;
            if status == StatusCode::OK && body.as_array().is_some_and(|v| !v.is_empty()) {
                break;
            }
            ensure!(Instant::now() < deadline, "{h} never published");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    settle(api).await
}

/// Waits until purge calls stop arriving (they run in the background).
async fn settle(api: &Api) -> Result<()> {
    let mut last = -1.0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = api.metrics().await?.get("sesame_purge_calls_total").copied().unwrap_or(0.0);
        if now == last {
            return Ok(());
        }
        last = now;
    }
}

struct Costs {
    rendered: f64,
    objects: f64,
    bytes: f64,
    purges: f64,
    batches: f64,
}

impl Costs {
    fn of(d: &Delta, writes: f64) -> Costs {
        Costs {
            rendered: d.get("sesame_pages_rendered_total") / writes,
            objects: d.get("sesame_objects_written_total") / writes,
            bytes: d.get("sesame_bytes_written_total") / writes,
            purges: d.get("sesame_purge_calls_total") / writes,
            batches: d.get("sesame_batches_total") / writes,
        }
    }
}
