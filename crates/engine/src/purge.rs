//! CDN purge: after a generation commits, its changed URLs (and the cache
//! tags naming those pages) go to a purge endpoint, in the background.
//!
//! Calls are batched to the API's limit, retried with exponential backoff and
//! counted in metrics; publishing never waits for them. The queue holds at
//! most [`QUEUE`] jobs: when the endpoint is down for long, newer jobs are
//! dropped (counted in `sesame_purge_dropped_total`) and those pages refresh
//! when their `max-age` runs out. Immutable URLs (`/_v/<hash>`,
//! `?v=<generation>`) never need a purge and are never sent.

use std::time::Duration;

use serde_json::json;
use sesame_config::{Purge, PurgeKind};
use tokio::sync::mpsc;

/// What one generation asks to purge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeJob {
    /// The generation (0 for an explicit invalidation).
    pub generation: u64,
    /// Absolute URLs.
    pub urls: Vec<String>,
    /// Cache tags.
    pub tags: Vec<String>,
}

/// Most purge jobs waiting for the endpoint.
pub const QUEUE: usize = 1024;

/// Sends purge jobs to a background task.
#[derive(Debug, Clone)]
pub struct Purger {
    tx: mpsc::Sender<PurgeJob>,
}

impl Purger {
    /// Starts the purge task, or returns `None` when no purge is configured.
    /// The bearer token is read from the environment variable `token_env`.
    pub fn start(config: &Purge) -> Option<Purger> {
        let url = config.url.clone().filter(|_| config.kind != PurgeKind::None)?;
        let token = std::env::var(&config.token_env).ok().filter(|t| !t.is_empty());
        if token.is_none() {
            tracing::warn!(variable = %config.token_env, "no purge token in the environment; purging without one");
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let sender = Sender {
            client: reqwest::Client::new(),
            url,
            token,
            kind: config.kind,
            batch: config.batch as usize,
            attempts: config.attempts,
        };
        tokio::spawn(sender.run(rx));
        Some(Purger { tx })
    }

    /// Queues a purge; never blocks. A full queue drops the job.
    pub fn purge(&self, job: PurgeJob) {
        if job.urls.is_empty() && job.tags.is_empty() {
            return;
        }
        match self.tx.try_send(job) {
            Ok(()) => metrics::gauge!(PENDING).increment(1.0),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("sesame_purge_dropped_total").increment(1);
                tracing::warn!("the purge queue is full; a purge was dropped (its pages expire with max-age)");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the purge task is gone; a purge was dropped");
            }
        }
    }
}

/// The gauge of purge jobs queued or being sent.
const PENDING: &str = "sesame_purge_pending";

struct Sender {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    kind: PurgeKind,
    batch: usize,
    attempts: u32,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<PurgeJob>) {
        while let Some(job) = rx.recv().await {
            for chunk in job.urls.chunks(self.batch.max(1)) {
                let body = match self.kind {
                    PurgeKind::Cloudflare => json!({ "files": chunk }),
                    _ => json!({ "generation": job.generation, "urls": chunk }),
                };
                self.call(body).await;
            }
            for chunk in job.tags.chunks(self.batch.max(1)) {
                let body = match self.kind {
                    PurgeKind::Cloudflare => json!({ "tags": chunk }),
                    _ => json!({ "generation": job.generation, "tags": chunk }),
                };
                self.call(body).await;
            }
            metrics::gauge!(PENDING).decrement(1.0);
        }
    }

    /// One purge call with retries; returns whether it succeeded.
    async fn call(&self, body: serde_json::Value) -> bool {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=self.attempts {
            let mut request = self.client.post(&self.url).json(&body).timeout(Duration::from_secs(30));
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            metrics::counter!("sesame_purge_calls_total").increment(1);
            match request.send().await {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => tracing::warn!(status = %r.status(), attempt, "purge call refused"),
                Err(e) => tracing::warn!(error = %e, attempt, "purge call failed"),
            }
            if attempt < self.attempts {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
        metrics::counter!("sesame_purge_failures_total").increment(1);
        tracing::error!("purge call failed {} times; giving up (the pages expire with their max-age)", self.attempts);
        false
    }
}
