//! The file format as written, and its validation into [`Config`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::{
    Collection, Config, ConfigError, DocumentRoute, FeedFormat, GroupBy, ListingRoute, Order, PageRoute, PathPattern,
    Placeholder, Publish, RobotsRoute, Route, RouteKind, SITEMAP_PROTOCOL_MAX, Scheme, SitemapRoute,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    base_url: String,
    title: Option<String>,
    description: Option<String>,
    database_url: Option<String>,
    storage_url: Option<String>,
    #[serde(default)]
    collections: BTreeMap<String, RawCollection>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    publish: RawPublish,
    #[serde(default)]
    api: crate::Api,
    #[serde(default)]
    queue: crate::Queue,
    #[serde(default)]
    purge: crate::Purge,
    #[serde(default)]
    retention: crate::Retention,
    #[serde(default)]
    serve: crate::Serve,
    #[serde(default)]
    edge: crate::Edge,
    #[serde(default)]
    media: crate::MediaConfig,
    #[serde(default)]
    dashboard: crate::Dashboard,
    #[serde(default)]
    domains: crate::Domains,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollection {
    title: Option<String>,
    date: Option<String>,
    tags: Option<String>,
    owner: Option<String>,
    slug: Option<String>,
    #[serde(default)]
    markdown: Vec<String>,
    create: Option<crate::CreatePolicy>,
    schema: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Document,
    Listing,
    Page,
    Sitemap,
    Robots,
}

impl RawKind {
    fn as_str(self) -> &'static str {
        match self {
            RawKind::Document => "document",
            RawKind::Listing => "listing",
            RawKind::Page => "page",
            RawKind::Sitemap => "sitemap",
            RawKind::Robots => "robots",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    kind: RawKind,
    name: Option<String>,
    collection: Option<String>,
    path: Option<String>,
    template: Option<String>,
    group_by: Option<String>,
    order: Option<Order>,
    page_size: Option<u32>,
    scheme: Option<Scheme>,
    hot_threshold: Option<u32>,
    feeds: Option<Vec<FeedFormat>>,
    feed_size: Option<u32>,
    feed_entries: Option<String>,
    chunk_size: Option<u32>,
    sitemap: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    compress: Option<bool>,
    lease_seconds: Option<u32>,
    max_age: Option<u32>,
    partial_cache_mb: Option<u32>,
    stale_while_revalidate: Option<u32>,
}

/// A validation failure before the file name is attached.
struct Problem {
    key: String,
    message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { key: key.into(), message: message.into() }
}

pub(crate) fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let raw = deserialize(text, file)?;
    validate(raw).map_err(|p| ConfigError { file: file.to_path_buf(), key: p.key, message: p.message, line: None })
}

fn deserialize(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| toml_error(&e, text, file, "(file)".into()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = match e.path().to_string() {
            p if p == "." => "(file)".to_string(),
            p => p,
        };
        toml_error(e.inner(), text, file, key)
    })
}

fn toml_error(e: &toml::de::Error, text: &str, file: &Path, key: String) -> ConfigError {
    let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    ConfigError { file: file.to_path_buf(), key, message: e.message().trim().to_string(), line }
}

