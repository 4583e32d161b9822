//! Feeds: of a listing group's newest documents, and of one document's
//! entries (a micro-site's sections), in Atom (RFC 4287) and JSON Feed 1.1.
//! Built from the documents alone (no template), so a feed is a function of
//! what it lists, as every page is: it changes exactly when one of its
//! documents does or the newest ones are others.

use std::fmt::Write;

use sesame_config::FeedFormat;
use sesame_model::{Document, time};
use sesame_site::{Item, RouteIx, Site};

use crate::helpers::one_line;
use crate::xml::escape;

/// Longest entry summary: what feed readers show under a title.
const SUMMARY_MAX: usize = 300;
/// Most entries a document's feed shows.
const DOCUMENT_ENTRIES_MAX: usize = 100;

/// What a feed says of itself.
struct Meta {
    title: String,
    /// The feed's permanent id (Atom): its page under `base_url`, kept
    /// when the site moves to a custom domain, so readers see no entry twice.
    id: String,
    home: String,
    self_url: String,
    /// Its newest entry's last change: a function of what it lists, never of
    /// when it was rendered.
    updated: i64,
}

/// What a feed says of one document.
struct Entry {
    id: String,
    url: Option<String>,
    title: String,
    summary: String,
    updated: i64,
    published: Option<i64>,
    author: Option<String>,
    tags: Vec<String>,
}

fn entry(site: &Site, base: &str, item: &Item<'_>) -> Entry {
    let doc = item.doc;
    let roles = site.collection(&doc.key.collection);
    let url = item.path.map(|p| site.doc_url(doc, p));
    let id = item.path.map_or_else(|| format!("{base}#{}/{}", doc.key.collection, doc.key.id), |p| site.absolute(p));
    let title = match &*site.title(doc) {
        "" => "Untitled".to_string(),
        t => one_line(t, false, usize::MAX),
    };
    // The first markdown field's words, if the collection has one.
    let summary = roles
        .markdown
        .iter()
        .filter(|f| !f.contains('.'))
        .find_map(|f| doc.data.get_str(f))
        .map(|text| one_line(&text, true, SUMMARY_MAX))
        .unwrap_or_default();
    let tags = match roles.tags.as_deref().and_then(|f| doc.data.get(f)) {
        Some(serde_json::Value::Array(values)) => {
            values.iter().filter_map(|v| v.as_str()).map(|t| one_line(t, false, usize::MAX)).collect()
        }
        _ => Vec::new(),
    };
    Entry {
        id,
        url,
        title,
        summary,
        updated: doc.updated,
        published: roles.date.as_ref().and_then(|_| site.sort_date(doc)),
        author: doc.owner.as_deref().map(String::from),
        tags,
    }
}

