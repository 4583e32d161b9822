//! Dependency keys: what a page was built from.
//!
//! The site model names them when it resolves a page; the publisher compares
//! them to decide whether a pointer changed and purges a page's first key as
//! its CDN cache tag; the router serves them as `Cache-Tag` and reads the
//! documents among them to refuse history of taken-down content. Stored and
//! served as text (`doc:sprites/12 list:tags:birds:p2`), built and read only
//! through these types. Every part is a slug, a collection name or a
//! validated id, so neither separator can occur inside one.

use std::fmt;

use crate::DocKey;

/// One thing a page depends on, borrowing its parts (from a document key
/// when a page is resolved, from stored text when keys are read back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dep<'a> {
    /// A document (`doc:COLLECTION/ID`).
    Doc {
        /// Collection.
        collection: &'a str,
        /// Id.
        id: &'a str,
    },
    /// One page of a listing group (`list:ROUTE:GROUP:PAGE`): the route's tag,
    /// the group (empty when ungrouped) and the page's label (`1`, `p7`,
    /// `2024-09p2`, `after`, `feed`).
    Listing {
        /// The route's tag.
        route: &'a str,
        /// The group.
        group: &'a str,
        /// The page within the group.
        page: &'a str,
    },
    /// The sitemap's index or list of site pages (`sitemap`).
    SitemapIndex,
    /// A sitemap chunk (`sitemap:N`).
    SitemapChunk(u32),
}

impl<'a> Dep<'a> {
    /// The key of a document.
    pub fn doc(key: &'a DocKey) -> Dep<'a> {
        Dep::Doc { collection: &key.collection, id: &key.id }
    }

    fn parse(text: &'a str) -> Option<Dep<'a>> {
        if text == "sitemap" {
            return Some(Dep::SitemapIndex);
        }
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "doc" => {
                let (collection, id) = rest.split_once('/')?;
                (!collection.is_empty() && !id.is_empty()).then_some(Dep::Doc { collection, id })
            }
            "list" => {
                let mut parts = rest.splitn(3, ':');
                let (route, group, page) = (parts.next()?, parts.next()?, parts.next()?);
                (!route.is_empty() && !page.is_empty() && !page.contains(':')).then_some(Dep::Listing {
                    route,
                    group,
                    page,
                })
            }
            "sitemap" => rest.parse().ok().map(Dep::SitemapChunk),
            _ => None,
        }
    }
}

impl fmt::Display for Dep<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dep::Doc { collection, id } => write!(f, "doc:{collection}/{id}"),
            Dep::Listing { route, group, page } => write!(f, "list:{route}:{group}:{page}"),
            Dep::SitemapIndex => f.write_str("sitemap"),
            Dep::SitemapChunk(n) => write!(f, "sitemap:{n}"),
        }
    }
}

/// A page's dependency keys, the page's own key first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Deps(Box<str>);

/// Stored dependency keys that are not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed dependency key {0:?}")]
pub struct MalformedDep(pub String);

impl Deps {
    /// The keys, in order; the first names the page itself.
    pub fn new<'k>(keys: impl IntoIterator<Item = Dep<'k>>) -> Deps {
        use fmt::Write;
        let mut text = String::new();
        for key in keys {
            if !text.is_empty() {
                text.push(' ');
            }
            let _ = write!(text, "{key}");
        }
        Deps(text.into())
    }

    /// Reads stored keys, refusing any that is not well formed.
    pub fn parse(text: &str) -> Result<Deps, MalformedDep> {
        match text.split(' ').filter(|k| !k.is_empty()).find(|k| Dep::parse(k).is_none()) {
            Some(bad) => Err(MalformedDep(bad.to_string())),
            None => Ok(Deps(text.into())),
        }
    }

    /// The keys as stored and served (space-separated).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Each key as its text (a CDN cache tag).
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').filter(|k| !k.is_empty())
    }

    /// Each key.
    pub fn iter(&self) -> impl Iterator<Item = Dep<'_>> {
        // Well formed by construction.
        self.tags().filter_map(Dep::parse)
    }

    /// The page's own key: its cache tag for purges.
    pub fn own(&self) -> Option<&str> {
        self.tags().next()
    }

    /// Whether the page is the page of `key` (its first key names it).
    pub fn is_page_of(&self, key: &DocKey) -> bool {
        self.iter().next() == Some(Dep::doc(key))
    }

    /// The documents the page shows.
    pub fn documents(&self) -> impl Iterator<Item = DocKey> + '_ {
        self.iter().filter_map(|d| match d {
            Dep::Doc { collection, id } => Some(DocKey::new(collection, id)),
            _ => None,
        })
    }

    /// Bytes held (for cache accounting).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Deps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_written() {
        let a = DocKey::new("sprites", "12");
        let b = DocKey::new("sites", "ada.b-c~");
        let deps = Deps::new([
            Dep::Listing { route: "tags", group: "birds", page: "p2" },
            Dep::doc(&a),
            Dep::doc(&b),
            Dep::SitemapChunk(3),
            Dep::SitemapIndex,
            Dep::Listing { route: "gallery", group: "", page: "2024-09p2" },
        ]);
        assert_eq!(
            deps.as_str(),
            "list:tags:birds:p2 doc:sprites/12 doc:sites/ada.b-c~ sitemap:3 sitemap list:gallery::2024-09p2"
        );
        assert_eq!(Deps::parse(deps.as_str()), Ok(deps.clone()));
        assert_eq!(deps.documents().collect::<Vec<_>>(), vec![a.clone(), b]);
        assert_eq!(deps.own(), Some("list:tags:birds:p2"));
        assert!(!deps.is_page_of(&a), "a listing showing a document is not its page");
        assert!(Deps::new([Dep::doc(&a)]).is_page_of(&a));
        assert_eq!(deps.iter().nth(5), Some(Dep::Listing { route: "gallery", group: "", page: "2024-09p2" }));
    }

    #[test]
    fn malformed_stored_keys_are_refused() {
        for bad in ["doc:", "doc:sprites", "doc:/1", "page:/x", "sitemap:x", "list:tags:birds", "list::g:1", "x"] {
            assert!(Deps::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Deps::parse(""), Ok(Deps::default()));
    }
}
