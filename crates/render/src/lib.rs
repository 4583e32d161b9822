//! Rendering: turns a resolved page into bytes.
//!
//! Templates are minijinja files from the project's `templates/` folder.
//! User text is escaped by the template engine (auto-escaping by file
//! extension), markdown is converted with pulldown-cmark and then sanitised with
//! ammonia, and link targets from users go through the `safe_url` filter.
//! Sitemaps and the default `robots.txt` are produced in code.
//!
//! Invariants: rendering is a pure function of the resolved page and the
//! templates: no clock, no I/O after loading, no randomness, and map iteration
//! is ordered, so the same input always gives the same bytes.

mod feeds;
mod helpers;
mod markdown;
mod partials;
mod view;
mod xml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{Environment, Value, context};
use sesame_config::RouteKind;
use sesame_site::{Body, Resolved, Site};

pub use markdown::markdown_to_safe_html;

/// A rendered page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes with their media type.
    Page {
        /// The body.
        bytes: Vec<u8>,
        /// `Content-Type` value.
        content_type: &'static str,
    },
    /// A permanent redirect to this path.
    Redirect(String),
    /// 410 Gone.
    Gone,
}

/// Why a template could not be loaded or a page not rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The templates folder or a file in it could not be read.
    #[error("cannot read templates in {}: {source}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A route names a template that does not exist.
    #[error("route {route:?} uses template {template:?}, which is not in templates/")]
    MissingTemplate {
        /// The route name.
        route: String,
        /// The missing template.
        template: String,
    },
    /// A template failed to compile or to render.
    #[error("template {template}{} {}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default(), context)]
    Template {
        /// The template that failed.
        template: String,
        /// Line in that template, when known.
        line: Option<usize>,
        /// What was being done: compiling, or rendering which page for which document.
        context: String,
        /// The template engine's message.
        message: String,
    },
}

impl RenderError {
    fn template(err: &minijinja::Error, fallback: &str, context: String) -> RenderError {
        RenderError::Template {
            template: err.name().unwrap_or(fallback).to_string(),
            line: err.line(),
            context,
            message: match err.detail() {
                Some(d) => format!("{}: {d}", err.kind()),
                None => err.kind().to_string(),
            },
        }
    }
}

/// Media type for a template or path by its extension.
pub fn content_type_for(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("xml") => "application/xml",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        Some("woff2") => "font/woff2",
        Some("pdf") => "application/pdf",
        Some("html" | "htm") | None => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The files of `static/` by name (`style.css`, `img/logo.png`) → their
/// fingerprinted URL path, for the `asset()` template function.
pub type Assets = std::collections::BTreeMap<String, String>;

/// Compiled templates plus the site they render, and the partials they
/// rendered (`partial_cached`).
pub struct Renderer {
    env: Environment<'static>,
    site: Arc<Site>,
    /// What the pages it renders depend on besides their documents.
    fingerprint: String,
    /// What it was compiled from, for [`Renderer::cold`].
    sources: Vec<(String, String)>,
    assets: Arc<Assets>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").field("templates", &self.env.templates().count()).finish()
    }
}

impl Renderer {
    /// Loads every file under `dir` as a template (name = path relative to
    /// `dir`) and checks that every route's template exists.
    pub fn load(site: Arc<Site>, dir: &Path, assets: Assets) -> Result<Renderer, RenderError> {
        let mut sources = Vec::new();
        collect(dir, dir, &mut sources)?;
        Renderer::from_sources(site, sources, assets)
    }

    /// Builds a renderer from `(name, source)` pairs.
    pub fn from_sources(
        site: Arc<Site>,
        sources: Vec<(String, String)>,
        assets: Assets,
    ) -> Result<Renderer, RenderError> {
        // The templates and the static files they link, in a stable order.
        let mut hasher = blake3::Hasher::new();
        let mut named: Vec<&(String, String)> = sources.iter().collect();
        named.sort();
        for (name, source) in named {
            for part in [name.as_bytes(), b"\0", source.as_bytes(), b"\0"] {
                hasher.update(part);
            }
        }
        for (name, url) in &assets {
            for part in [name.as_bytes(), b"\0", url.as_bytes(), b"\0"] {
                hasher.update(part);
            }
        }
        let fingerprint = hasher.finalize().to_hex().to_string();
        let mut env = Environment::new();
        let assets = Arc::new(assets);
        helpers::install(&mut env, &site, &assets);
        let partials = partials::Partials::new(u64::from(site.config.publish.partial_cache_mb) << 20);
        env.add_function("partial_cached", move |state: &minijinja::State, name: &str, item: Value| {
            partials.render(state, name, item)
        });
        for (name, source) in &sources {
            env.add_template_owned(name.clone(), source.clone())
                .map_err(|e| RenderError::template(&e, name, "while compiling".into()))?;
        }
        for route in &site.config.routes {
            let template = match &route.kind {
                RouteKind::Document(d) => Some(&d.template),
                RouteKind::Listing(l) => Some(&l.template),
                RouteKind::Page(p) => Some(&p.template),
                RouteKind::Robots(r) => r.template.as_ref(),
                RouteKind::Sitemap(_) => None,
            };
            if let Some(t) = template
                && env.get_template(t).is_err()
            {
                return Err(RenderError::MissingTemplate { route: route.name.clone(), template: t.clone() });
            }
        }
        Ok(Renderer { env, site, fingerprint, sources, assets })
    }

