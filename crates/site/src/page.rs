//! What a page is (its identity) and what it holds once resolved against the
//! current state: the data a renderer needs, and nothing about how it looks.

use std::sync::Arc;

use serde::Serialize;
use sesame_config::FeedFormat;
use sesame_model::{Deps, Document};

use crate::order::Bucket;
use crate::site::RouteIx;

/// The identity of an output page, independent of its content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageId {
    /// A path in the documents' namespace: a document page, a 410 for a taken
    /// down document, or a 301 from a former path. Which one is decided when
    /// resolving, from all documents that claim the path.
    DocPath(Arc<str>),
    /// A page of a listing group.
    Listing {
        /// The listing route.
        route: RouteIx,
        /// The group key ("" for an ungrouped listing).
        group: Arc<str>,
        /// Which page.
        page: ListingPage,
    },
    /// A feed of the document whose page is at this path (`PATHindex.xml`,
    /// `PATHindex.json`), when its route has feeds.
    DocFeed(Arc<str>, FeedFormat),
    /// A `page` or `robots` route.
    Static(RouteIx),
    /// `/sitemap.xml`, the sitemap index.
    SitemapIndex,
    /// `/sitemaps/pages.xml`: the site's non-document pages.
    SitemapPages,
    /// `/sitemaps/N.xml` (1-based).
    SitemapChunk(u32),
}

/// Which page of a listing group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListingPage {
    /// The group's base path: page 1 (`offset`, `head`), the landing that shows
    /// the newest page (`stable`), or the index of months (`date`).
    First,
    /// `page/N/`: page N ≥ 2 of `offset`, page N ≥ 1 of `stable`.
    Number(u32),
    /// A month of a `date` listing: page 0 is its landing (the newest page),
    /// pages N ≥ 1 are `page/N/` inside it.
    Bucket(Bucket, u32),
    /// A feed of the group's newest documents (`index.xml`, `index.json`).
    Feed(FeedFormat),
}

impl ListingPage {
    /// The page's path below the group base.
    pub fn suffix(self) -> String {
        match self {
            ListingPage::First => String::new(),
            ListingPage::Number(n) => format!("page/{n}/"),
            ListingPage::Bucket(b, 0) => b.path(),
            ListingPage::Bucket(b, n) => format!("{}page/{n}/", b.path()),
            ListingPage::Feed(f) => f.file().into(),
        }
    }

    /// A short label for cache tags, e.g. `1`, `p7`, `2024-09`, `2024-09p2`.
    pub fn tag(self) -> String {
        match self {
            ListingPage::First => "1".into(),
            ListingPage::Number(n) => format!("p{n}"),
            ListingPage::Bucket(b, 0) => b.key(),
            ListingPage::Bucket(b, n) => format!("{}p{n}", b.key()),
            ListingPage::Feed(f) => f.tag().into(),
        }
    }
}

/// A page resolved against the current state.
#[derive(Debug)]
pub struct Resolved<'a> {
    /// The URL path.
    pub path: String,
    /// What the page holds.
    pub body: Body<'a>,
    /// Dependency keys: what the page was built from. They double as CDN cache tags.
    pub deps: Deps,
}

/// A listed document with the path of its own page.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// The document.
    pub doc: &'a Arc<Document>,
    /// Its page path, if its collection has a document route.
    pub path: Option<&'a str>,
}

/// The content of a resolved page.
// Bodies are short-lived (resolved, rendered, dropped), never stored in bulk,
// so the size of the listing variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Body<'a> {
    /// A document page.
    Document {
        /// The document route.
        route: RouteIx,
        /// The document.
        doc: &'a Arc<Document>,
    },
    /// A listing page, or the month index of a `date` listing.
    Listing {
        /// The listing route.
        route: RouteIx,
        /// The group key ("" when ungrouped).
        group: Arc<str>,
        /// Documents on the page, in display order.
        items: Vec<Item<'a>>,
        /// Navigation.
        pagination: Pagination,
        /// Month links (only on a `date` listing's index page).
        buckets: Vec<Link>,
    },
    /// A `page` or `robots` route.
    Static(RouteIx),
    /// The sitemap index: paths of the sitemap files.
    SitemapIndex(Vec<String>),
    /// A sitemap file: (absolute URL, last modification) of each page.
    SitemapUrls(Vec<(String, Option<i64>)>),
    /// A feed of a listing group's newest documents.
    Syndication {
        /// The listing route.
        route: RouteIx,
        /// The group key ("" when ungrouped).
        group: Arc<str>,
        /// Its format.
        format: FeedFormat,
        /// The newest documents, newest first.
        items: Vec<Item<'a>>,
    },
    /// A feed of a document's entries (a micro-site's sections).
    DocumentFeed {
        /// The document route.
        route: RouteIx,
        /// The document.
        doc: &'a Arc<Document>,
        /// The path of its page.
        page: Arc<str>,
        /// Its format.
        format: FeedFormat,
    },
    /// A page of the JSON feed of a `head` listing.
    Feed {
        /// The listing route.
        route: RouteIx,
        /// Documents, in display order.
        items: Vec<Item<'a>>,
        /// URL of the next page of the feed, if any.
        next: Option<String>,
    },
    /// A permanent redirect to another path (a document's former path).
    Redirect(String),
    /// A taken-down document: 410 Gone.
    Gone,
}

/// A navigation link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Text to show.
    pub label: String,
    /// Root-relative URL.
    pub href: String,
}

/// Navigation of a listing page, the same shape for every scheme so that one
/// template partial can draw them all. Absent links are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pagination {
    /// `offset`, `stable`, `date` or `head`.
    pub scheme: &'static str,
    /// Heading for the page, e.g. `Page 3 of 9`, `Newest`, `September 2024`.
    pub label: String,
    /// This page's number, when it has one.
    pub page: Option<u32>,
    /// Total pages (only `offset` knows it without hard-coding a moving maximum).
    pub total: Option<u32>,
    /// The newest page (the listing's landing).
    pub newest: Option<Link>,
    /// One page towards the newest.
    pub newer: Option<Link>,
    /// One page towards the oldest.
    pub older: Option<Link>,
    /// The oldest page.
    pub oldest: Option<Link>,
    /// Further links: logarithmic jumps back (`stable`, `date`) or a window of
    /// page numbers (`offset`).
    pub jumps: Vec<Link>,
    /// Up one level (a month page links to the month index).
    pub up: Option<Link>,
}
