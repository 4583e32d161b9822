//! Sitemaps (sitemaps.org protocol) and the default `robots.txt`.

use std::fmt::Write;

use sesame_model::time;
use sesame_site::Site;

/// Escapes text for XML content or a quoted attribute, dropping the
/// control characters XML 1.0 does not allow (documents hold none; this is
/// the last line).
pub(crate) fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
}

/// A sitemap index listing the given sitemap files. It carries no `lastmod`, so
/// it only changes when a file is added.
pub(crate) fn sitemap_index(site: &Site, files: &[String]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for f in files {
        out.push_str("<sitemap><loc>");
        escape(&site.absolute(f), &mut out);
        out.push_str("</loc></sitemap>\n");
    }
    out.push_str("</sitemapindex>\n");
    out
}

/// A sitemap file with one `<url>` per absolute URL.
pub(crate) fn urlset(urls: &[(String, Option<i64>)]) -> String {
    let mut out = String::with_capacity(64 + urls.len() * 96);
    out.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for (url, lastmod) in urls {
        out.push_str("<url><loc>");
        escape(url, &mut out);
        out.push_str("</loc>");
        if let Some(t) = lastmod {
            let _ = write!(out, "<lastmod>{}</lastmod>", time::rfc3339(*t));
        }
        out.push_str("</url>\n");
    }
    out.push_str("</urlset>\n");
    out
}

/// `robots.txt` allowing everything and naming the sitemap, if there is one.
pub(crate) fn default_robots(site: &Site) -> String {
    let mut out = String::from("User-agent: *\nAllow: /\n");
    if site.sitemap_route().is_some() {
        let _ = write!(out, "\nSitemap: {}\n", site.absolute("/sitemap.xml"));
    }
    out
}