    /// The same templates with nothing rendered yet: what `verify` renders
    /// with, so that a partial kept from earlier cannot hide a difference.
    pub fn cold(&self) -> Result<Renderer, RenderError> {
        Renderer::from_sources(self.site.clone(), self.sources.clone(), Assets::clone(&self.assets))
    }

    /// What pages depend on besides their documents: a hash of the
    /// templates and of the static files they link. Two renderers with the
    /// same fingerprint render every page alike.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Renders a resolved page.
    pub fn render(&self, page: &Resolved<'_>) -> Result<Output, RenderError> {
        let config = &self.site.config;
        let site_ctx =
            context! { title => &config.title, description => &config.description, base_url => &config.base_url };
        let url = self.site.absolute(&page.path);
        let html = |template: &str, doc_key: Option<String>, ctx: Value| -> Result<Output, RenderError> {
            let describe = || match &doc_key {
                Some(k) => format!("rendering {} (document {k})", page.path),
                None => format!("rendering {}", page.path),
            };
            let tmpl = self.env.get_template(template).map_err(|e| RenderError::template(&e, template, describe()))?;
            let text = tmpl.render(ctx).map_err(|e| RenderError::template(&e, template, describe()))?;
            Ok(Output::Page { bytes: text.into_bytes(), content_type: content_type_for(template) })
        };
        match &page.body {
            Body::Document { route, doc } => {
                let route_cfg = self.site.document_route(*route);
                let doc_view = view::document(&self.site, doc, Some(&page.path));
                let gate = doc.has_flag(sesame_model::FLAG_ADULT);
                let url = self.site.doc_url(doc, &page.path);
                let page_ctx = context! {
                    path => &page.path, url => &url, canonical => &url, noindex => !doc.indexable(), kind => "document",
                };
                let feeds = feed_links(&page.path, &route_cfg.feeds);
                let ctx =
                    context! { site => site_ctx, page => page_ctx, doc => doc_view, gate => gate, feeds => feeds };
                html(&route_cfg.template, Some(doc.key.to_string()), ctx)
            }
            Body::Listing { route, group, items, pagination, buckets } => {
                let route_cfg = self.site.listing_route(*route);
                let items: Vec<Value> = items.iter().map(|i| view::Item::value(&self.site, i.doc, i.path)).collect();
                let page_ctx = context! { path => &page.path, url => &url, canonical => &url, noindex => false, kind => "listing" };
                let base = self.site.group_base(*route, group);
                let feeds = feed_links(&base, &route_cfg.feeds);
                let listing = context! {
                    name => self.site.route_name(*route),
                    path => base,
                    scheme => pagination.scheme,
                };
                let ctx = context! {
                    site => site_ctx,
                    page => page_ctx,
                    listing => listing,
                    group => group.as_ref(),
                    items => items,
                    pagination => Value::from(minijinja::value::Serde(pagination)),
                    buckets => Value::from(minijinja::value::Serde(buckets)),
                    feeds => feeds,
                };
                html(&route_cfg.template, None, ctx)
            }
            Body::Static(ix) => match self.site.route(*ix) {
                RouteKind::Page(p) => {
                    let page_ctx = context! { path => &page.path, url => &url, canonical => &url, noindex => false, kind => "page" };
                    let mut out = html(&p.template, None, context! { site => site_ctx, page => page_ctx })?;
                    if let Output::Page { content_type, .. } = &mut out {
                        *content_type = content_type_for(&p.path);
                    }
                    Ok(out)
                }
                RouteKind::Robots(r) => match &r.template {
                    Some(t) => {
                        html(t, None, context! { site => site_ctx, sitemap => self.site.sitemap_route().is_some() })
                    }
                    None => Ok(Output::Page {
                        bytes: xml::default_robots(&self.site).into_bytes(),
                        content_type: "text/plain; charset=utf-8",
                    }),
                },
                other => unreachable!("static page of route {other:?}"),
            },
            Body::SitemapIndex(files) => Ok(Output::Page {
                bytes: xml::sitemap_index(&self.site, files).into_bytes(),
                content_type: "application/xml",
            }),
            Body::SitemapUrls(urls) => {
                Ok(Output::Page { bytes: xml::urlset(urls).into_bytes(), content_type: "application/xml" })
            }
            Body::Syndication { route, group, format, items } => {
                let (bytes, content_type) = feeds::listing(&self.site, *route, group, *format, items);
                Ok(Output::Page { bytes, content_type })
            }
            Body::DocumentFeed { route, doc, page, format } => {
                let (bytes, content_type) = feeds::document(&self.site, *route, doc, page, *format);
                Ok(Output::Page { bytes, content_type })
            }
            Body::Feed { items, next, .. } => {
                let items: Vec<Value> = items.iter().map(|i| view::document(&self.site, i.doc, i.path)).collect();
                let feed = context! { items => items, next => next };
                let bytes = serde_json::to_vec(&feed).map_err(|e| RenderError::Template {
                    template: "(feed)".into(),
                    line: None,
                    context: format!("rendering {}", page.path),
                    message: e.to_string(),
                })?;
                Ok(Output::Page { bytes, content_type: "application/json" })
            }
            Body::Redirect(to) => Ok(Output::Redirect(to.clone())),
            Body::Gone => Ok(Output::Gone),
        }
    }
}

