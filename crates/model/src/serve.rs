//! How the published site is answered: the settings every server of it
//! shares, the router and the edge Worker alike. The engine derives them
//! from `sesame.toml`, the router answers with them, and the manifest root
//! hands the same value to the Worker, so neither copies a rule by hand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::media::{MediaFormat, VARIANT_WIDTHS};

/// `Cache-Control` of content-addressed URLs (`/_v/`, `/media/`, `?v=`):
/// they never change, so they are cached for a year.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The serving settings of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeRules {
    /// `Cache-Control` of pages at their plain path.
    pub cache_control: String,
    /// `Cache-Control` of content-addressed URLs ([`IMMUTABLE`]).
    pub immutable: String,
    /// Path of the page served with 404s.
    pub not_found: String,
    /// Path of the page served with 410s (falls back to the 404 page).
    pub gone: String,
    /// `Content-Security-Policy` of HTML responses.
    pub csp: Option<String>,
    /// Host mode: `HANDLE.SUFFIX/PATH` serves `/HANDLE/PATH`.
    pub host_suffix: Option<String>,
    /// Serve `PATH?v=GENERATION` from history.
    pub versioned_urls: bool,
    /// Paths every host serves as they are, in host mode and at custom
    /// domains too: the shared static files, content-addressed objects,
    /// uploaded images, and `robots.txt`, whose `Sitemap:` line names the
    /// platform's sitemap, which lists a site's pages at its own host (the
    /// sitemaps protocol's cross-host submission).
    pub shared_prefixes: Vec<String>,
    /// Longest `Cache-Tag` value sent (Cloudflare accepts 16 KB in total).
    pub max_cache_tag: usize,
    /// Widths of the resized copies of uploaded images (`HASH-WIDTH.webp`).
    pub media_widths: Vec<u32>,
    /// The media type of an uploaded image by its extension.
    pub media_types: BTreeMap<String, String>,
    /// The largest text object whose compressed variants are looked for in
    /// storage when none is recorded yet (bytes).
    pub variants_up_to: u64,
    /// Tags of the `head` listing routes: the first page of one asked for
    /// with an `after` query stands for a page rendered on request, which a
    /// server that cannot render it answers 404 (never with the first page).
    pub head_routes: Vec<String>,
}

impl ServeRules {
    /// The rules of a site whose pages are cached `max_age` seconds and
    /// served stale while revalidating for `stale_while_revalidate` more.
    pub fn new(max_age: u32, stale_while_revalidate: u32) -> ServeRules {
        ServeRules {
            cache_control: format!("public, max-age={max_age}, stale-while-revalidate={stale_while_revalidate}"),
            immutable: IMMUTABLE.into(),
            not_found: "/404.html".into(),
            gone: "/410.html".into(),
            csp: None,
            host_suffix: None,
            versioned_urls: true,
            shared_prefixes: ["/static/", "/_v/", "/media/", "/robots.txt"].map(String::from).to_vec(),
            max_cache_tag: 8 * 1024,
            media_widths: VARIANT_WIDTHS.to_vec(),
            media_types: MediaFormat::ALL.iter().map(|f| (f.ext().to_string(), f.content_type().to_string())).collect(),
            variants_up_to: 1024 * 1024,
            head_routes: Vec::new(),
        }
    }
}

impl Default for ServeRules {
    fn default() -> Self {
        ServeRules::new(60, 600)
    }
}

/// Hex digits of its content hash a fingerprinted file name carries.
pub const FINGERPRINT_HEX: usize = 16;

/// The fingerprinted path of a file with content hash `hash` (hex): its name
/// gains the hash's first [`FINGERPRINT_HEX`] digits before its extension
/// (`/static/style.css` → `/static/style.0123456789abcdef.css`), so the URL
/// changes whenever the content does and can be cached for good.
pub fn fingerprinted(path: &str, hash: &str) -> String {
    let fp = &hash[..FINGERPRINT_HEX.min(hash.len())];
    let name_at = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_at..].rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => format!("{}.{fp}{}", &path[..name_at + dot], &path[name_at + dot..]),
        None => format!("{path}.{fp}"),
    }
}

/// The path a fingerprinted one was made from, when `path` names the
/// first digits of `hash`, the content it serves (then it never changes and
/// is answered as immutable, by the router and the Worker alike).
pub fn unfingerprinted(path: &str, hash: &str) -> Option<String> {
    let fp = hash.get(..FINGERPRINT_HEX)?;
    let name_at = path.rfind('/').map_or(0, |i| i + 1);
    let name = &path[name_at..];
    let mark = format!(".{fp}");
    let at = name.rfind(&mark).filter(|&at| at > 0)?;
    let rest = &name[at + mark.len()..];
    // The fingerprint ends the name or comes right before its extension.
    if !(rest.is_empty() || (rest.starts_with('.') && !rest[1..].contains('.') && rest.len() > 1)) {
        return None;
    }
    Some(format!("{}{}{rest}", &path[..name_at], &name[..at]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_fingerprint_goes_before_the_extension_and_comes_off_again() {
        for (plain, printed) in [
            ("/static/style.css", "/static/style.0123456789abcdef.css"),
            ("/static/app.min.js", "/static/app.min.0123456789abcdef.js"),
            ("/static/LICENSE", "/static/LICENSE.0123456789abcdef"),
            ("/static/img.v2/logo.png", "/static/img.v2/logo.0123456789abcdef.png"),
        ] {
            assert_eq!(fingerprinted(plain, HASH), printed);
            assert_eq!(unfingerprinted(printed, HASH).as_deref(), Some(plain), "{printed}");
        }
        let other = "f".repeat(64);
        for path in [
            "/static/style.css",
            "/static/style.0123456789abcdef.css",
            "/static/style.0123456789abcdee.css",
            "/static/.0123456789abcdef.css",
            "/static/style.0123456789abcdef.min.css",
        ] {
            assert_eq!(unfingerprinted(path, &other), None, "{path} with another hash");
            if path != "/static/style.0123456789abcdef.css" {
                assert_eq!(unfingerprinted(path, HASH), None, "{path}");
            }
        }
        assert_eq!(unfingerprinted("/static/style.css", "short"), None);
    }
}
