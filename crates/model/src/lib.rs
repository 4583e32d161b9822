//! The vocabulary every sesame crate shares: documents and their keys, changes,
//! the persisted pieces of site state (sequence numbers, aliases), and the
//! validation of anything user-supplied that ends up in a URL path.
//!
//! Pure data and pure functions only: no I/O, no knowledge of pages or storage.

pub mod deps;
pub mod fields;
pub mod host;
pub mod media;
pub mod on_demand;
pub mod serve;
pub mod slug;
pub mod time;

pub use deps::{Dep, Deps, MalformedDep};
pub use fields::Fields;
pub use media::{Media, MediaFormat};
pub use on_demand::{OnDemandPage, OnDemandReply};
pub use serve::ServeRules;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Flag that puts a document behind a content gate and marks it `noindex`.
pub const FLAG_ADULT: &str = "adult";
/// Flag that keeps a document out of search engines and sitemaps.
pub const FLAG_NOINDEX: &str = "noindex";

/// An account's permanent id. Ownership refers to accounts by it, never by
/// handle: a handle is a name, and names can change hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub i64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies a document: its collection and its id within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocKey {
    /// Collection name as declared in `sesame.toml`.
    pub collection: Arc<str>,
    /// Document id, a valid URL path segment (see [`slug::validate_id`]).
    pub id: Arc<str>,
}

impl DocKey {
    /// Builds a key from its parts.
    pub fn new(collection: impl Into<Arc<str>>, id: impl Into<Arc<str>>) -> Self {
        DocKey { collection: collection.into(), id: id.into() }
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

/// Whether a document is published or taken down by moderation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Published: it has pages and appears in listings.
    Live,
    /// Taken down: its page answers 410 Gone and it appears nowhere.
    Removed,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Removed => "removed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "live" => Some(Status::Live),
            "removed" => Some(Status::Removed),
            _ => None,
        }
    }
}

/// A document: user fields plus the system fields sesame maintains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Collection and id.
    pub key: DocKey,
    /// Owner handle, if the document has one.
    pub owner: Option<Arc<str>>,
    /// When sesame first stored the document (Unix seconds).
    pub created: i64,
    /// When sesame last stored a change to it (Unix seconds).
    pub updated: i64,
    /// Live or taken down.
    pub status: Status,
    /// Sorted, de-duplicated flags such as `adult`.
    pub flags: Vec<String>,
    /// The user fields, as given (held as compact JSON text).
    pub data: Fields,
    /// The media the user fields refer to (by reference, `HASH.EXT`), with
    /// what a page needs to show them: recorded when the document is written,
    /// so that rendering stays a function of the document.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub media: std::collections::BTreeMap<String, Media>,
    /// The custom domain this document's site is served at (a document of
    /// the `[api] sites` collection, whose pages are under `/{id}/`): set by
    /// the platform when a domain attached to the site goes live, never by
    /// a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Arc<str>>,
}

impl Document {
    /// Whether the document carries `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.binary_search_by(|f| f.as_str().cmp(flag)).is_ok()
    }

    /// Sets or clears a flag, keeping the list sorted.
    pub fn set_flag(&mut self, flag: &str, on: bool) {
        match (self.flags.binary_search_by(|f| f.as_str().cmp(flag)), on) {
            (Err(at), true) => self.flags.insert(at, flag.to_string()),
            (Ok(at), false) => {
                self.flags.remove(at);
            }
            _ => {}
        }
    }

    /// Whether the document is live and may be indexed by search engines.
    pub fn indexable(&self) -> bool {
        self.status == Status::Live && !self.has_flag(FLAG_ADULT) && !self.has_flag(FLAG_NOINDEX)
    }
}

/// A change to one document, however it arrives (the API, `import`/`apply`,
/// a rollback): the one vocabulary the site model turns into a next state.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Replace the user fields.
    Put(serde_json::Map<String, serde_json::Value>),
    /// Merge into the user fields (RFC 7396: `null` removes a field).
    Patch(serde_json::Map<String, serde_json::Value>),
    /// Delete the document.
    Delete,
    /// Take it down (moderation).
    Takedown,
    /// Undo a takedown (moderation).
    Restore,
    /// Set or clear a flag (moderation).
    Flag(String, bool),
    /// Return the user fields (and owner) to those of an earlier version,
    /// keeping the document's moderation state.
    Revert(Box<Document>),
    /// Set or clear the custom domain a site is served at (the platform's,
    /// when a domain goes live or stops being the site's).
    Domain(Option<String>),
}

impl Op {
    /// The stored name of the operation.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Put(_) | Op::Patch(_) => "upsert",
            Op::Delete => "delete",
            Op::Takedown => "takedown",
            Op::Restore => "restore",
            Op::Flag(..) => "flag",
            Op::Revert(_) => "rollback",
            Op::Domain(_) => "domain",
        }
    }

    /// Whether only an admin may apply it (the platform's own changes are
    /// no account's at all).
    pub fn is_moderation(&self) -> bool {
        matches!(self, Op::Takedown | Op::Restore | Op::Flag(..) | Op::Domain(_))
    }

    /// Whether it changes the user fields (and so, perhaps, the page paths).
    pub fn changes_content(&self) -> bool {
        matches!(self, Op::Put(_) | Op::Patch(_) | Op::Revert(_))
    }
}

/// RFC 7396 JSON merge patch of `patch` into `target`.
pub fn merge_patch(
    target: &mut serde_json::Map<String, serde_json::Value>,
    patch: serde_json::Map<String, serde_json::Value>,
) {
    for (k, v) in patch {
        match (v, target.get_mut(&k)) {
            (serde_json::Value::Null, _) => {
                target.remove(&k);
            }
            (serde_json::Value::Object(p), Some(serde_json::Value::Object(t))) => merge_patch(t, p),
            (serde_json::Value::Object(p), _) => {
                let mut t = serde_json::Map::new();
                merge_patch(&mut t, p);
                target.insert(k, serde_json::Value::Object(t));
            }
            (v, _) => {
                target.insert(k, v);
            }
        }
    }
}

/// One document's new state in a batch: `None` means it was deleted outright.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The changed document.
    pub key: DocKey,
    /// Its state after the change.
    pub new: Option<Arc<Document>>,
}

/// A persisted sequence number: the permanent position of a document in a
/// `stable` listing group (or in the sitemap), assigned when it first joined.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqRow {
    /// Route name.
    pub route: String,
    /// Group key (empty for an ungrouped listing).
    pub group: String,
    /// The document.
    pub doc: DocKey,
    /// 0-based position; page = seq / page_size + 1.
    pub seq: u64,
}

/// A persisted former path of a document, answered with a 301 to its current path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AliasRow {
    /// Route name of the document route.
    pub route: String,
    /// The former path.
    pub path: String,
    /// The document.
    pub doc: DocKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}}).as_object().cloned().unwrap();
        let patch = serde_json::json!({"a": "z", "c": {"f": null}, "n": [1]}).as_object().cloned().unwrap();
        merge_patch(&mut target, patch);
        assert_eq!(serde_json::Value::Object(target), serde_json::json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
    }
}
