//! The long-running process roles. `serve` runs all three in one process;
//! `router`, `api` and `publisher` run one each, any number of each against one
//! database and one bucket.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sesame_api::{ApiState, MetricsRender};
use sesame_engine::{OnDemand, Project, PublishLoop, PublishLoopHandle, PurgeJob, Purger};
use sesame_model::OnDemandReply;
use sesame_router::server::{self, Limits};
use sesame_router::{Dynamic, Router, RouterConfig};

/// Which roles a process plays.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    /// Serve the published site.
    pub router: bool,
    /// Answer the write API.
    pub api: bool,
    /// Publish due changes, purge, collect garbage.
    pub publisher: bool,
}

/// How often a process looks for generations committed elsewhere (when the
/// store does not announce them, or an announcement is missed).
const FOLLOW: Duration = Duration::from_millis(500);

/// Installs the Prometheus recorder (once per process: a test may run
/// several services in one); returns how to render it. Rendering also
/// samples the process's open file descriptors.
fn install_metrics() -> Result<MetricsRender> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    let handle = match HANDLE.get() {
        Some(handle) => handle.clone(),
        None => {
            let latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .context("configuring metrics")?
                .install_recorder()
                .context("installing the metrics recorder")?;
            HANDLE.get_or_init(|| handle).clone()
        }
    };
    Ok(Arc::new(move || {
        if let Some((open, limit)) = server::fd_usage() {
            metrics::gauge!("sesame_process_open_fds").set(open as f64);
            metrics::gauge!("sesame_process_max_fds").set(limit as f64);
        }
        handle.render()
    }))
}

/// The connection limits of `[serve]`, fitted to the open-file limit.
fn limits(serve: &sesame_config::Serve, fd_limit: Option<u64>) -> Limits {
    Limits {
        max_connections: serve.max_connections,
        header_timeout: Duration::from_secs(serve.header_timeout_seconds),
        idle_timeout: Duration::from_secs(serve.idle_timeout_seconds),
        // Clients must stop reusing a connection before the idle timeout
        // closes it.
        keep_alive: Duration::from_secs(
            serve.keep_alive_seconds.min(serve.idle_timeout_seconds.saturating_sub(1)).max(1),
        ),
        shutdown_timeout: Duration::from_secs(serve.shutdown_timeout_seconds),
    }
    .within_fds(fd_limit)
}

/// Serves the deep pages and feeds of `head` listings through the router.
struct HeadPages(Arc<OnDemand>);

#[async_trait::async_trait]
impl Dynamic for HeadPages {
    async fn page(&self, path: &str, query: Option<&str>) -> Option<OnDemandReply> {
        self.0.page(path, query).await
    }
}

/// Runs the roles until Ctrl-C or SIGTERM. A publisher role with no router or
/// API listens only when `listen` is given (for `/healthz` and `/metrics`).
pub async fn run(project: Project, listen: Option<SocketAddr>, roles: Roles) -> Result<()> {
    let dir = project.dir.display().to_string();
    let ready = |served: Ready| {
        match served.addr {
            Some(addr) => {
                println!("serving {dir} as {} at http://{addr}/ (generation {})", served.names, served.generation);
                if let Some(https) = served.https {
                    println!("answering HTTPS for custom domains at {https}");
                }
                if served.empty {
                    println!("nothing is published yet: run `sesame build`");
                }
            }
            None => println!("running {dir} as {}", served.names),
        }
        std::io::stdout().flush().ok();
    };
    serve(project, listen, roles, shutdown(), ready).await
}

/// What [`serve`] tells once it is ready.
pub struct Ready {
    /// The address it listens on (none: a publisher without `--listen`).
    pub addr: Option<SocketAddr>,
    /// Where it answers HTTPS for custom domains (`[domains] https_listen`).
    pub https: Option<SocketAddr>,
    /// The roles it plays, as `router + api + publisher`.
    pub names: String,
    /// The generation it serves.
    pub generation: u64,
    /// Whether nothing is published yet.
    pub empty: bool,
}

