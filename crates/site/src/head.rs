//! The `head` scheme beyond its first page: keyset cursors, pages after a
//! cursor and the JSON feed. These pages are not pre-rendered; the router asks
//! for them on request and caches them.

use std::cmp::Reverse;
use std::ops::Bound;
use std::sync::Arc;

use sesame_config::{Order, Placeholder, Scheme};
use sesame_model::slug::validate_id;

use crate::nav;
use crate::order::{IdOrd, MemberKey, SortKey};
use crate::page::{Body, Resolved};
use crate::site::RouteIx;
use crate::state::SiteState;

/// Feed file name below a `head` listing's base path.
pub const FEED: &str = "feed.json";

/// The cursor after a member: its sort key and id, so that the next page can
/// be found even when that member goes away. `DATE!ID` (`n` for no date) for
/// date orders, `HEXTITLE!ID` for title order; ids never contain `!`.
pub(crate) fn cursor_of(key: &MemberKey) -> String {
    match &key.0 {
        SortKey::Newest(Reverse((date, _))) | SortKey::Oldest((date, _)) => {
            format!("{}!{}", date.map_or_else(|| "n".to_string(), |d| d.to_string()), key.1)
        }
        SortKey::Title((title, _)) => {
            let hex: String = title.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{hex}!{}", key.1)
        }
    }
}

impl SiteState {
    /// Decodes a cursor of listing `ix`; `None` when it is malformed.
    fn parse_cursor(&self, ix: RouteIx, cursor: &str) -> Option<MemberKey> {
        let (head, id) = cursor.rsplit_once('!')?;
        validate_id(id).ok()?;
        let id: Arc<str> = Arc::from(id);
        let ord = IdOrd::new(&id);
        let date = || -> Option<Option<i64>> { if head == "n" { Some(None) } else { head.parse().ok().map(Some) } };
        let key = match self.site.listing_route(ix).order {
            Order::Newest => SortKey::Newest(Reverse((date()?, ord))),
            Order::Oldest => SortKey::Oldest((date()?, ord)),
            Order::Title => {
                if head.len() % 2 != 0 || head.len() > 4096 {
                    return None;
                }
                let bytes: Option<Vec<u8>> =
                    (0..head.len()).step_by(2).map(|i| u8::from_str_radix(head.get(i..i + 2)?, 16).ok()).collect();
                SortKey::Title((String::from_utf8(bytes?).ok()?.into(), ord))
            }
        };
        Some((key, id))
    }

    /// Up to a page of member ids of a `head` group, after `after` (from the
    /// top when `None`), and the cursor of the next page if more follow.
    /// `None` when the group does not exist.
    pub(crate) fn head_slice(
        &self,
        ix: RouteIx,
        g: &str,
        after: Option<&MemberKey>,
    ) -> Option<(Vec<Arc<str>>, Option<String>)> {
        let route = self.site.listing_route(ix);
        let size = route.page_size as usize;
        let Some(group) = self.listings[&ix].groups.get(g) else {
            return (route.group_by.is_none() && g.is_empty()).then(|| (Vec::new(), None));
        };
        let from = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut taken: Vec<&MemberKey> = group.members.range((from, Bound::Unbounded)).take(size + 1).collect();
        let more = taken.len() > size;
        taken.truncate(size);
        let next = if more { taken.last().map(|k| cursor_of(k)) } else { None };
        Some((taken.into_iter().map(|(_, id)| id.clone()).collect(), next))
    }

    /// Where `cursor` stands in a `head` group. `Some(Ok(()))`: it is the
    /// canonical cursor of a member, so it names a real page. `Some(Err(c))`:
    /// it does not (the member left, the cursor was made up, or spelled
    /// differently): `c` is the canonical cursor of the nearest member before
    /// its position, whose page shows the same items, or `None` when no member
    /// comes before it (the first page). `None`: malformed, or no such group.
    ///
    /// Serving only canonical cursors bounds the pages a listing has to its
    /// members, whatever cursors clients send.
    pub fn locate_cursor(&self, ix: RouteIx, g: &str, cursor: &str) -> Option<Result<(), Option<String>>> {
        let key = self.parse_cursor(ix, cursor)?;
        let group = self.listings[&ix].groups.get(g)?;
        if group.members.contains(&key) {
            let canonical = cursor_of(&key);
            return Some(if canonical == cursor { Ok(()) } else { Err(Some(canonical)) });
        }
        Some(Err(group.members.range(..key).next_back().map(cursor_of)))
    }

    /// The ids a `head` page after `cursor` (or the first page) shows and the
    /// cursor of the page after it; `None` for a malformed cursor or a missing
    /// group.
    pub fn head_ids(&self, ix: RouteIx, g: &str, cursor: Option<&str>) -> Option<(Vec<Arc<str>>, Option<String>)> {
        let after = match cursor {
            Some(c) => Some(self.parse_cursor(ix, c)?),
            None => None,
        };
        self.head_slice(ix, g, after.as_ref())
    }

    /// The `head` listing group whose first page (or feed) is at `path`, with
    /// whether `path` is the feed.
    pub fn head_listing(&self, path: &str) -> Option<(RouteIx, Arc<str>, bool)> {
        let (base, feed) = match path.strip_suffix(FEED) {
            Some(base) => (base, true),
            None => (path, false),
        };
        for &ix in self.site.listing_routes() {
            let route = self.site.listing_route(ix);
            if route.scheme != Scheme::Head {
                continue;
            }
            if let Some(values) = route.path.capture(base) {
                let group = values.iter().find(|(ph, _)| *ph == Placeholder::Group).map_or("", |(_, v)| *v);
                let group: Arc<str> =
                    self.listings[&ix].groups.get_key_value(group).map_or_else(|| Arc::from(group), |(k, _)| k.clone());
                return Some((ix, group, feed));
            }
        }
        None
    }

    /// The page of a `head` listing after `cursor` (rendered on request).
    /// `None` for a malformed cursor or a missing group.
    pub fn resolve_after(&self, ix: RouteIx, g: &Arc<str>, cursor: &str) -> Option<Resolved<'_>> {
        let after = self.parse_cursor(ix, cursor)?;
        let (ids, next) = self.head_slice(ix, g, Some(&after))?;
        let base = self.site.group_base(ix, g);
        let collection = &self.listings[&ix].collection;
        let items = self.items(collection, ids.iter());
        let deps = self.listing_deps(ix, g, "after", &items);
        let body = Body::Listing {
            route: ix,
            group: g.clone(),
            items,
            pagination: nav::head(&base, false, next),
            buckets: Vec::new(),
        };
        Some(Resolved { path: base, body, deps })
    }

    /// A page of a `head` listing's JSON feed: from the top, or after `cursor`.
    pub fn resolve_feed(&self, ix: RouteIx, g: &Arc<str>, cursor: Option<&str>) -> Option<Resolved<'_>> {
        let after = match cursor {
            Some(c) => Some(self.parse_cursor(ix, c)?),
            None => None,
        };
        let (ids, next) = self.head_slice(ix, g, after.as_ref())?;
        let path = format!("{}{FEED}", self.site.group_base(ix, g));
        let collection = &self.listings[&ix].collection;
        let items = self.items(collection, ids.iter());
        let deps = self.listing_deps(ix, g, "feed", &items);
        let next = next.map(|c| format!("{path}?after={c}"));
        Some(Resolved { path, body: Body::Feed { route: ix, items, next }, deps })
    }
}