/// The feed of a listing group, in `format`: its bytes and media type.
pub(crate) fn listing(
    site: &Site,
    route: RouteIx,
    group: &str,
    format: FeedFormat,
    items: &[Item<'_>],
) -> (Vec<u8>, &'static str) {
    let base_path = site.group_base(route, group);
    let home = site.absolute(&base_path);
    let name = site.route_name(route);
    let title = match group {
        "" => format!("{}: {name}", site.config.title),
        g => format!("{}: {name} {g}", site.config.title),
    };
    let entries: Vec<Entry> = items.iter().map(|i| entry(site, &home, i)).collect();
    let updated = entries.iter().map(|e| e.updated).max().unwrap_or(0);
    let self_url = site.absolute(&format!("{base_path}{}", format.file()));
    let meta = Meta { title, id: home.clone(), self_url, home, updated };
    write(site, format, &meta, &entries)
}

/// The feed of one document's entries (the elements of its route's
/// `feed_entries` list), in `format`.
pub(crate) fn document(
    site: &Site,
    route: RouteIx,
    doc: &Document,
    page: &str,
    format: FeedFormat,
) -> (Vec<u8>, &'static str) {
    let (id, home) = (site.absolute(page), site.doc_url(doc, page));
    let roles = site.collection(&doc.key.collection);
    let field = site.document_route(route).feed_entries.as_deref().unwrap_or_default();
    // The markdown fields of the list's elements (`sections.body`).
    let bodies: Vec<&str> = roles.markdown.iter().filter_map(|m| m.strip_prefix(field)?.strip_prefix('.')).collect();
    let name = match &*site.title(doc) {
        "" => doc.owner.as_deref().unwrap_or(&doc.key.id).to_string(),
        t => one_line(t, false, usize::MAX),
    };
    let elements = match doc.data.get(field) {
        Some(serde_json::Value::Array(elements)) => elements,
        _ => Vec::new(),
    };
    let entries: Vec<Entry> = elements
        .iter()
        .take(DOCUMENT_ENTRIES_MAX)
        .enumerate()
        .map(|(n, element)| {
            let text = |key: &str| element.get(key).and_then(|v| v.as_str()).filter(|t| !t.trim().is_empty());
            let title = match element {
                serde_json::Value::String(t) => Some(t.as_str()),
                _ => text("heading").or_else(|| text("title")).or_else(|| text("name")),
            };
            let summary = bodies.iter().find_map(|b| text(b)).map(|t| one_line(t, true, SUMMARY_MAX));
            Entry {
                id: format!("{id}#{}", n + 1),
                url: Some(home.clone()),
                title: title.map_or_else(|| format!("{name}, part {}", n + 1), |t| one_line(t, false, usize::MAX)),
                summary: summary.unwrap_or_default(),
                updated: doc.updated,
                published: None,
                author: doc.owner.as_deref().map(String::from),
                tags: Vec::new(),
            }
        })
        .collect();
    let self_url = format!("{home}{}", format.file());
    let meta = Meta { title: name, id, self_url, home, updated: doc.updated };
    write(site, format, &meta, &entries)
}

fn write(site: &Site, format: FeedFormat, meta: &Meta, entries: &[Entry]) -> (Vec<u8>, &'static str) {
    let bytes = match format {
        FeedFormat::Atom => atom(site, meta, entries).into_bytes(),
        FeedFormat::Json => json_feed(site, meta, entries),
    };
    (bytes, format.content_type())
}

/// An element with escaped text.
fn element(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>");
    escape(text, out);
    let _ = writeln!(out, "</{name}>");
}

fn atom(site: &Site, meta: &Meta, entries: &[Entry]) -> String {
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    element(&mut out, "title", &meta.title);
    if !site.config.description.is_empty() {
        element(&mut out, "subtitle", &site.config.description);
    }
    element(&mut out, "id", &meta.id);
    let link = |out: &mut String, rel: &str, kind: &str, href: &str| {
        let _ = write!(out, "<link rel=\"{rel}\" type=\"{kind}\" href=\"");
        escape(href, out);
        out.push_str("\"/>\n");
    };
    link(&mut out, "self", FeedFormat::Atom.content_type(), &meta.self_url);
    link(&mut out, "alternate", "text/html", &meta.home);
    element(&mut out, "updated", &time::rfc3339(meta.updated));
    // Atom wants an author for every entry: the site, unless an entry has its own.
    out.push_str("<author>");
    element(&mut out, "name", &site.config.title);
    out.push_str("</author>\n");
    for e in entries {
        out.push_str("<entry>\n");
        element(&mut out, "title", &e.title);
        element(&mut out, "id", &e.id);
        if let Some(url) = &e.url {
            link(&mut out, "alternate", "text/html", url);
        }
        element(&mut out, "updated", &time::rfc3339(e.updated));
        if let Some(p) = e.published {
            element(&mut out, "published", &time::rfc3339(p));
        }
        if let Some(a) = &e.author {
            out.push_str("<author>");
            element(&mut out, "name", a);
            out.push_str("</author>\n");
        }
        for t in &e.tags {
            out.push_str("<category term=\"");
            escape(t, &mut out);
            out.push_str("\"/>\n");
        }
        if !e.summary.is_empty() {
            element(&mut out, "summary", &e.summary);
        }
        out.push_str("</entry>\n");
    }
    out.push_str("</feed>\n");
    out
}

fn json_feed(site: &Site, meta: &Meta, entries: &[Entry]) -> Vec<u8> {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let mut item =
                serde_json::json!({ "id": e.id, "title": e.title, "date_modified": time::rfc3339(e.updated) });
            let fields = item.as_object_mut().expect("an object");
            if let Some(url) = &e.url {
                fields.insert("url".into(), url.as_str().into());
            }
            if !e.summary.is_empty() {
                fields.insert("content_text".into(), e.summary.as_str().into());
                fields.insert("summary".into(), e.summary.as_str().into());
            } else {
                fields.insert("content_text".into(), e.title.as_str().into());
            }
            if let Some(p) = e.published {
                fields.insert("date_published".into(), time::rfc3339(p).into());
            }
            if let Some(a) = &e.author {
                fields.insert("authors".into(), serde_json::json!([{ "name": a }]));
            }
            if !e.tags.is_empty() {
                fields.insert("tags".into(), e.tags.clone().into());
            }
            item
        })
        .collect();
    let mut feed = serde_json::json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": meta.title,
        "home_page_url": meta.home,
        "feed_url": meta.self_url,
        "items": items,
    });
    if !site.config.description.is_empty() {
        feed["description"] = site.config.description.as_str().into();
    }
    let mut bytes = serde_json::to_vec_pretty(&feed).expect("JSON of strings and numbers");
    bytes.push(b'\n');
    bytes
}