pub(crate) fn validate_base_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} must be an absolute http:// or https:// URL"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!("{url:?} must be an origin such as https://example.org (no path, query or user)"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn validate(raw: RawConfig) -> Result<Config, Problem> {
    let base_url = validate_base_url(&raw.base_url).map_err(|m| problem("base_url", m))?;
    let mut collections = BTreeMap::new();
    for (name, c) in raw.collections {
        if !is_name(&name) {
            return Err(problem(
                format!("collections.{name}"),
                "collection names use lowercase letters, digits, '-' and '_'",
            ));
        }
        let schema = match &c.schema {
            None => None,
            Some(file) => Some(check_project_file(file).map_err(|m| problem(format!("collections.{name}.schema"), m))?),
        };
        let create = match c.create {
            Some(policy) => policy,
            None if raw.api.sites.as_deref() == Some(name.as_str()) => crate::CreatePolicy::OwnHandle,
            None => crate::CreatePolicy::Admin,
        };
        collections.insert(
            name,
            Collection {
                title: c.title,
                date: c.date,
                tags: c.tags,
                owner: c.owner,
                slug: c.slug,
                markdown: c.markdown,
                create,
                schema,
            },
        );
    }
    let mut routes = Vec::new();
    let mut names = BTreeSet::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let route = validate_route(r, i, &collections)?;
        if !names.insert(route.name.clone()) {
            return Err(problem(
                format!("routes[{i}].name"),
                format!("another route is already named {:?}", route.name),
            ));
        }
        routes.push(route);
    }
    for kind in [RawKind::Sitemap, RawKind::Robots] {
        let count = routes
            .iter()
            .filter(|r| {
                matches!(
                    (&r.kind, kind),
                    (RouteKind::Sitemap(_), RawKind::Sitemap) | (RouteKind::Robots(_), RawKind::Robots)
                )
            })
            .count();
        if count > 1 {
            return Err(problem("routes", format!("at most one route of kind {:?} is allowed", kind.as_str())));
        }
    }
    let defaults = Publish::default();
    let publish = Publish {
        compress: raw.publish.compress.unwrap_or(defaults.compress),
        max_age: raw.publish.max_age.unwrap_or(defaults.max_age),
        stale_while_revalidate: raw.publish.stale_while_revalidate.unwrap_or(defaults.stale_while_revalidate),
        lease_seconds: raw.publish.lease_seconds.unwrap_or(defaults.lease_seconds),
        partial_cache_mb: raw.publish.partial_cache_mb.unwrap_or(defaults.partial_cache_mb),
    };
    if !(3..=600).contains(&publish.lease_seconds) {
        return Err(problem("publish.lease_seconds", "must be from 3 to 600"));
    }
    if publish.partial_cache_mb > 4096 {
        return Err(problem("publish.partial_cache_mb", "must be from 0 to 4096"));
    }
    if let Some(sites) = &raw.api.sites
        && !collections.contains_key(sites)
    {
        return Err(problem("api.sites", format!("unknown collection {sites:?}")));
    }
    for h in &raw.api.reserved_handles {
        if is_reserved_name(h).is_err() {
            return Err(problem("api.reserved_handles", format!("{h:?} is not a handle")));
        }
    }
    if raw.media.max_bytes < 1024 || raw.media.max_pixels == 0 {
        return Err(problem("media", "max_bytes must be at least 1024 and max_pixels at least 1"));
    }
    if raw.api.max_body_bytes < 1024 {
        return Err(problem("api.max_body_bytes", "must be at least 1024"));
    }
    if let Some(target) = &raw.domains.cname_target
        && sesame_model::host::host_name(target).is_err()
    {
        return Err(problem("domains.cname_target", format!("{target:?} is not a host name")));
    }
    if raw.domains.check_seconds == 0 {
        return Err(problem("domains.check_seconds", "must be at least 1"));
    }
    if let Some(acme) = &raw.domains.acme {
        if !acme.directory.starts_with("https://") {
            return Err(problem("domains.acme.directory", "must be an https:// URL"));
        }
        if acme.orders_per_window == 0 || acme.window_hours == 0 {
            return Err(problem("domains.acme", "orders_per_window and window_hours must be at least 1"));
        }
        if acme.retry_seconds == 0 {
            return Err(problem("domains.acme.retry_seconds", "must be at least 1"));
        }
        if !raw.domains.enabled() {
            return Err(problem("domains.acme", "needs [domains] cname_target or addresses"));
        }
    }
    if raw.api.archive_upload_seconds == 0 {
        return Err(problem("api.archive_upload_seconds", "must be at least 1"));
    }
    if raw.queue.batch_limit == 0 {
        return Err(problem("queue.batch_limit", "must be at least 1"));
    }
    match (raw.purge.kind, &raw.purge.url) {
        (crate::PurgeKind::None, _) => {}
        (_, None) => return Err(problem("purge.url", "required when purge.kind is set")),
        (_, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            return Err(problem("purge.url", format!("{url:?} must be an http:// or https:// URL")));
        }
        _ => {}
    }
    if raw.purge.batch == 0 || raw.purge.attempts == 0 {
        return Err(problem("purge", "batch and attempts must be at least 1"));
    }
    let serve = &raw.serve;
    if serve.max_connections == 0 {
        return Err(problem("serve.max_connections", "must be at least 1"));
    }
    for (key, value) in [
        ("serve.header_timeout_seconds", serve.header_timeout_seconds),
        ("serve.idle_timeout_seconds", serve.idle_timeout_seconds),
        ("serve.keep_alive_seconds", serve.keep_alive_seconds),
    ] {
        if value == 0 {
            return Err(problem(key, "must be at least 1"));
        }
    }
    if let Some(suffix) = &raw.serve.host_suffix
        && (suffix.is_empty() || suffix.starts_with('.') || suffix.contains(['/', ':', ' ']))
    {
        return Err(problem("serve.host_suffix", format!("{suffix:?} must be a domain such as users.example.net")));
    }
    if !(16..=65_536).contains(&raw.edge.shard_entries) {
        return Err(problem("edge.shard_entries", "must be from 16 to 65536"));
    }
    if raw.edge.recent_entries > 4096 {
        return Err(problem("edge.recent_entries", "must be at most 4096 (the root carries them)"));
    }
    if !(raw.edge.recent_entries..=1_000_000).contains(&raw.edge.delta_entries) {
        return Err(problem("edge.delta_entries", "must be from edge.recent_entries to 1000000"));
    }
    let dashboard = &raw.dashboard;
    let segment = dashboard.path.strip_prefix('/').and_then(|p| p.strip_suffix('/')).unwrap_or_default();
    if segment.is_empty()
        || !segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        || ["api", "media", "sitemaps", "healthz", "metrics", "_v"].contains(&segment)
    {
        return Err(problem(
            "dashboard.path",
            format!(
                "{:?} must be one path segment such as \"/_/\" or \"/dashboard/\", not a system path",
                dashboard.path
            ),
        ));
    }
    if dashboard.access == crate::DashboardAccess::Everyone && raw.api.sites.is_none() {
        return Err(problem("dashboard.access", "\"everyone\" edits their own site: set [api] sites too"));
    }
    if dashboard.session_hours == 0 || dashboard.logins_per_hour == 0 {
        return Err(problem("dashboard", "session_hours and logins_per_hour must be at least 1"));
    }
    let mut serve = raw.serve;
    // Host names compare case-insensitively; a fully qualified name's dot is noise.
    serve.host_suffix = serve.host_suffix.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    Ok(Config {
        base_url,
        title: raw.title.unwrap_or_else(|| "sesame site".into()),
        description: raw.description.unwrap_or_default(),
        database_url: raw.database_url,
        storage_url: raw.storage_url,
        collections,
        routes,
        publish,
        api: raw.api,
        queue: raw.queue,
        purge: raw.purge,
        retention: raw.retention,
        serve,
        edge: raw.edge,
        media: raw.media,
        dashboard: raw.dashboard,
        domains: raw.domains,
    })
}