/// Runs the roles until `until` completes; calls `ready` once listening.
/// `sesame serve` and the role commands run it until a signal; tests run it
/// in process.
pub async fn serve(
    project: Project,
    listen: Option<SocketAddr>,
    roles: Roles,
    until: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(Ready),
) -> Result<()> {
    let project = Arc::new(project);
    let config = &project.site.config;
    let metrics = install_metrics()?;
    let limits = limits(&config.serve, server::raise_fd_limit());

    // HTTPS for custom domains, beside HTTP, when the router runs here.
    let https = match config.domains.https_listen.filter(|_| roles.router) {
        Some(addr) => {
            let listener = server::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
            Some((listener.local_addr()?, listener))
        }
        None => None,
    };
    let (router, on_demand) = if roles.router {
        let on_demand = if OnDemand::needed(&project.site) {
            Some(OnDemand::load(&project, config.serve.on_request_cache_mb.saturating_mul(1024 * 1024)).await?)
        } else {
            None
        };
        let dynamic = on_demand.clone().map(|o| Arc::new(HeadPages(o)) as Arc<dyn Dynamic>);
        let router_config = RouterConfig {
            rules: project.serve_rules(),
            cache_bytes: config.serve.cache_mb.saturating_mul(1024 * 1024),
            compress_on_request: config.serve.compress && !config.publish.compress,
            https_port: https.as_ref().map(|(addr, _)| addr.port()),
            answers_acme: config.domains.acme.is_some(),
        };
        let router = Router::load(project.store.clone(), project.objects.clone(), router_config, dynamic).await?;
        (Some(router), on_demand)
    } else {
        (None, None)
    };
    let _follow = router.as_ref().map(|r| r.follow(FOLLOW));
    let _follow_head = on_demand.as_ref().map(|o| o.follow(FOLLOW));
    let purger = if roles.publisher || roles.api { Purger::start(&config.purge) } else { None };
    let handle = PublishLoopHandle::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if roles.publisher {
        let mut publisher = PublishLoop::new(project.clone(), handle.clone()).await?;
        // Each generation is served at once by this process's router, purged at
        // the CDN and followed by the pages rendered on request.
        let (router, on_demand, purger, site) =
            (router.clone(), on_demand.clone(), purger.clone(), project.site.clone());
        publisher.on_published(move |outcome| {
            let (router, on_demand) = (router.clone(), on_demand.clone());
            tokio::spawn(async move {
                if let Some(r) = router
                    && let Err(e) = r.refresh().await
                {
                    tracing::warn!(error = %e, "cannot refresh the router");
                }
                if let Some(o) = on_demand
                    && let Err(e) = o.refresh().await
                {
                    tracing::warn!(error = %e, "cannot refresh pages rendered on request");
                }
            });
            if let Some(p) = &purger {
                let urls = outcome.paths.iter().map(|path| site.absolute(path)).collect();
                p.purge(PurgeJob { generation: outcome.stats.generation, urls, tags: outcome.tags.clone() });
            }
        });
        tasks.push(tokio::spawn(publisher.run(stopped.clone())));
        tasks.push(tokio::spawn(collect_garbage_periodically(project.clone(), stopped)));
    }

    let mut app = sesame_api::ops(project.clone(), Some(metrics));
    if roles.api {
        let served = router.clone().map(|r| Arc::new(move || r.generation()) as sesame_api::ServedGeneration);
        let state = ApiState::new(project.clone(), handle, purger, served);
        // Domains verified or certified here are served at once by this process's router.
        if let Some(router) = router.clone() {
            state.on_domains_changed(Box::new(move || {
                let router = router.clone();
                Box::pin(async move {
                    if let Err(e) = router.refresh_custom_hosts().await {
                        tracing::warn!(error = %e, "cannot read the custom domains again");
                    }
                })
            }));
        }
        app = app.merge(sesame_api::router(state));
    }
    if let Some(r) = &router {
        app = app.merge(r.app());
    }
    let listen = match (listen, roles.router || roles.api) {
        (Some(addr), _) => Some(addr),
        (None, true) => Some("127.0.0.1:8080".parse().context("default address")?),
        (None, false) => None,
    };
    let names: Vec<&str> = [(roles.router, "router"), (roles.api, "api"), (roles.publisher, "publisher")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    let names = names.join(" + ");
    let https = match (https, &router) {
        (Some((addr, listener)), Some(router)) => {
            let config = sesame_router::tls::server_config(router.certificates()).context("TLS settings")?;
            let tls = server::Tls { config, challenges: router.alpn_challenges(), wait: router.certificate_wait() };
            Some((addr, listener, tls))
        }
        _ => None,
    };
    match listen {
        Some(addr) => {
            let listener = server::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
            let addr = listener.local_addr()?;
            let generation = project.store.latest_generation().await?;
            let empty = router.as_ref().is_some_and(|r| r.is_empty());
            let https_addr = https.as_ref().map(|(a, _, _)| *a);
            ready(Ready { addr: Some(addr), https: https_addr, names, generation, empty });
            let (stop_https, https_stopped) = tokio::sync::watch::channel(false);
            let secure = https.map(|(_, listener, tls)| {
                let (app, mut stopped) = (app.clone(), https_stopped);
                tokio::spawn(async move {
                    let until = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    server::serve_with(listener, app, limits, Some(tls), until).await
                })
            });
            server::serve(listener, app, limits, until).await.context("serving failed")?;
            stop_https.send(true).ok();
            if let Some(secure) = secure {
                secure.await.context("the HTTPS listener")?.context("serving HTTPS failed")?;
            }
        }
        None => {
            ready(Ready { addr: None, https: None, names, generation: 0, empty: false });
            until.await;
        }
    }
    // Let a batch in progress finish: what was acknowledged stays queued anyway.
    stop.send(true).ok();
    for t in tasks {
        t.await.ok();
    }
    project.store.close().await?;
    Ok(())
}

/// Collects garbage every `gc_interval_seconds`, sweeping storage every
/// `sweep_interval_hours` (the first sweep one interval after start).
async fn collect_garbage_periodically(project: Arc<Project>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let retention = &project.site.config.retention;
    let every = Duration::from_secs(retention.gc_interval_seconds.max(1));
    let sweep_every = Duration::from_secs(retention.sweep_interval_hours.saturating_mul(3600).max(1));
    let mut last_sweep = std::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        let sweep = last_sweep.elapsed() >= sweep_every;
        match sesame_engine::collect_garbage(&project, sweep, Duration::ZERO).await {
            Ok(r) => {
                if sweep {
                    last_sweep = std::time::Instant::now();
                }
                if r.objects + r.media + r.swept > 0 {
                    tracing::info!(objects = r.objects, media = r.media, swept = r.swept, "garbage collected");
                }
            }
            Err(sesame_engine::EngineError::Busy(_)) => {}
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown() {
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
