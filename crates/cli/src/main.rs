//! `sesame`: one binary, a subcommand per job.

mod init;
mod progress;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sesame_engine::{Progress, Project, Stats};
use sesame_router::{Caching, Router, RouterConfig};

use crate::init::Example;
use crate::progress::Bars;

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
        /// Create the gallery example in ./demo if absent, import its sample
        /// content, build it, then serve it.
        #[arg(long)]
        demo: bool,
    },
    /// Write the published site as a plain file tree for any static server.
    Export {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESAME_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
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
        }
        Command::Build => {
            let project = open(&dir(".")).await?;
            build(&project, &bars).await?;
        }
        Command::Serve { listen, demo } => {
            let project_dir = dir(if demo { "demo" } else { "." });
            if demo {
                prepare_demo(&project_dir, &bars).await?;
            }
            let project = open(&project_dir).await?;
            serve(&project, listen).await?;
        }
        Command::Export { dir: out } => {
            let project = open(&dir(".")).await?;
            let s = sesame_engine::export(&project, &out, &bars).await?;
            println!(
                "exported {} pages and {} redirects ({}) to {}",
                thousands(s.files),
                thousands(s.redirects),
                megabytes(s.bytes),
                out.display()
            );
        }
    }
    Ok(())
}

async fn open(dir: &Path) -> Result<Project> {
    Project::open(dir).await.with_context(|| format!("cannot open the project in {}", dir.display()))
}

async fn import(project: &Project, file: &Path, collection: &str, progress: &dyn Progress) -> Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let gzipped = reader.fill_buf().map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
    let input: Box<dyn BufRead> = if gzipped {
        Box::new(BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    };
    let label = file.display().to_string();
    let s = sesame_engine::import(project, input, &label, collection, progress).await?;
    println!("imported {} documents into {collection} in {:.1} s", thousands(s.documents), s.seconds);
    Ok(())
}

async fn build(project: &Project, progress: &dyn Progress) -> Result<Stats> {
    let s = sesame_engine::build(project, progress).await?;
    println!(
        "built generation {}: {} pages, {} changed, {} objects written ({}) in {:.1} s",
        s.generation,
        thousands(s.rendered),
        thousands(s.changed),
        thousands(s.objects),
        megabytes(s.bytes),
        s.seconds
    );
    Ok(s)
}

/// Creates, fills and builds the demo project if it does not exist yet.
async fn prepare_demo(dir: &Path, progress: &dyn Progress) -> Result<()> {
    if dir.join(sesame_config::CONFIG_FILE).exists() {
        return Ok(());
    }
    init::write(dir, Example::Gallery)?;
    println!("created the gallery example in {}", dir.display());
    let project = open(dir).await?;
    let (content, collection) = Example::Gallery.content();
    import(&project, &dir.join(content), collection, progress).await?;
    build(&project, progress).await?;
    Ok(())
}

async fn serve(project: &Project, listen: SocketAddr) -> Result<()> {
    let publish = &project.site.config.publish;
    let config = RouterConfig {
        caching: Caching { max_age: publish.max_age, stale_while_revalidate: publish.stale_while_revalidate },
        ..RouterConfig::default()
    };
    let router = Router::load(project.store.clone(), project.objects.clone(), config).await?;
    let _follow = router.follow(Duration::from_millis(500));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!(
        "serving {} at http://{addr}/ (generation {}, {} paths)",
        project.dir.display(),
        router.generation(),
        thousands(router.len() as u64)
    );
    if router.is_empty() {
        println!("nothing is published yet: run `sesame build`");
    }
    std::io::stdout().flush().ok();
    axum::serve(listener, router.app()).with_graceful_shutdown(shutdown()).await.context("serving failed")?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
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