/// The handle rule (lowercase slug, inner hyphens); kept here so that the
/// configuration crate stays free of other sesame crates.
fn is_reserved_name(h: &str) -> Result<(), ()> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.')
        && !h.starts_with('-');
    if ok { Ok(()) } else { Err(()) }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Field-by-field checks of one `[[routes]]` entry.
struct RouteCheck<'a> {
    raw: &'a RawRoute,
    index: usize,
}

impl RouteCheck<'_> {
    fn key(&self, field: &str) -> String {
        format!("routes[{}].{field}", self.index)
    }

    fn require<'v, T>(&self, field: &str, value: &'v Option<T>) -> Result<&'v T, Problem> {
        value
            .as_ref()
            .ok_or_else(|| problem(self.key(field), format!("required for kind = {:?}", self.raw.kind.as_str())))
    }

    /// Refuses fields that mean nothing for this kind of route.
    fn only(&self, allowed: &[&str]) -> Result<(), Problem> {
        let r = self.raw;
        let present = [
            ("name", r.name.is_some()),
            ("collection", r.collection.is_some()),
            ("path", r.path.is_some()),
            ("template", r.template.is_some()),
            ("group_by", r.group_by.is_some()),
            ("order", r.order.is_some()),
            ("page_size", r.page_size.is_some()),
            ("scheme", r.scheme.is_some()),
            ("hot_threshold", r.hot_threshold.is_some()),
            ("feeds", r.feeds.is_some()),
            ("feed_size", r.feed_size.is_some()),
            ("feed_entries", r.feed_entries.is_some()),
            ("chunk_size", r.chunk_size.is_some()),
            ("sitemap", r.sitemap.is_some()),
        ];
        for (field, is_set) in present {
            if is_set && field != "name" && !allowed.contains(&field) {
                return Err(problem(self.key(field), format!("not allowed for kind = {:?}", r.kind.as_str())));
            }
        }
        Ok(())
    }

    fn collection<'c>(
        &self,
        collections: &'c BTreeMap<String, Collection>,
    ) -> Result<(&'c str, &'c Collection), Problem> {
        let name = self.require("collection", &self.raw.collection)?;
        collections.get_key_value(name.as_str()).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
            let known: Vec<&str> = collections.keys().map(String::as_str).collect();
            problem(
                self.key("collection"),
                format!(
                    "unknown collection {name:?} (declared: {})",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            )
        })
    }

    fn pattern(&self, allowed: &[Placeholder]) -> Result<PathPattern, Problem> {
        let path = self.require("path", &self.raw.path)?;
        PathPattern::parse(path, allowed).map_err(|m| problem(self.key("path"), m))
    }

    /// The feeds named, each once.
    fn feeds(&self) -> Result<Vec<FeedFormat>, Problem> {
        let mut feeds = self.raw.feeds.clone().unwrap_or_default();
        feeds.sort();
        if feeds.windows(2).any(|w| w[0] == w[1]) {
            return Err(problem(self.key("feeds"), "names a feed twice"));
        }
        Ok(feeds)
    }

    fn template(&self) -> Result<String, Problem> {
        let t = self.require("template", &self.raw.template)?;
        check_template_name(t).map_err(|m| problem(self.key("template"), m))?;
        Ok(t.clone())
    }
}

