//! `sesame`: one binary, a subcommand per job.

mod edge;
mod init;
mod progress;
mod sprites;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// mimalloc instead of glibc's allocator: a full build of 250,000 items spent
/// about a tenth of its CPU in glibc's malloc and free; with mimalloc it was
/// 13% faster and peaked 24% lower (BENCHMARKS.md, "Full build: where the
/// time and memory go").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sesame_engine::{
    Event, Located, Missing, Progress, Project, PublishLease, Publisher, Stats, VariantReport, parse_event,
};

use crate::init::Example;
use crate::progress::Bars;
use sesame::roles::{self, Roles};

#[derive(Parser)]
#[command(
    name = "sesame",
    version,
    about = "Incremental static publishing: static pages, re-rendered per edit, published atomically.",
    long_about = None
)]
struct Cli {
    /// Project directory (the one holding sesame.toml). Default: the current
    /// directory; for `serve --demo`: ./demo.
    #[arg(long, global = true, value_name = "DIR")]
    project: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a project from an example (config, templates, styles, sample content).
    Init {
        /// Where to create it (default: --project, else the current directory).
        dir: Option<PathBuf>,
        /// Which example to start from.
        #[arg(long, value_enum, default_value_t = Example::Gallery)]
        example: Example,
    },
    /// Import documents from an NDJSON file (gzip-compressed if it ends in .gz),
    /// all or nothing. Run `build` (or keep `serve` running) to publish them.
    Import {
        /// The file: one JSON object per line, each with an "id".
        file: PathBuf,
        /// The collection to import into, as declared in sesame.toml.
        #[arg(long)]
        collection: String,
    },
    /// Render every page from the latest content and publish them as one generation.
    Build,
    /// Serve the published site over HTTP, following new generations.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Create the gallery example in ./demo if absent (its base URL the
        /// address listened on), import its sample content, build it, then
        /// serve it.
        #[arg(long)]
        demo: bool,
    },
    /// Serve the published site only (any number of routers may run; read-only
    /// storage credentials suffice).
    Router {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Answer the write API only (a publisher publishes the changes).
    Api {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Publish due changes, purge the CDN and collect garbage (any number of
    /// publishers may run; one publishes at a time, the others stand by).
    /// `sesame worker` is the same command under its old name.
    #[command(alias = "worker")]
    Publisher {
        /// Also listen here for /healthz and /metrics.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Write the published site as a plain file tree for any static server.
    Export {
        /// Output directory (created if missing).
        dir: PathBuf,
        /// The site as this generation published it (any generation still
        /// retained, as `build`, `apply` and `/api/changes/{id}` name them)
        /// instead of the live one.
        #[arg(long)]
        generation: Option<u64>,
    },
    /// Apply change events from an NDJSON file and publish them incrementally,
    /// one generation per batch. A bad line stops the run; nothing of its batch
    /// is applied (earlier batches stay published).
    Apply {
        /// One event a line: {"op":"upsert|delete|takedown|restore|flag", "collection":…, "id":…, …}.
        file: PathBuf,
        /// Events per batch (default: all events in one batch).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        batch: Option<u32>,
    },
    /// Checks every stored document against its collection's schema and field
    /// roles (after a schema change): exit 0 when all pass, 1 with the
    /// documents and fields refused listed.
    Check,
    /// Full build into scratch space compared with the live site: exit 0 when
    /// the path set and the bytes behind each path are identical, 1 otherwise.
    Verify,
    /// Delete objects and history that no retained generation needs (also done
    /// periodically by `serve`).
    Gc,
    /// Copy every object from one storage into another, e.g. a project's
    /// directory of files into the embedded store:
    /// `migrate-objects file://.sesame/objects lmdb://.sesame/objects.lmdb`
    /// (then remove .sesame/objects). Stop `serve` and publishers first.
    MigrateObjects {
        /// Storage to copy from (lmdb://PATH, file://PATH or s3://…; relative paths from the project).
        from: String,
        /// Storage to copy into (created if missing).
        to: String,
    },
    /// Bulk moderation: take down the ids listed in one file and flag as adult
    /// the ids in another, as one published batch. Ids that no longer exist are
    /// skipped.
    Moderate {
        /// Ids to take down, one per line (first tab-separated column; # comments).
        #[arg(long, value_name = "FILE")]
        removed: Option<PathBuf>,
        /// Ids to flag as adult, in the same format.
        #[arg(long, value_name = "FILE")]
        adult: Option<PathBuf>,
        /// Collection of the ids (default: the only collection declared).
        #[arg(long)]
        collection: Option<String>,
    },
    /// Serving from Cloudflare: a Worker that reads the site straight from
    /// R2, through the path manifest every publish writes there.
    Edge {
        #[command(subcommand)]
        action: EdgeAction,
    },
    /// Manage accounts (the operator's side of sign-up).
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// Simulate random adds, takedowns and edits on a dataset under every
    /// pagination scheme of the project's listings and print, per route family
    /// and scheme, the total pages and the pages re-rendered per event.
    Plan {
        /// NDJSON dataset (gzip-compressed if it ends in .gz).
        #[arg(long, value_name = "FILE")]
        dataset: PathBuf,
        /// Number of events to simulate.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Random seed (the same seed gives the same table).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Collection the dataset belongs to (default: that of the first listing).
        #[arg(long)]
        collection: Option<String>,
        /// Also write the simulated events to FILE, for `sesame apply`.
        #[arg(long, value_name = "FILE")]
        emit: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EdgeAction {
    /// Write the Worker (worker.js) and a wrangler.toml for this project into DIR.
    Init {
        /// Where to write them (created if missing).
        dir: PathBuf,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Copy the newest generation's manifest root where the Worker reads it
    /// now (after a write of it failed; publishes do it on their own).
    Sync {
        /// Rewrite every shard of the newest generation's table (resharded to
        /// its size). A table that cannot be read is published whole again
        /// by `sesame build`.
        #[arg(long)]
        whole: bool,
    },
    /// Add each verified custom domain to the zone as a custom hostname
    /// (Cloudflare for SaaS, validated over HTTP through the owner's CNAME),
    /// with the API token in CLOUDFLARE_API_TOKEN. Idempotent: run it after
    /// domains change, or every few minutes.
    Hostnames {
        /// The zone's id (the platform's zone, with the fallback origin).
        #[arg(long)]
        zone: String,
        /// Also remove the zone's custom hostnames that no verified domain
        /// names (only for a zone whose custom hostnames are all sesame's).
        #[arg(long)]
        prune: bool,
        /// Cloudflare's API.
        #[arg(long, default_value = edge::CLOUDFLARE_API)]
        api: String,
    },
}

#[derive(Subcommand)]
enum AccountsAction {
    /// Create an account and print its first API token.
    Create {
        /// The handle: 1-63 lowercase letters, digits and single inner hyphens.
        handle: String,
        /// Make it an administrator (moderation, any document).
        #[arg(long)]
        admin: bool,
    },
    /// Set an account's password for the dashboard, read from the first line
    /// of standard input (ends the account's dashboard sessions).
    Password {
        /// The account's handle.
        handle: String,
    },
    /// Hand imported content over to the person it belongs to: create the
    /// account HANDLE if needed, give it every document nobody owns whose
    /// owner is HANDLE (and its site), and print a new API token.
    Claim {
        /// The handle the content names.
        handle: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESAME_LOG").unwrap_or_else(|_| "warn,sqlx=error".into());
    // Colour only on a terminal: a log written to a file or a pipe keeps no
    // escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    if std::env::var("SESAME_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let bars = Bars::new();
    let dir = |default: &str| cli.project.clone().unwrap_or_else(|| PathBuf::from(default));
    match cli.command {
        Command::Init { dir: target, example } => {
            let target = target.unwrap_or_else(|| dir("."));
            init::write(&target, example)?;
            let (content, collection) = example.content();
            println!("created a {example:?} project in {}", target.display());
            println!(
                "next: cd {} && sesame import {content} --collection {collection} && sesame build && sesame serve",
                target.display()
            );
        }
        Command::Import { file, collection } => {
            let project = open(&dir(".")).await?;
            import(&project, &file, &collection, &bars).await?;
            project.store.close().await?;
        }
        Command::Build => {
            let project = open(&dir(".")).await?;
            build(&project, &bars).await?;
            project.store.close().await?;
        }
        Command::Serve { listen, demo } => {
            let project_dir = dir(if demo { "demo" } else { "." });
            if demo {
                prepare_demo(&project_dir, listen, &bars).await?;
            }
            let project = open(&project_dir).await?;
            roles::run(project, Some(listen), Roles { router: true, api: true, publisher: true }).await?;
        }
        Command::Router { listen } => {
            let project = open(&dir(".")).await?;
            roles::run(project, Some(listen), Roles { router: true, api: false, publisher: false }).await?;
        }
        Command::Api { listen } => {
            let project = open(&dir(".")).await?;
            roles::run(project, Some(listen), Roles { router: false, api: true, publisher: false }).await?;
        }
        Command::Publisher { listen } => {
            let project = open(&dir(".")).await?;
            roles::run(project, listen, Roles { router: false, api: false, publisher: true }).await?;
        }
        Command::Export { dir: out, generation } => {
            let project = open(&dir(".")).await?;
            let s = match generation {
                Some(n) => sesame_engine::export_generation(&project, &out, n, &bars).await?,
                None => sesame_engine::export(&project, &out, &bars).await?,
            };
            println!(
                "exported {} pages and {} redirects ({}) to {}",
                thousands(s.files),
                thousands(s.redirects),
                megabytes(s.bytes),
                out.display()
            );
        }
        Command::Apply { file, batch } => {
            let project = open(&dir(".")).await?;
            apply(&project, &file, batch, &bars).await?;
            project.store.close().await?;
        }
        Command::Gc => {
            let project = open(&dir(".")).await?;
            gc(&project).await?;
            project.store.close().await?;
        }
        Command::MigrateObjects { from, to } => {
            let m = sesame_engine::migrate_objects(&dir("."), &from, &to, &bars).await?;
            println!("copied {} objects ({}) from {from} to {to}", thousands(m.objects), megabytes(m.bytes));
        }
        Command::Check => {
            let project = open(&dir(".")).await?;
            return check(&project).await;
        }
        Command::Verify => {
            let project = open(&dir(".")).await?;
            return verify(&project, &bars).await;
        }
        Command::Plan { dataset, events, seed, collection, emit } => {
            plan(&dir("."), &dataset, events, seed, collection, emit.as_deref(), &bars)?;
        }
        Command::Edge { action } => {
            let project = open(&dir(".")).await?;
            match action {
                EdgeAction::Init { dir: out, force } => edge::init(&project, &out, force)?,
                EdgeAction::Sync { whole } => edge::sync(&project, whole).await?,
                EdgeAction::Hostnames { zone, prune, api } => {
                    let done = edge::hostnames(&project, &api, &zone, prune).await?;
                    for host in &done.created {
                        println!("added {host}");
                    }
                    for host in &done.removed {
                        println!("removed {host}");
                    }
                    if !done.unknown.is_empty() {
                        println!(
                            "left {} custom hostnames no verified domain names (--prune removes them)",
                            done.unknown.len()
                        );
                    }
                }
            }
            project.store.close().await?;
        }
        Command::Accounts { action } => {
            let project = open(&dir(".")).await?;
            accounts(&project, action).await?;
            project.store.close().await?;
        }
        Command::Moderate { removed, adult, collection } => {
            let project = open(&dir(".")).await?;
            moderate(&project, removed.as_deref(), adult.as_deref(), collection, &bars).await?;
            project.store.close().await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `apply`, `moderate` and `gc` wait for a running publish (a
/// server's publisher, another command) to give the publish lease back.
const LEASE_PATIENCE: Duration = Duration::from_secs(600);

/// Most refused documents `check` lists (all are counted).
const CHECK_LIST: usize = 200;

async fn check(project: &Project) -> Result<ExitCode> {
    let report = sesame_engine::check(project).await?;
    if report.invalid.is_empty() {
        println!("all {} documents fit their schemas", thousands(report.documents));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} of {} documents do not fit their schemas:",
        thousands(report.invalid.len() as u64),
        thousands(report.documents)
    );
    for (key, errors) in report.invalid.iter().take(CHECK_LIST) {
        for e in errors {
            println!("{key}: {e}");
        }
    }
    if report.invalid.len() > CHECK_LIST {
        println!("… and {} more documents", thousands((report.invalid.len() - CHECK_LIST) as u64));
    }
    Ok(ExitCode::FAILURE)
}

/// Sets an account's dashboard password from the first line of stdin.
async fn set_password(project: &Project, handle: &str) -> Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    let hash = sesame_api::hash_password(password).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if !project.store.set_password(handle, &hash).await? {
        anyhow::bail!("there is no account {handle:?}");
    }
    println!("password set for {handle}; their dashboard sessions have ended");
    Ok(())
}

async fn accounts(project: &Project, action: AccountsAction) -> Result<()> {
    let action = match action {
        AccountsAction::Password { handle } => return set_password(project, &handle).await,
        other => other,
    };
    let sites = project.site.config.api.sites.as_deref();
    let token = sesame_api::new_token().map_err(|e| anyhow::anyhow!("cannot make a token: {e:?}"))?;
    let hash = sesame_api::token_hash(&token).to_hex();
    let handle = match &action {
        AccountsAction::Create { handle, .. }
        | AccountsAction::Claim { handle }
        | AccountsAction::Password { handle } => handle,
    };
    sesame_model::slug::validate_handle(handle).map_err(|m| anyhow::anyhow!("handle {handle:?} {m}"))?;
    match action {
        AccountsAction::Create { handle, admin } => {
            let role = if admin { sesame_store::Role::Admin } else { sesame_store::Role::User };
            match project.store.create_account(&handle, role, sesame_store::Credential::Token(&hash), sites).await? {
                sesame_store::Registration::Created(id) => println!("created account {handle} (id {id})"),
                sesame_store::Registration::Taken => anyhow::bail!("the handle {handle:?} is taken"),
                sesame_store::Registration::OwnsContent => {
                    anyhow::bail!("content names {handle:?}: use `sesame accounts claim {handle}` to hand it over")
                }
            }
        }
        AccountsAction::Claim { handle } | AccountsAction::Password { handle } => {
            let claimed = project.store.claim_account(&handle, &hash, sites).await?;
            let verb = if claimed.created { "created" } else { "found" };
            println!(
                "{verb} account {handle} (id {}); {} documents are now its own",
                claimed.account,
                thousands(claimed.documents)
            );
        }
    }
    println!("token (shown once; send it as Authorization: Bearer TOKEN): {token}");
    Ok(())
}

async fn open(dir: &Path) -> Result<Project> {
    Project::open(dir).await.with_context(|| format!("cannot open the project in {}", dir.display()))
}

/// Opens a text input, decompressing it if it is gzip.
fn open_input(file: &Path) -> Result<Box<dyn BufRead>> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let gzipped = reader.fill_buf().map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
    Ok(if gzipped {
        Box::new(BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    })
}

async fn import(project: &Project, file: &Path, collection: &str, progress: &dyn Progress) -> Result<()> {
    let input = open_input(file)?;
    let label = file.display().to_string();
    let s = sesame_engine::import(project, input, &label, collection, progress).await?;
    println!("imported {} documents into {collection} in {:.1} s", thousands(s.documents), s.seconds);
    Ok(())
}

async fn build(project: &Project, progress: &dyn Progress) -> Result<Stats> {
    let built = sesame_engine::build(project, progress).await?;
    let s = &built.stats;
    println!(
        "built generation {}: {} pages, {} changed, {} objects written ({}) in {:.1} s",
        s.generation,
        thousands(s.rendered),
        thousands(s.changed),
        thousands(s.objects),
        megabytes(s.bytes),
        s.seconds
    );
    manifest_written(built.manifest.as_ref());
    compressed(&built.variants);
    Ok(built.stats)
}

/// Reports what the manifest's update wrote.
fn manifest_written(report: Option<&sesame_engine::manifest::ManifestReport>) {
    if let Some(m) = report {
        println!(
            "manifest at generation {}: {} blobs written ({} of {} shards{}{}; {:.1} KB) and the root ({:.1} KB) in {:.3} s",
            m.generation,
            thousands(m.blobs),
            thousands(m.shards_written),
            thousands(m.shards),
            if m.base_written { ", the base" } else { "" },
            if m.full { ", whole" } else { "" },
            m.bytes as f64 / 1e3,
            m.root_bytes as f64 / 1e3,
            m.seconds
        );
    }
}

/// Reports the compressed variants that followed a publish, if any.
fn compressed(v: &VariantReport) {
    if v.files > 0 {
        println!(
            "then compressed variants: {} files for {} objects ({}) in {:.1} s",
            thousands(v.files),
            thousands(v.objects),
            megabytes(v.bytes),
            v.seconds
        );
    }
}

fn describe(s: &Stats) -> String {
    format!(
        "generation {}: {} events, {} pages planned, {} rendered, {} changed, {} objects written ({}) in {:.3} s",
        s.generation,
        thousands(s.events),
        thousands(s.planned),
        thousands(s.rendered),
        thousands(s.changed),
        thousands(s.objects),
        megabytes(s.bytes),
        s.seconds
    )
}

async fn apply(project: &Project, file: &Path, batch: Option<u32>, progress: &dyn Progress) -> Result<()> {
    let label: Arc<str> = Arc::from(file.display().to_string());
    let mut lines = open_input(file)?.lines().enumerate();
    let size = batch.map_or(usize::MAX, |b| b as usize);
    // Held for the whole run, so that a running server does not publish a
    // batch between its ingestion and its publication here.
    let lease = PublishLease::wait(project, LEASE_PATIENCE).await?;
    // Given back whatever happens: a failed line must not leave other
    // publishers waiting for the lease to expire.
    let run = async {
        let mut publisher = Publisher::load(project).await?;
        let (mut batches, mut events, mut generations, mut seconds) = (0u64, 0u64, 0u64, 0f64);
        let mut uncompressed = Vec::new();
        loop {
            let mut located = Vec::new();
            while located.len() < size {
                let Some((i, line)) = lines.next() else { break };
                let line = line.with_context(|| format!("cannot read {label}"))?;
                if line.trim().is_empty() {
                    continue;
                }
                let event = parse_event(&line).map_err(|message| sesame_engine::EngineError::Line {
                    file: label.to_string(),
                    line: i as u64 + 1,
                    message,
                })?;
                located.push(Located { file: label.clone(), line: i as u64 + 1, event });
            }
            if located.is_empty() {
                break;
            }
            batches += 1;
            events += located.len() as u64;
            let (ingested, outcome) =
                publisher.apply_events(project, &lease, &located, Missing::Fail, progress).await?;
            match outcome {
                Some(mut o) => {
                    uncompressed.append(&mut o.uncompressed);
                    let s = o.stats;
                    generations += 1;
                    seconds += s.seconds;
                    println!(
                        "batch {batches}: {} events, {} changed documents → {}",
                        located.len(),
                        ingested.written,
                        describe(&s)
                    );
                    manifest_written(o.manifest.as_ref());
                }
                None => println!("batch {batches}: {} events, nothing changed", located.len()),
            }
        }
        Ok::<_, anyhow::Error>((batches, events, generations, seconds, uncompressed))
    }
    .await;
    lease.release(project).await;
    let (batches, events, generations, seconds, uncompressed) = run?;
    let mean = if generations > 0 { seconds / generations as f64 } else { 0.0 };
    println!(
        "applied {} events in {batches} batches: {generations} generations, {:.1} ms per batch on average",
        thousands(events),
        mean * 1000.0
    );
    compressed(&sesame_engine::add_variants(project, uncompressed, sesame_engine::Compress::Now, progress).await?);
    Ok(())
}

async fn verify(project: &Project, progress: &dyn Progress) -> Result<ExitCode> {
    let report = sesame_engine::verify(project, progress).await?;
    let pending = match report.pending {
        0 => String::new(),
        n => format!(" ({} events pending, not part of the comparison)", thousands(n)),
    };
    let manifest_ok = report.manifest.is_empty();
    if manifest_ok {
        println!("the manifest root the Worker reads is the one the generation recorded");
    } else {
        for d in &report.manifest {
            let show = |s: &Option<String>| s.clone().unwrap_or_default();
            println!("{} is {}, not {}: run `sesame edge sync`", d.path, show(&d.live), show(&d.expected));
        }
    }
    if report.differences.is_empty() {
        println!(
            "verified generation {}: {} pages, identical to a full build in {:.1} s{pending}",
            report.generation,
            thousands(report.pages),
            report.seconds
        );
        return Ok(if manifest_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    println!(
        "{} paths differ between a full build and the live site{pending}:",
        thousands(report.differences.len() as u64)
    );
    for d in report.differences.iter().take(100) {
        let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "nothing".into());
        println!("  {}: full build {}, live {}", d.path, show(&d.expected), show(&d.live));
    }
    if report.differences.len() > 100 {
        println!("  … and {} more", report.differences.len() - 100);
    }
    Ok(ExitCode::FAILURE)
}

/// Reads a moderation list: the first tab-separated column of each line is an
/// id; blank lines and lines starting with # are skipped.
fn moderation_list(
    file: &Path,
    collection: &str,
    make: impl Fn(String, serde_json::Value) -> Event,
) -> Result<Vec<Located>> {
    let label: Arc<str> = Arc::from(file.display().to_string());
    let mut out = Vec::new();
    for (i, line) in open_input(file)?.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {label}"))?;
        let id = line.split('\t').next().unwrap_or("").trim();
        if id.is_empty() || id.starts_with('#') {
            continue;
        }
        out.push(Located { file: label.clone(), line: i as u64 + 1, event: make(collection.to_string(), id.into()) });
    }
    Ok(out)
}

async fn moderate(
    project: &Project,
    removed: Option<&Path>,
    adult: Option<&Path>,
    collection: Option<String>,
    progress: &dyn Progress,
) -> Result<()> {
    let declared: Vec<&String> = project.site.config.collections.keys().collect();
    let collection = match (collection, declared.as_slice()) {
        (Some(c), _) => c,
        (None, [only]) => (*only).clone(),
        (None, _) => anyhow::bail!(
            "--collection is required when several collections are declared ({})",
            declared.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    if removed.is_none() && adult.is_none() {
        anyhow::bail!("nothing to do: give --removed FILE and/or --adult FILE");
    }
    let mut events = Vec::new();
    if let Some(file) = removed {
        events.extend(moderation_list(file, &collection, |collection, id| Event::Takedown { collection, id })?);
    }
    let taken_down = events.len();
    if let Some(file) = adult {
        events.extend(moderation_list(file, &collection, |collection, id| Event::Flag {
            collection,
            id,
            flag: sesame_model::FLAG_ADULT.into(),
            value: true,
        })?);
    }
    let lease = PublishLease::wait(project, LEASE_PATIENCE).await?;
    let outcome = moderate_under(project, &lease, &events, taken_down, progress).await;
    lease.release(project).await;
    if let Some(o) = outcome? {
        println!("published {}", describe(&o.stats));
        compressed(
            &sesame_engine::add_variants(project, o.uncompressed, sesame_engine::Compress::Now, progress).await?,
        );
    }
    Ok(())
}

/// Ingests and publishes moderation `events` under `lease`.
async fn moderate_under(
    project: &Project,
    lease: &PublishLease,
    events: &[Located],
    taken_down: usize,
    progress: &dyn Progress,
) -> Result<Option<sesame_engine::Outcome>> {
    let mut publisher = Publisher::load(project).await?;
    let (ingested, outcome) = publisher.apply_events(project, lease, events, Missing::Skip, progress).await?;
    println!(
        "moderation: {} takedowns and {} adult flags listed; {} changed, {} already so, {} ids not found (skipped)",
        thousands(taken_down as u64),
        thousands((events.len() - taken_down) as u64),
        thousands(ingested.written as u64),
        thousands(ingested.unchanged as u64),
        thousands(ingested.missing as u64)
    );
    Ok(outcome)
}

fn plan(
    dir: &Path,
    dataset: &Path,
    events: usize,
    seed: u64,
    collection: Option<String>,
    emit: Option<&Path>,
    progress: &dyn Progress,
) -> Result<()> {
    let config = sesame_config::Config::load(dir)?;
    let collection = match collection {
        Some(c) => c,
        None => config
            .routes
            .iter()
            .find_map(|r| match &r.kind {
                sesame_config::RouteKind::Listing(l) => Some(l.collection.clone()),
                _ => None,
            })
            .context("the project has no listing route to plan for")?,
    };
    let site = sesame_site::Site::new(config.clone());
    let docs = sesame_engine::read_documents(&site, open_input(dataset)?, &dataset.display().to_string(), &collection)?;
    let count = docs.len();
    let (rows, simulated) = sesame_engine::plan(&config, &collection, docs, events, seed, progress);
    if let Some(file) = emit {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?,
        );
        for e in &simulated {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    println!(
        "{} documents of {collection}, {events} events (seed {seed}): pages re-rendered per event",
        thousands(count as u64)
    );
    println!(
        "{:<28} {:<22} {:>12} {:>8} {:>8} {:>8} {:>8}",
        "route family", "scheme", "total pages", "min", "median", "p99", "max"
    );
    for r in rows {
        let [min, median, p99, max] = r.per_event;
        println!("{:<28} {:<22} {:>12} {min:>8} {median:>8} {p99:>8} {max:>8}", r.family, r.scheme, thousands(r.total));
    }
    Ok(())
}

/// Creates, fills and builds the demo project if it does not exist yet.
/// Its base URL is the address it is served on, so that its canonical links
/// and sitemap lead back to it (a link checker follows them).
async fn prepare_demo(dir: &Path, listen: SocketAddr, progress: &dyn Progress) -> Result<()> {
    let config = dir.join(sesame_config::CONFIG_FILE);
    if config.exists() {
        return Ok(());
    }
    init::write(dir, Example::Gallery)?;
    if listen.port() != 0 {
        let mut host = listen;
        if host.ip().is_unspecified() {
            host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let text = std::fs::read_to_string(&config).context("reading the demo's sesame.toml")?;
        let text = text.replacen("base_url = \"http://127.0.0.1:8080\"", &format!("base_url = \"http://{host}\""), 1);
        std::fs::write(&config, text).context("writing the demo's sesame.toml")?;
    }
    println!("created the gallery example in {}", dir.display());
    let project = open(dir).await?;
    let (content, collection) = Example::Gallery.content();
    // Every item gets a pixel-art sprite of its own, so the demo looks like a gallery.
    let mut items: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    for line in open_input(&dir.join(content))?.lines() {
        let line = line.context("reading the sample content")?;
        if let Ok(serde_json::Value::Object(item)) = serde_json::from_str(&line) {
            items.push(item);
        }
    }
    progress.stage("drawing sprites", items.len() as u64);
    let images = items.iter().map(|i| bytes::Bytes::from(sprites::sprite(&i["id"].to_string()))).collect();
    let stored = sesame_engine::media::store_many(&project, images).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    progress.finish();
    let with_images = dir.join("content/sprites-with-images.ndjson");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&with_images).context("writing the demo content")?);
    for (mut item, row) in items.into_iter().zip(&stored) {
        item.insert("image".into(), row.reference().into());
        writeln!(out, "{}", serde_json::Value::Object(item)).context("writing the demo content")?;
    }
    out.flush().context("writing the demo content")?;
    drop(out);
    import(&project, &with_images, collection, progress).await?;
    build(&project, progress).await?;
    Ok(())
}

async fn gc(project: &Project) -> Result<()> {
    let report = sesame_engine::collect_garbage(project, true, LEASE_PATIENCE).await?;
    println!(
        "garbage collected: {} objects ({} files), {} images ({}) and {} document versions no retained generation needs; {} files no record refers to",
        thousands(report.objects),
        thousands(report.files),
        thousands(report.media),
        megabytes(report.bytes),
        thousands(report.versions),
        thousands(report.swept)
    );
    Ok(())
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn the_publisher_answers_to_its_old_name() {
        for name in ["publisher", "worker"] {
            let cli = Cli::try_parse_from(["sesame", name]).expect(name);
            assert!(matches!(cli.command, Command::Publisher { listen: None }), "{name}");
        }
    }
}
