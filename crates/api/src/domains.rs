//! Custom domains: an owner attaches a host to their site, sesame says which
//! DNS records to add, and checks them.
//!
//! A claim is proven by a TXT record at `_sesame-challenge.<host>` holding
//! the claim's token (as Cloudflare's pre-validation does, so a live site
//! can move without downtime), and live while the host also resolves to the
//! platform (`[domains] cname_target` or `addresses`). Several sites may
//! claim one host; the one whose token the DNS shows holds it. Checks run
//! when the owner asks and every `[domains] check_seconds` for claims not
//! live yet.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use serde::{Deserialize, Serialize};
use sesame_engine::Actor;
use sesame_store::{DomainCheck, DomainRow};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::{Caller, own_site};
use crate::error::{ApiError, ErrorBody};
use crate::input::{ApiPath, JsonBody, site_key};

type S = State<Arc<ApiState>>;

/// The label under which a host's proof is published.
const CHALLENGE: &str = "_sesame-challenge";

/// Asks DNS what owners published.
pub(crate) struct Dns {
    resolver: TokioResolver,
    config: sesame_config::Domains,
}

impl Dns {
    /// A resolver asking `[domains] resolver`, or the system's; answers are
    /// not cached, so a check sees what the DNS says now.
    pub(crate) fn new(config: &sesame_config::Domains) -> Result<Dns, String> {
        let mut builder = match config.resolver {
            Some(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| format!("reading the system's DNS settings: {e}"))?,
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = std::time::Duration::from_secs(3);
        options.attempts = 2;
        let resolver = builder.build().map_err(|e| format!("making a DNS resolver: {e}"))?;
        Ok(Dns { resolver, config: config.clone() })
    }

    /// The texts of the TXT records at `name`; none when it has none.
    async fn texts(&self, name: &str) -> Result<Vec<String>, String> {
        match self.resolver.txt_lookup(format!("{name}.")).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect()),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(format!("DNS did not answer for {name}: {e}")),
        }
    }

    /// The addresses `host` resolves to (following CNAMEs); none when it has none.
    async fn addresses(&self, host: &str) -> Result<BTreeSet<IpAddr>, String> {
        match self.resolver.lookup_ip(format!("{host}.")).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) if e.is_no_records_found() => Ok(BTreeSet::new()),
            Err(e) => Err(format!("DNS did not answer for {host}: {e}")),
        }
    }

    /// Checks a claim: is its token published, and does the host resolve
    /// to the platform?
    pub(crate) async fn check(&self, claim: &DomainRow) -> DomainCheck {
        let host = &claim.host;
        let name = format!("{CHALLENGE}.{host}");
        let (texts, found, ours) = tokio::join!(self.texts(&name), self.addresses(host), self.platform());
        let (texts, found, ours) = match (texts, found, ours) {
            (Ok(t), Ok(f), Ok(o)) => (t, f, o),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return DomainCheck { proven: false, points_here: false, problem: Some(e) };
            }
        };
        let proven = texts.iter().any(|t| t.trim() == claim.token);
        let points_here = !found.is_empty() && found.is_subset(&ours);
        let problem = if !proven && texts.is_empty() {
            Some(format!("no TXT record at {name} yet (a new record can take a while to be seen)"))
        } else if !proven {
            Some(format!("the TXT record at {name} does not hold this site's token"))
        } else if found.is_empty() {
            Some(format!("{host} has no address yet: add the CNAME or A record shown"))
        } else if !points_here {
            let elsewhere: Vec<String> = found.difference(&ours).map(ToString::to_string).collect();
            Some(format!("{host} points to {}, not to this platform", elsewhere.join(", ")))
        } else {
            None
        };
        DomainCheck { proven, points_here, problem }
    }

    /// The addresses hosts pointed at the platform resolve to.
    async fn platform(&self) -> Result<BTreeSet<IpAddr>, String> {
        let mut ours: BTreeSet<IpAddr> = self.config.addresses.iter().copied().collect();
        if let Some(target) = &self.config.cname_target {
            ours.extend(self.addresses(target).await?);
        }
        Ok(ours)
    }
}