fn check_template_name(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && !t.starts_with('/')
        && t.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && t.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok { Ok(()) } else { Err(format!("{t:?} must be a relative file name inside templates/")) }
}

fn validate_route(r: RawRoute, index: usize, collections: &BTreeMap<String, Collection>) -> Result<Route, Problem> {
    let check = RouteCheck { raw: &r, index };
    let (kind, default_name) = match r.kind {
        RawKind::Document => {
            check.only(&["collection", "path", "template", "sitemap", "feeds", "feed_entries"])?;
            let (cname, coll) = check.collection(collections)?;
            let path = check.pattern(&[Placeholder::Id, Placeholder::Owner, Placeholder::Slug])?;
            if path.has(Placeholder::Slug) && coll.slug.is_none() {
                return Err(problem(
                    check.key("path"),
                    format!("uses {{slug}} but collection {cname:?} declares no slug field"),
                ));
            }
            if !path.has(Placeholder::Id) && !path.has(Placeholder::Owner) && !path.has(Placeholder::Slug) {
                return Err(problem(
                    check.key("path"),
                    "needs a placeholder ({id}, {owner} or {slug}) so that documents get distinct pages",
                ));
            }
            let feeds = check.feeds()?;
            if !feeds.is_empty() && r.feed_entries.as_deref().is_none_or(str::is_empty) {
                return Err(problem(check.key("feed_entries"), "names the list field whose elements the feeds show"));
            }
            let name = path.to_string();
            let route = DocumentRoute {
                collection: cname.to_string(),
                path,
                template: check.template()?,
                sitemap: r.sitemap.unwrap_or(true),
                feeds,
                feed_entries: r.feed_entries.clone().filter(|_| r.feeds.is_some()),
            };
            (RouteKind::Document(route), name)
        }
        RawKind::Listing => {
            check.only(&[
                "collection",
                "path",
                "template",
                "group_by",
                "order",
                "page_size",
                "scheme",
                "hot_threshold",
                "feeds",
                "feed_size",
            ])?;
            let (cname, coll) = check.collection(collections)?;
            let group_by = match r.group_by.as_deref() {
                None => None,
                Some("tags") if coll.tags.is_none() => {
                    return Err(problem(check.key("group_by"), format!("collection {cname:?} declares no tags field")));
                }
                Some("tags") => Some(GroupBy::Tags),
                Some("owner") => Some(GroupBy::Owner),
                Some(f) if !f.is_empty() => Some(GroupBy::Field(f.to_string())),
                Some(_) => {
                    return Err(problem(check.key("group_by"), "must name tags, owner or a field"));
                }
            };
            let allowed: &[Placeholder] = if group_by.is_some() { &[Placeholder::Group] } else { &[] };
            let path = check.pattern(allowed)?;
            if group_by.is_some() && !path.has(Placeholder::Group) {
                return Err(problem(check.key("path"), "a grouped listing needs {group} in its path"));
            }
            let order = r.order.unwrap_or(Order::Newest);
            let scheme = r.scheme.unwrap_or(Scheme::Offset);
            let page_size = r.page_size.unwrap_or(60);
            if !(1..=1000).contains(&page_size) {
                return Err(problem(check.key("page_size"), "must be between 1 and 1000"));
            }
            match scheme {
                Scheme::Stable if order != Order::Newest => {
                    return Err(problem(
                        check.key("order"),
                        "scheme = \"stable\" numbers pages in arrival order and needs order = \"newest\"",
                    ));
                }
                Scheme::Date if coll.date.is_none() => {
                    return Err(problem(
                        check.key("scheme"),
                        format!("scheme = \"date\" needs a date field in collection {cname:?}"),
                    ));
                }
                Scheme::Date if order != Order::Newest => {
                    return Err(problem(
                        check.key("order"),
                        "scheme = \"date\" numbers pages inside each month in arrival order and needs order = \"newest\"",
                    ));
                }
                _ => {}
            }
            if let Some(t) = r.hot_threshold {
                if scheme != Scheme::Offset {
                    return Err(problem(check.key("hot_threshold"), "only applies to scheme = \"offset\""));
                }
                if order != Order::Newest {
                    return Err(problem(
                        check.key("hot_threshold"),
                        "moves hot groups to the stable scheme, which needs order = \"newest\"",
                    ));
                }
                if t == 0 {
                    return Err(problem(check.key("hot_threshold"), "must be at least 1"));
                }
            }
            let feeds = check.feeds()?;
            if !feeds.is_empty() && order != Order::Newest {
                return Err(problem(
                    check.key("feeds"),
                    "a feed shows the newest documents and needs order = \"newest\"",
                ));
            }
            let feed_size = r.feed_size.unwrap_or(20);
            if !(1..=100).contains(&feed_size) {
                return Err(problem(check.key("feed_size"), "must be between 1 and 100"));
            }
            let name = path.to_string();
            let route = ListingRoute {
                collection: cname.to_string(),
                path,
                template: check.template()?,
                group_by,
                order,
                page_size,
                scheme,
                hot_threshold: r.hot_threshold,
                feeds,
                feed_size,
            };
            (RouteKind::Listing(route), name)
        }
        RawKind::Page => {
            check.only(&["path", "template"])?;
            let path = check.require("path", &r.path)?;
            check_page_path(path).map_err(|m| problem(check.key("path"), m))?;
            (RouteKind::Page(PageRoute { path: path.clone(), template: check.template()? }), path.clone())
        }
        RawKind::Sitemap => {
            check.only(&["chunk_size"])?;
            let chunk_size = r.chunk_size.unwrap_or(SITEMAP_PROTOCOL_MAX);
            if !(1..=SITEMAP_PROTOCOL_MAX).contains(&chunk_size) {
                return Err(problem(
                    check.key("chunk_size"),
                    format!("must be between 1 and {SITEMAP_PROTOCOL_MAX} (the sitemaps.org limit)"),
                ));
            }
            (RouteKind::Sitemap(SitemapRoute { chunk_size }), "sitemap".into())
        }
        RawKind::Robots => {
            check.only(&["template"])?;
            let template = match &r.template {
                Some(_) => Some(check.template()?),
                None => None,
            };
            (RouteKind::Robots(RobotsRoute { template }), "robots".into())
        }
    };
    let name = match r.name.clone() {
        Some(n) if is_name(&n) => n,
        Some(n) => {
            return Err(problem(check.key("name"), format!("{n:?}: names use lowercase letters, digits, '-' and '_'")));
        }
        None => default_name,
    };
    Ok(Route { name, kind })
}

