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
    /// Paths every host serves as they are, in host mode too: the shared
    /// static files, content-addressed objects and uploaded images.
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
            shared_prefixes: ["/static/", "/_v/", "/media/"].map(String::from).to_vec(),
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
