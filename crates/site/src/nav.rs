//! Navigation links per scheme.
//!
//! The rule that keeps `stable` and `date` pages frozen: a page links only to
//! pages that exist for as long as it does: older pages (they never go away),
//! the landing (a fixed URL) and the next newer page once it exists. Nothing on
//! a numbered page mentions the current maximum, so a later add leaves it
//! byte-identical. `offset` pages show the total, which is why an `offset`
//! insertion re-renders from the insertion point on.

use crate::page::{Link, Pagination};

fn link(label: impl Into<String>, href: impl Into<String>) -> Option<Link> {
    Some(Link { label: label.into(), href: href.into() })
}

/// Href of offset page `n` of a group whose first page is `base`.
fn offset_href(base: &str, n: u32) -> String {
    if n <= 1 { base.to_string() } else { format!("{base}page/{n}/") }
}

/// Navigation of page `n` (1-based) of `total` in an `offset` listing.
pub(crate) fn offset(base: &str, n: u32, total: u32) -> Pagination {
    let lo = n.saturating_sub(2).max(1);
    let hi = (n + 2).min(total);
    Pagination {
        scheme: "offset",
        label: format!("Page {n} of {total}"),
        page: Some(n),
        total: Some(total),
        newest: if n > 1 { link("Newest", base) } else { None },
        newer: if n > 1 { link("Newer", offset_href(base, n - 1)) } else { None },
        older: if n < total { link("Older", offset_href(base, n + 1)) } else { None },
        oldest: if n < total { link("Oldest", offset_href(base, total)) } else { None },
        jumps: (lo..=hi).map(|k| Link { label: k.to_string(), href: offset_href(base, k) }).collect(),
        up: None,
    }
}

/// Navigation of a lane (a `stable` group or one month of a `date` group):
/// `landing` is the lane's base path (showing its newest page), `page` the
/// numbered page shown or `None` on the landing, `top` the lane's page count.
pub(crate) fn lane(scheme: &'static str, landing: &str, page: Option<u32>, top: u32) -> Pagination {
    let href = |k: u32| format!("{landing}page/{k}/");
    let n = page.unwrap_or(top);
    let mut jumps = Vec::new();
    let mut step = 10u32;
    while n > step.saturating_add(1) {
        jumps.push(Link { label: format!("−{step}"), href: href(n - step) });
        match step.checked_mul(10) {
            Some(s) => step = s,
            None => break,
        }
    }
    Pagination {
        scheme,
        label: match page {
            Some(k) => format!("Page {k}"),
            None => "Newest".into(),
        },
        page: (n > 0).then_some(n),
        total: None,
        newest: page.and_then(|_| link("Newest", landing)),
        newer: page.filter(|&k| k < top).and_then(|k| link("Newer", href(k + 1))),
        older: if n > 1 { link("Older", href(n - 1)) } else { None },
        oldest: if n > 1 { link("Oldest", href(1)) } else { None },
        jumps,
        up: None,
    }
}

/// Navigation of a `head` listing page: the first (pre-rendered) one, or a
/// page after a cursor (rendered on request). `next` is the cursor of the
/// following page, if there is one.
pub(crate) fn head(base: &str, first: bool, next: Option<String>) -> Pagination {
    Pagination {
        scheme: "head",
        label: if first { "Newest".into() } else { "Older".into() },
        page: first.then_some(1),
        newest: if first { None } else { link("Newest", base) },
        older: next.and_then(|cursor| link("Older", format!("{base}?after={cursor}"))),
        ..Pagination::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_pages_never_mention_the_top_unless_newer_exists() {
        let frozen = lane("stable", "/s/", Some(3), 4);
        assert_eq!(frozen, lane("stable", "/s/", Some(3), 400), "page 3 is the same whatever the top");
        let top = lane("stable", "/s/", Some(4), 4);
        assert_eq!(top.newer, None);
        assert_eq!(frozen.newer.unwrap().href, "/s/page/4/");
    }

    #[test]
    fn lane_jumps_are_logarithmic_and_backwards() {
        let nav = lane("stable", "/s/", None, 4167);
        let labels: Vec<_> = nav.jumps.iter().map(|l| (l.label.as_str(), l.href.as_str())).collect();
        assert_eq!(labels, vec![("−10", "/s/page/4157/"), ("−100", "/s/page/4067/"), ("−1000", "/s/page/3167/")]);
        assert_eq!(nav.older.unwrap().href, "/s/page/4166/");
        assert_eq!(nav.newest, None);
    }

    #[test]
    fn offset_window() {
        let nav = offset("/t/x/", 1, 3);
        assert_eq!(
            nav.jumps.iter().map(|l| l.href.as_str()).collect::<Vec<_>>(),
            ["/t/x/", "/t/x/page/2/", "/t/x/page/3/"]
        );
        assert_eq!(nav.older.unwrap().href, "/t/x/page/2/");
        assert_eq!(offset("/t/x/", 2, 3).newer.unwrap().href, "/t/x/");
    }
}