/// A DNS record to add.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordOut {
    /// `CNAME`, `A`, `AAAA` or `TXT`.
    r#type: &'static str,
    /// The name it is at.
    name: String,
    /// What it holds.
    value: String,
    /// What it is for.
    purpose: &'static str,
}

/// A custom domain of a site and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DomainOut {
    pub(crate) host: String,
    /// `waiting_for_dns` (the proof is not seen yet), `verified` (the host
    /// is this site's; its DNS does not point here yet or, where sesame
    /// orders certificates, its certificate is not issued yet) or `live`.
    pub(crate) status: &'static str,
    /// What is wrong, in words: the last check's finding, or why its
    /// certificate is not issued yet.
    pub(crate) problem: Option<String>,
    /// When it was last checked (RFC 3339).
    checked: Option<String>,
    /// Its certificate, once issued.
    pub(crate) certificate: Option<CertificateOut>,
    /// The records to add at the host's DNS provider.
    records: Vec<RecordOut>,
}

/// A domain's certificate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CertificateOut {
    /// When it was issued (RFC 3339).
    issued: String,
    /// When it expires (RFC 3339); it is renewed ahead of that.
    pub(crate) expires: String,
}

/// `d` as its owner sees it, with its certificate's state.
async fn domain_out(state: &ApiState, d: DomainRow) -> Result<DomainOut, ApiError> {
    let config = &state.project.site.config.domains;
    let store = &state.project.store;
    let certificate = match d.verified {
        Some(_) => store.certificate_dates(&d.host).await?,
        None => None,
    };
    let mut out = records_out(config, d);
    out.certificate = certificate.map(|(issued, expires)| CertificateOut {
        issued: sesame_model::time::rfc3339(issued),
        expires: sesame_model::time::rfc3339(expires),
    });
    if config.acme.is_some() && out.status == "live" && out.certificate.is_none() {
        // Served over HTTP already; live once HTTPS is.
        out.status = "verified";
        out.problem = Some(match store.acme_host(&out.host).await? {
            Some(failed) => format!(
                "its certificate could not be issued ({}); trying again after {}",
                failed.problem,
                sesame_model::time::rfc3339(failed.retry_at)
            ),
            None => "its certificate is being issued".to_string(),
        });
    }
    Ok(out)
}

fn records_out(config: &sesame_config::Domains, d: DomainRow) -> DomainOut {
    let mut records = Vec::new();
    if let Some(target) = &config.cname_target {
        records.push(RecordOut {
            r#type: "CNAME",
            name: d.host.clone(),
            value: target.clone(),
            purpose: "points a subdomain (such as www) here",
        });
    }
    for ip in &config.addresses {
        records.push(RecordOut {
            r#type: if ip.is_ipv4() { "A" } else { "AAAA" },
            name: d.host.clone(),
            value: ip.to_string(),
            purpose: "points an apex domain here (where a CNAME is not allowed)",
        });
    }
    records.push(RecordOut {
        r#type: "TXT",
        name: format!("{CHALLENGE}.{}", d.host),
        value: d.token.clone(),
        purpose: "proves the domain is yours; add it first to move a live site without downtime",
    });
    let status = match (d.verified, d.live) {
        (Some(_), Some(_)) => "live",
        (Some(_), None) => "verified",
        _ => "waiting_for_dns",
    };
    DomainOut {
        host: d.host,
        status,
        problem: d.problem,
        checked: d.checked.map(sesame_model::time::rfc3339),
        certificate: None,
        records,
    }
}

/// The domain feature, or why there is none.
fn dns(state: &ApiState) -> Result<&Dns, ApiError> {
    state
        .dns
        .as_ref()
        .ok_or_else(|| ApiError::not_found("custom domains are not set up on this platform ([domains] in sesame.toml)"))
}

/// A domain to attach.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachIn {
    /// The host, e.g. `www.ann.example` (IDNA names are taken too).
    host: String,
}