/// A file named relative to the project directory, inside it.
fn check_project_file(file: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::Path::new(file);
    let inside = !file.is_empty()
        && path.is_relative()
        && path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if inside { Ok(path.to_path_buf()) } else { Err(format!("{file:?} must be a relative path inside the project")) }
}

fn check_page_path(path: &str) -> Result<(), String> {
    let ok = path.starts_with('/')
        && !path.contains("//")
        && path.split('/').all(|s| s != "." && s != "..")
        && path.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~/".contains(c));
    if ok { Ok(()) } else { Err(format!("{path:?} must be an absolute path of letters, digits and -_.~")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ConfigError {
        parse(text, Path::new("sesame.toml")).unwrap_err()
    }

    const BASE: &str = "base_url = \"https://example.org\"\n[collections.sprites]\ntitle = \"title\"\ndate = \"created\"\ntags = \"tags\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("base_url = \"https://example.org/\"\n", Path::new("sesame.toml")).unwrap();
        assert_eq!(c.base_url, "https://example.org");
        assert_eq!(c.title, "sesame site");
        assert!(c.publish.compress);
        assert_eq!(c.publish.lease_seconds, 15);
        assert!(c.routes.is_empty());
    }

    #[test]
    fn the_publish_lease_is_bounded() {
        for bad in ["0", "2", "601"] {
            let e = parse_err(&format!("{BASE}[publish]\nlease_seconds = {bad}\n"));
            assert_eq!(e.key, "publish.lease_seconds", "{bad}");
        }
        let c =
            parse(&format!("{BASE}[publish]\nlease_seconds = 3\n[edge]\nmanifest = false\n"), Path::new("t")).unwrap();
        assert_eq!(c.publish.lease_seconds, 3);
    }

    #[test]
    fn the_partial_cache_is_bounded() {
        assert_eq!(parse(BASE, Path::new("t")).unwrap().publish.partial_cache_mb, 128);
        let e = parse_err(&format!("{BASE}[publish]\npartial_cache_mb = 4097\n"));
        assert_eq!(e.key, "publish.partial_cache_mb");
        let e = parse_err(&format!("{BASE}[publish]\npartial_cache_mb = -1\n"));
        assert!(e.key.starts_with("publish"), "{e}");
        let c = parse(&format!("{BASE}[publish]\npartial_cache_mb = 0\n"), Path::new("t")).unwrap();
        assert_eq!(c.publish.partial_cache_mb, 0);
    }

    #[test]
    fn listing_defaults_and_names() {
        let c = parse(
            &format!("{BASE}[[routes]]\nkind = \"listing\"\ncollection = \"sprites\"\npath = \"/tags/{{group}}/\"\ngroup_by = \"tags\"\ntemplate = \"tag.html\"\n"),
            Path::new("sesame.toml"),
        )
        .unwrap();
        let RouteKind::Listing(l) = &c.routes[0].kind else { panic!("not a listing") };
        assert_eq!((l.page_size, l.scheme, l.order), (60, Scheme::Offset, Order::Newest));
        assert_eq!(c.routes[0].name, "/tags/{group}/");
    }

    #[test]
    fn syntax_error_names_line() {
        let e = parse_err("base_url = \"https://example.org\"\ntitle = \n");
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("sesame.toml: (file): "), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_err(&format!("{BASE}[[routes]]\nkind = \"listing\"\ncolection = \"sprites\"\n"));
        assert_eq!(e.key, "routes[0].colection");
        assert!(e.message.contains("unknown field `colection`"), "{e}");
        assert_eq!(e.line, Some(8));
    }

    #[test]
    fn bad_enum_value_is_named() {
        let e = parse_err(&format!("{BASE}[[routes]]\nkind = \"listing\"\nscheme = \"fancy\"\n"));
        assert_eq!(e.key, "routes[0].scheme");
        assert!(e.message.contains("unknown variant `fancy`"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let listing = |extra: &str| {
            format!(
                "{BASE}[[routes]]\nkind = \"listing\"\ncollection = \"sprites\"\npath = \"/s/\"\ntemplate = \"s.html\"\n{extra}"
            )
        };
        let cases = [
            ("base_url = \"ftp://x\"\n", "base_url", "absolute http"),
            (&listing("order = \"title\"\nfeeds = [\"atom\"]\n"), "routes[0].feeds", "needs order = \"newest\""),
            (&listing("feeds = [\"json\", \"json\"]\n"), "routes[0].feeds", "names a feed twice"),
            (&listing("feeds = [\"atom\"]\nfeed_size = 0\n"), "routes[0].feed_size", "between 1 and 100"),
            (&listing("feeds = [\"rss\"]\n"), "routes[0].feeds[0]", "unknown variant"),
            (
                &format!(
                    "{BASE}[[routes]]\nkind = \"document\"\ncollection = \"sprites\"\npath = \"/s/{{id}}/\"\ntemplate = \"s.html\"\nfeeds = [\"atom\"]\n"
                ),
                "routes[0].feed_entries",
                "names the list field",
            ),
            (&listing("feed_entries = \"tags\"\n"), "routes[0].feed_entries", "not allowed for kind = \"listing\""),
            (
                &format!(
                    "{BASE}[[routes]]\nkind = \"document\"\ncollection = \"spritez\"\npath = \"/s/{{id}}/\"\ntemplate = \"s.html\"\n"
                ),
                "routes[0].collection",
                "unknown collection \"spritez\" (declared: sprites)",
            ),
            (
                &format!(
                    "{BASE}[[routes]]\nkind = \"listing\"\ncollection = \"sprites\"\npath = \"/s/\"\ntemplate = \"s.html\"\nscheme = \"stable\"\norder = \"title\"\n"
                ),
                "routes[0].order",
                "needs order = \"newest\"",
            ),
            (
                &format!(
                    "{BASE}[[routes]]\nkind = \"page\"\npath = \"/\"\ntemplate = \"i.html\"\ncollection = \"sprites\"\n"
                ),
                "routes[0].collection",
                "not allowed for kind = \"page\"",
            ),
            (
                &format!(
                    "{BASE}[[routes]]\nkind = \"listing\"\ncollection = \"sprites\"\npath = \"/s/\"\ntemplate = \"../x.html\"\n"
                ),
                "routes[0].template",
                "relative file name",
            ),
            (&format!("{BASE}[[routes]]\nkind = \"sitemap\"\nchunk_size = 60000\n"), "routes[0].chunk_size", "50000"),
            (
                &format!(
                    "{BASE}[[routes]]\nkind = \"listing\"\ncollection = \"sprites\"\npath = \"/s/\"\ntemplate = \"s.html\"\ngroup_by = \"tags\"\n"
                ),
                "routes[0].path",
                "needs {group}",
            ),
        ];
        for (text, key, msg) in cases {
            let e = parse_err(text);
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    #[test]
    fn service_sections_have_defaults_and_checks() {
        let c = parse("base_url = \"https://example.org\"\n", Path::new("sesame.toml")).unwrap();
        assert_eq!((c.queue.quiet_ms, c.queue.max_wait_ms), (2000, 60_000));
        assert_eq!(c.api.max_updates_per_hour, 600);
        assert!(c.serve.versioned_urls);
        let e = parse_err("base_url = \"https://example.org\"\n[purge]\nkind = \"cloudflare\"\n");
        assert_eq!(e.key, "purge.url");
        let e = parse_err("base_url = \"https://example.org\"\n[api]\nsites = \"nope\"\n");
        assert_eq!(e.key, "api.sites");
        let e = parse_err("base_url = \"https://example.org\"\n[queue]\nquiet = 5\n");
        assert!(e.key.starts_with("queue"), "{e}");
        let c =
            parse("base_url = \"https://example.org\"\n[api]\nadmin_token = \"hunter2\"\n", Path::new("sesame.toml"))
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "secrets never printed");
    }

    #[test]
    fn env_overrides() {
        let mut c = parse("base_url = \"https://example.org\"\n", Path::new("sesame.toml")).unwrap();
        c.apply_env(|k| (k == "SESAME_DATABASE_URL").then(|| "sqlite://x.db".to_string())).unwrap();
        assert_eq!(c.database_url.as_deref(), Some("sqlite://x.db"));
        let err = c.apply_env(|k| (k == "SESAME_BASE_URL").then(|| "nope".to_string())).unwrap_err();
        assert_eq!(err.0, "SESAME_BASE_URL");
    }
}
