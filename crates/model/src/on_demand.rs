//! Pages rendered on request rather than published (a deep page of a `head`
//! listing, a JSON feed): the engine renders them, the router serves them.
//! They live in memory only, in the renderer's bounded cache; nothing is
//! written to storage for them.

use std::sync::Arc;

use bytes::Bytes;

use crate::Deps;

/// A page rendered on request, with its compressed variants.
#[derive(Debug)]
pub struct OnDemandPage {
    /// Content hash of the identity bytes (the `ETag`).
    pub hash: String,
    /// `Content-Type`.
    pub content_type: String,
    /// Dependency keys.
    pub deps: Deps,
    /// When it was rendered (Unix seconds).
    pub modified: i64,
    /// The bytes.
    pub identity: Bytes,
    /// Gzip variant, when worth having.
    pub gzip: Option<Bytes>,
    /// Brotli variant, when worth having.
    pub brotli: Option<Bytes>,
}

/// What a renderer of pages on request answers.
#[derive(Debug, Clone)]
pub enum OnDemandReply {
    /// The page.
    Page(Arc<OnDemandPage>),
    /// 301 to the canonical URL of the same page (a cursor that no longer
    /// names an item becomes the cursor of the item before it).
    Redirect(String),
}

/// The cursor of a request's `after` query parameter, as sent (still
/// percent-encoded): what asks for a deep page of a `head` listing.
pub fn after_cursor(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("after="))
}