/// The feeds of a page at `base` (`feeds` in templates: `type`, `href`),
/// for `<link rel="alternate">`.
fn feed_links(base: &str, feeds: &[sesame_config::FeedFormat]) -> Vec<Value> {
    feeds.iter().map(|f| context! { type => f.content_type(), href => format!("{base}{}", f.file()) }).collect()
}

/// Reads template files recursively, skipping hidden files.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<(), RenderError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RenderError::Read { path, source }
    };
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map_err(read_err(dir))?.collect::<Result<Vec<_>, _>>().map_err(read_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let source = std::fs::read_to_string(&path).map_err(read_err(&path))?;
            out.push((name, source));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sesame_model::{DocKey, Document, Status};
    use sesame_site::{PageId, SiteState};

    const CONFIG: &str = r#"
base_url = "https://example.org"
[collections.items]
title = "title"
markdown = ["bio"]
[[routes]]
kind = "document"
collection = "items"
path = "/items/{id}/"
template = "item.html"
"#;

    fn setup(template: &str, data: serde_json::Value) -> (Renderer, SiteState) {
        setup_with(vec![("item.html".into(), template.into())], data)
    }

    fn setup_with(sources: Vec<(String, String)>, data: serde_json::Value) -> (Renderer, SiteState) {
        let config = sesame_config::Config::parse(CONFIG, Path::new("sesame.toml")).unwrap();
        let site = Site::new(config);
        let assets = Assets::from([("style.css".to_string(), "/static/style.0123456789abcdef.css".to_string())]);
        let renderer = Renderer::from_sources(site.clone(), sources, assets).unwrap();
        let doc = Document {
            key: DocKey::new("items", "1"),
            owner: None,
            created: 0,
            updated: 0,
            status: Status::Live,
            flags: vec![],
            data: data.as_object().unwrap().clone().into(),
            media: Default::default(),
            domain: None,
        };
        (renderer, SiteState::load(site, [doc], [], []).0)
    }

    fn render(r: &Renderer, state: &SiteState) -> Result<String, RenderError> {
        let page = state.resolve(&PageId::DocPath("/items/1/".into())).unwrap();
        match r.render(&page)? {
            Output::Page { bytes, .. } => Ok(String::from_utf8(bytes).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escapes_user_fields_and_sanitises_markdown() {
        let (r, s) = setup(
            "<h1>{{ doc.title }}</h1>{{ doc.bio_html }}<a href=\"{{ doc.link | safe_url }}\">x</a><link rel=canonical href=\"{{ page.canonical }}\">",
            serde_json::json!({"title": "<script>x</script>", "bio": "**b**<script>y</script>", "link": "javascript:z"}),
        );
        let html = render(&r, &s).unwrap();
        assert!(html.contains("<h1>&lt;script&gt;x&lt;/script&gt;</h1>"), "{html}");
        assert!(html.contains("<p><strong>b</strong></p>"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("href=\"#\""), "{html}");
        assert!(html.contains("href=\"https://example.org/items/1/\""), "{html}");
    }

    #[test]
    fn asset_gives_the_fingerprinted_url_of_a_static_file_and_names_a_missing_one() {
        let (r, s) = setup("{{ asset('style.css') }} {{ asset('/static/style.css') }}", serde_json::json!({}));
        let html = render(&r, &s).unwrap();
        assert_eq!(html, "/static/style.0123456789abcdef.css /static/style.0123456789abcdef.css");
        let (r, s) = setup("{{ asset('styles.css') }}", serde_json::json!({}));
        let err = render(&r, &s).unwrap_err().to_string();
        assert!(err.contains("asset(\"styles.css\"): static/styles.css does not exist"), "{err}");
    }

    #[test]
    fn a_cached_partial_is_reused_only_for_a_value_that_renders_alike() {
        // Each pair differs only in what minijinja's own hashing of values
        // ignores (safe vs plain text, none vs undefined) or in the printed
        // form of a number: a cache keyed by less would splice the first
        // one's card where the second belongs.
        let page = r#"{{ partial_cached("c.html", doc.text) }}|{{ partial_cached("c.html", doc.text | safe) }}|{{ partial_cached("c.html", none) }}|{{ partial_cached("c.html", doc.nothing) }}|{{ partial_cached("c.html", 1) }}|{{ partial_cached("c.html", 1.0) }}|{{ partial_cached("c.html", {"a": [doc.text]}) }}|{{ partial_cached("c.html", {"a": [doc.text | safe]}) }}|{{ partial_cached("c.html", range(2)) }}|{{ partial_cached("c.html", doc.text) }}"#;
        let card = "{% if item is undefined %}undefined{% elif item is none %}none{% elif item is mapping %}{{ item.a[0] }}{% else %}{{ item }}{% endif %}";
        let sources = vec![("item.html".to_string(), page.to_string()), ("c.html".to_string(), card.to_string())];
        let (r, s) = setup_with(sources, serde_json::json!({"text": "<b>"}));
        let html = render(&r, &s).unwrap();
        assert_eq!(html, "&lt;b&gt;|<b>|none|undefined|1|1.0|&lt;b&gt;|<b>|[0, 1]|&lt;b&gt;");
        // Twice, from what was kept: the same.
        assert_eq!(render(&r, &s).unwrap(), html);
        assert_eq!(render(&r.cold().unwrap(), &s).unwrap(), html);
    }

    #[test]
    fn a_cached_partial_sees_only_its_item_and_names_a_missing_template() {
        let sources = vec![
            ("item.html".to_string(), r#"{{ partial_cached("c.html", doc.title) }}"#.to_string()),
            ("c.html".to_string(), "{{ item }} {{ doc is undefined }} {{ url('/x/') }}".to_string()),
        ];
        let (r, s) = setup_with(sources, serde_json::json!({"title": "t"}));
        assert_eq!(render(&r, &s).unwrap(), "t True /x/");
        let (r, s) = setup(r#"{{ partial_cached("card.html", doc) }}"#, serde_json::json!({}));
        let err = render(&r, &s).unwrap_err().to_string();
        assert!(err.contains("card.html"), "{err}");
    }

    #[test]
    fn runtime_error_names_template_line_page_and_document() {
        let (r, s) = setup("<p>\n{{ doc.title }}\n{{ doc.missing.deeper }}\n</p>", serde_json::json!({"title": "t"}));
        let err = render(&r, &s).unwrap_err().to_string();
        assert!(err.starts_with("template item.html line 3 rendering /items/1/ (document items/1): "), "{err}");
    }

    #[test]
    fn compile_error_names_template_and_line() {
        let config = sesame_config::Config::parse(CONFIG, Path::new("sesame.toml")).unwrap();
        let err = Renderer::from_sources(
            Site::new(config),
            vec![("item.html".into(), "ok\n{% for %}".into())],
            Assets::new(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("template item.html line 2 while compiling: syntax error"), "{err}");
    }

    #[test]
    fn missing_template_is_named() {
        let config = sesame_config::Config::parse(CONFIG, Path::new("sesame.toml")).unwrap();
        let err = Renderer::from_sources(Site::new(config), vec![], Assets::new()).unwrap_err();
        assert_eq!(err.to_string(), "route \"/items/{id}/\" uses template \"item.html\", which is not in templates/");
    }
}