/// My site's custom domains.
#[utoipa::path(get, path = "/sites/{handle}/domains", tag = "domains", security(("token" = [])),
    params(("handle" = String, Path)),
    responses((status = 200, body = Vec<DomainOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(crate) async fn list_domains(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
) -> Result<Json<Vec<DomainOut>>, ApiError> {
    Ok(Json(list(&state, &actor, &h).await?))
}

/// The domains of the site of `h`, for `actor` who may edit it.
pub(crate) async fn list(state: &ApiState, actor: &Actor, h: &str) -> Result<Vec<DomainOut>, ApiError> {
    site_key(state, h)?;
    own_site(actor, h)?;
    dns(state)?;
    let mut listed = Vec::new();
    for d in state.project.store.domains_of(h).await? {
        listed.push(domain_out(state, d).await?);
    }
    Ok(listed)
}

/// Attaches a domain to my site: the answer lists the DNS records to add.
/// A host another site holds can be claimed too; it becomes mine when its
/// DNS shows my token.
#[utoipa::path(post, path = "/sites/{handle}/domains", tag = "domains", security(("token" = [])),
    params(("handle" = String, Path)), request_body = AttachIn,
    responses((status = 201, body = DomainOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
pub(crate) async fn attach_domain(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
    JsonBody(body): JsonBody<AttachIn>,
) -> Result<Response, ApiError> {
    let attached = attach(&state, &actor, &h, &body.host).await?;
    Ok((StatusCode::CREATED, Json(attached)).into_response())
}

/// Attaches `host_text` (as typed) to the site of `h` for `actor`.
pub(crate) async fn attach(state: &ApiState, actor: &Actor, h: &str, host_text: &str) -> Result<DomainOut, ApiError> {
    site_key(state, h)?;
    own_site(actor, h)?;
    dns(state)?;
    let config = &state.project.site.config.domains;
    let host = sesame_model::host::host_name(host_text).map_err(|e| ApiError::invalid("host", e))?;
    if state.is_platform_host(&host) {
        return Err(ApiError::invalid("host", format!("{host} is one of this platform's own hosts")));
    }
    // Each attach and check asks DNS: they count against the write budget.
    state.charge(actor)?;
    let held = state.project.store.domains_of(h).await?;
    if held.iter().any(|d| d.host == host) {
        return Err(ApiError::conflict("host", format!("{host} is attached to this site already")));
    }
    if held.len() >= config.per_site as usize {
        return Err(ApiError::conflict("host", format!("a site may have {} domains", config.per_site)));
    }
    let mut token = [0u8; 16];
    getrandom::fill(&mut token).map_err(|e| ApiError::internal(&e))?;
    let row = DomainRow {
        host,
        site: h.to_string(),
        account: actor.account,
        token: format!("sesame-{}", hex(&token)),
        created: sesame_model::time::now(),
        checked: None,
        problem: None,
        verified: None,
        live: None,
    };
    if !state.project.store.attach_domain(&row).await? {
        return Err(ApiError::conflict("host", format!("{} is attached to this site already", row.host)));
    }
    Ok(records_out(config, row))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a domain of my site's DNS now.
#[utoipa::path(post, path = "/sites/{handle}/domains/{host}/check", tag = "domains", security(("token" = [])),
    params(("handle" = String, Path), ("host" = String, Path)),
    responses((status = 200, body = DomainOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn check_domain(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((h, host)): ApiPath<(String, String)>,
) -> Result<Json<DomainOut>, ApiError> {
    Ok(Json(check(&state, &actor, &h, &host).await?))
}

/// Checks `host` of the site of `h` for `actor` now.
pub(crate) async fn check(state: &ApiState, actor: &Actor, h: &str, host: &str) -> Result<DomainOut, ApiError> {
    site_key(state, h)?;
    own_site(actor, h)?;
    let dns = dns(state)?;
    let gone = || ApiError::not_found(format!("{host} is not attached to {h}"));
    let claim = state.project.store.domain(host, h).await?.ok_or_else(gone)?;
    state.charge(actor)?;
    let row = record_check(state, dns, &claim).await?.ok_or_else(gone)?;
    domain_out(state, row).await
}

/// Checks `claim`'s DNS and records what it found; the claim as it now
/// stands (`None`: detached meanwhile). A claim that became the host's or
/// stopped being it is served (or not) at once, and one that went live
/// wakes the certificate issuer.
async fn record_check(state: &ApiState, dns: &Dns, claim: &DomainRow) -> Result<Option<DomainRow>, ApiError> {
    let check = dns.check(claim).await;
    let now = sesame_model::time::now();
    // A claim proven now takes the host from the site that held it.
    let holder = match check.proven && claim.verified.is_none() {
        true => verified_holder(state, &claim.host).await?,
        false => None,
    };
    let row = state.project.store.record_domain_check(&claim.host, &claim.site, &check, now).await?;
    let stands = |d: &DomainRow| (d.verified.is_some(), d.live.is_some());
    if let Some(row) = &row
        && stands(row) != stands(claim)
    {
        state.domains_changed().await;
        let sites = std::iter::once(claim.site.as_str()).chain(holder.as_deref());
        reconcile_site_domains(state, sites).await?;
        if row.live.is_some() {
            state.acme_wake.notify_one();
        }
    }
    Ok(row)
}

/// The site whose claim on `host` is verified, if any.
async fn verified_holder(state: &ApiState, host: &str) -> Result<Option<String>, ApiError> {
    let verified = state.project.store.verified_domains().await?;
    Ok(verified.into_iter().find(|d| d.host == host).map(|d| d.site))
}

/// Makes the documents of `sites` name the domain each is served at now
/// ([`sesame_store::primary_domains`]), as the platform's change, due at
/// once: their pages, feeds and sitemap entries are published again with
/// the domain's URLs. A site without a document yet gets its domain when
/// the background check next reconciles.
pub(crate) async fn reconcile_site_domains<'s>(
    state: &ApiState,
    sites: impl IntoIterator<Item = &'s str>,
) -> Result<(), ApiError> {
    let Some(collection) = state.project.site.config.api.sites.as_deref() else { return Ok(()) };
    let verified = state.project.store.verified_domains().await?;
    let primary = sesame_store::primary_domains(&verified);
    let mut written = false;
    for site in sites.into_iter().collect::<BTreeSet<_>>() {
        let key = sesame_model::DocKey::new(collection, site);
        let domain = primary.get(site).copied();
        // Read first: most reconciliations find the document right already.
        let stored = state.project.store.document(&key).await?;
        if stored.is_some_and(|s| s.doc.domain.as_deref() != domain) {
            written |= sesame_engine::set_domain(&state.project, &key, domain).await?.is_some();
        }
    }
    if written {
        state.accepted();
    }
    Ok(())
}

/// Detaches a domain from my site.
#[utoipa::path(delete, path = "/sites/{handle}/domains/{host}", tag = "domains", security(("token" = [])),
    params(("handle" = String, Path), ("host" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(crate) async fn detach_domain(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((h, host)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    detach(&state, &actor, &h, &host).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Detaches `host` from the site of `h` for `actor`.
pub(crate) async fn detach(state: &ApiState, actor: &Actor, h: &str, host: &str) -> Result<(), ApiError> {
    site_key(state, h)?;
    own_site(actor, h)?;
    dns(state)?;
    if state.project.store.detach_domain(host, h).await? {
        state.domains_changed().await;
        reconcile_site_domains(state, [h]).await?;
        Ok(())
    } else {
        Err(ApiError::not_found(format!("{host} is not attached to {h}")))
    }
}

/// Checks, every `[domains] check_seconds`, the claims not live yet (a few
/// at a time, least recently checked first), so that an owner who added
/// the records sees the status change without asking.
pub(crate) async fn check_in_background(state: Arc<ApiState>) {
    let Some(dns) = state.dns.as_ref() else { return };
    let every = std::time::Duration::from_secs(state.project.site.config.domains.check_seconds);
    loop {
        tokio::time::sleep(every).await;
        // Sites whose domain went live before their document existed, or
        // whose last reconciliation was cut short, catch up here.
        let live = match state.project.store.verified_domains().await {
            Ok(verified) => verified.into_iter().filter(|d| d.live.is_some()).map(|d| d.site).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the verified domains");
                Vec::new()
            }
        };
        if let Err(e) = reconcile_site_domains(&state, live.iter().map(String::as_str)).await {
            tracing::warn!(error = %e.message(), "cannot record the sites' domains");
        }
        let claims = match state.project.store.domains_to_check(50).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the domains to check");
                continue;
            }
        };
        for claim in claims {
            if let Err(e) = record_check(&state, dns, &claim).await {
                tracing::warn!(error = %e.message(), host = %claim.host, "cannot record a domain check");
            }
        }
    }
}
