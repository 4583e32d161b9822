//! `sesame edge`: the Cloudflare Worker that serves a site from R2, the
//! manifest it reads, and the custom hostnames (Cloudflare for SaaS) that
//! bring owners' domains to it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sesame_engine::{Project, PublishLease, Publisher};

/// The Worker, as it is tested (`edge/cloudflare/src/worker.js`).
const WORKER: &str = include_str!("../../../edge/cloudflare/src/worker.js");

/// Where a project's objects are in a bucket: its name and key prefix.
fn bucket_of(storage_url: Option<&str>) -> Option<(String, String)> {
    let rest = storage_url?.strip_prefix("s3://")?;
    let location = rest.split('?').next().unwrap_or_default();
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    (!bucket.is_empty()).then(|| (bucket.to_string(), prefix))
}

/// A Worker name from the project's directory: lowercase letters, digits and
/// hyphens, as Cloudflare requires.
fn worker_name(project_dir: &Path) -> String {
    let base = std::fs::canonicalize(project_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let slug: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug: String = slug.chars().take(40).collect();
    if slug.is_empty() { "sesame-site".into() } else { format!("sesame-{slug}") }
}

fn wrangler_toml(name: &str, bucket: &str, prefix: &str) -> String {
    format!(
        r#"# The sesame edge Worker: serves the site straight from R2 (README,
# "Serving from Cloudflare"). Deploy with `npx wrangler deploy`.
name = "{name}"
main = "worker.js"
compatibility_date = "2025-12-01"
# Served on your domain (routes below), not on *.workers.dev: the Cache API,
# which keeps the manifest's shards and past roots per data centre, does
# nothing there, so every isolate would read them from the bucket.
workers_dev = false

# The bucket sesame publishes into (its storage_url, s3://{bucket}/…), and
# the one `wrangler dev` reads (fill it with a copy, never the live bucket).
[[r2_buckets]]
binding = "BUCKET"
bucket_name = "{bucket}"
preview_bucket_name = "{bucket}-preview"

# Logs (a root that cannot be read, a missing object) and request traces in
# the dashboard's Observability tab.
[observability]
enabled = true
head_sampling_rate = 1

[vars]
# Key prefix of the site's objects in the bucket (the storage URL's path).
PREFIX = "{prefix}"
# How long an isolate serves the manifest root it read before reading it
# again: a publish is visible at the edge within this time.
ROOT_TTL_MS = "1000"
# Manifest shards kept in memory per isolate (they never change; about
# 40 KB each at the default shard size, within the 128 MB of an isolate).
SHARD_CACHE = "256"
# Memory for hot page bodies per isolate, MiB (bodies never change either).
BODY_CACHE_MB = "16"
# How long a key found absent is remembered per isolate (a compressed
# variant, an image, a past root): repeated misses cost no bucket reads.
MISS_TTL_MS = "10000"

# Serve the site on your domain, for instance:
# routes = [{{ pattern = "example.org/*", zone_name = "example.org" }}]
"#
    )
}

/// `sesame edge init DIR`: writes the Worker and its `wrangler.toml`.
pub fn init(project: &Project, dir: &Path, force: bool) -> Result<()> {
    let config = &project.site.config;
    let files = [dir.join("worker.js"), dir.join("wrangler.toml")];
    if !force && let Some(existing) = files.iter().find(|f| f.exists()) {
        bail!("{} exists; pass --force to overwrite it", existing.display());
    }
    let (bucket, prefix, guessed) = match bucket_of(config.storage_url.as_deref()) {
        Some((bucket, prefix)) => (bucket, prefix, false),
        None => ("my-sesame-site".to_string(), String::new(), true),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = worker_name(&project.dir);
    std::fs::write(&files[0], WORKER).with_context(|| format!("cannot write {}", files[0].display()))?;
    std::fs::write(&files[1], wrangler_toml(&name, &bucket, &prefix))
        .with_context(|| format!("cannot write {}", files[1].display()))?;
    println!("wrote {} and {}", files[0].display(), files[1].display());
    if guessed {
        println!(
            "note: storage_url is not an s3:// bucket; set bucket_name in wrangler.toml to the R2 bucket sesame publishes into"
        );
    }
    println!("next: cd {} && npx wrangler deploy", dir.display());
    Ok(())
}

/// `sesame edge sync`: writes the newest generation's root where the Worker
/// reads it (`whole`: rewrites every shard).
pub async fn sync(project: &Project, whole: bool) -> Result<()> {
    let lease = PublishLease::wait(project, Duration::from_secs(600)).await?;
    let mut publisher = Publisher::load(project).await?;
    let report = publisher.publish_manifest(project, &lease, whole).await;
    lease.release(project).await;
    crate::manifest_written(Some(&report?));
    Ok(())
}

/// Where Cloudflare's API is (`sesame edge hostnames --api` overrides it).
pub const CLOUDFLARE_API: &str = "https://api.cloudflare.com/client/v4";

/// What `sesame edge hostnames` changed at Cloudflare.
#[derive(Debug, Default)]
pub struct HostnamesSummary {
    /// Verified hosts added as custom hostnames.
    pub created: Vec<String>,
    /// Custom hostnames no verified host names, removed (`--prune`).
    pub removed: Vec<String>,
    /// Custom hostnames no verified host names, left (no `--prune`).
    pub unknown: Vec<String>,
}

/// One custom hostname, as Cloudflare lists it.
#[derive(serde::Deserialize)]
struct CustomHostname {
    id: String,
    hostname: String,
}

/// Cloudflare's answer envelope.
#[derive(serde::Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    result: Option<T>,
    result_info: Option<ResultInfo>,
}

#[derive(serde::Deserialize)]
struct ResultInfo {
    page: u32,
    total_pages: u32,
}

/// A Cloudflare API call's result, or its errors in Cloudflare's words.
async fn cloudflare<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(Option<T>, Option<ResultInfo>)> {
    let response = request.send().await.with_context(|| format!("{what}: Cloudflare's API does not answer"))?;
    let status = response.status();
    let envelope: Envelope<T> =
        response.json().await.with_context(|| format!("{what}: Cloudflare answered {status} without its JSON"))?;
    if !envelope.success || !status.is_success() {
        bail!("{what}: Cloudflare answered {status}: {}", serde_json::Value::from(envelope.errors));
    }
    Ok((envelope.result, envelope.result_info))
}

/// `sesame edge hostnames`: makes the zone's custom hostnames (Cloudflare
/// for SaaS) the verified custom domains: adds each verified host missing
/// there, validated over HTTP through the owner's CNAME, and, with `prune`,
/// removes those no verified host names (a zone whose custom hostnames are
/// all the platform's). Idempotent: run it after domains change, or every
/// few minutes.
pub async fn hostnames(project: &Project, api: &str, zone: &str, prune: bool) -> Result<HostnamesSummary> {
    let token = std::env::var("CLOUDFLARE_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .context("set CLOUDFLARE_API_TOKEN to an API token with the zone's SSL and Certificates: Edit permission")?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let base = format!("{}/zones/{zone}/custom_hostnames", api.trim_end_matches('/'));
    let mut listed: Vec<CustomHostname> = Vec::new();
    for page in 1.. {
        let request = client.get(format!("{base}?page={page}&per_page=50")).bearer_auth(&token);
        let (result, info) = cloudflare::<Vec<CustomHostname>>(request, "listing the custom hostnames").await?;
        let result = result.unwrap_or_default();
        let done = result.is_empty() || info.is_none_or(|i| i.page >= i.total_pages);
        listed.extend(result);
        if done {
            break;
        }
    }
    let verified: BTreeSet<String> = project.store.verified_domains().await?.into_iter().map(|d| d.host).collect();
    let present: BTreeSet<&str> = listed.iter().map(|h| h.hostname.as_str()).collect();
    let mut summary = HostnamesSummary::default();
    for host in verified.iter().filter(|h| !present.contains(h.as_str())) {
        let body = serde_json::json!({ "hostname": host, "ssl": { "method": "http", "type": "dv" } });
        let request = client.post(&base).bearer_auth(&token).json(&body);
        cloudflare::<serde_json::Value>(request, &format!("adding {host}")).await?;
        summary.created.push(host.clone());
    }
    for stale in listed.iter().filter(|h| !verified.contains(&h.hostname)) {
        if prune {
            let request = client.delete(format!("{base}/{}", stale.id)).bearer_auth(&token);
            cloudflare::<serde_json::Value>(request, &format!("removing {}", stale.hostname)).await?;
            summary.removed.push(stale.hostname.clone());
        } else {
            summary.unknown.push(stale.hostname.clone());
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_and_prefix_come_from_the_storage_url() {
        let url = "s3://site/objects/v1?endpoint=https://x.r2.cloudflarestorage.com&region=auto";
        assert_eq!(bucket_of(Some(url)), Some(("site".into(), "objects/v1/".into())));
        assert_eq!(bucket_of(Some("s3://site?endpoint=x")), Some(("site".into(), String::new())));
        assert_eq!(bucket_of(Some("lmdb://.sesame/objects.lmdb")), None);
        assert_eq!(bucket_of(None), None);
        assert_eq!(worker_name(Path::new("/nonexistent/My Site!")), "sesame-site");
    }
}
