//! Order keys of listings and month buckets.

use std::cmp::Reverse;
use std::fmt;
use std::sync::Arc;

/// A document id ordered numerically when it is a number, textually otherwise
/// (numbers first), so that `9` sorts before `10`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdOrd {
    /// An id made only of digits (up to 19 of them).
    Num(u64),
    /// Any other id.
    Text(Arc<str>),
}

impl IdOrd {
    /// Classifies an id.
    pub fn new(id: &Arc<str>) -> IdOrd {
        match id.parse::<u64>() {
            Ok(n) if id.bytes().all(|b| b.is_ascii_digit()) => IdOrd::Num(n),
            _ => IdOrd::Text(id.clone()),
        }
    }
}

/// The position of a document in a listing order: ascending iteration of a
/// `BTreeSet` of keys is display order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey {
    /// Newest first: date descending (dateless last), then id descending.
    Newest(Reverse<(Option<i64>, IdOrd)>),
    /// Oldest first: date ascending (dateless first), then id ascending.
    Oldest((Option<i64>, IdOrd)),
    /// Title (lowercased) ascending, then id.
    Title((Box<str>, IdOrd)),
}

/// A listing member: its order key, with the id breaking exact ties (`7` and `007`).
pub type MemberKey = (SortKey, Arc<str>);

/// A month bucket of the `date` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// Documents dated in this year and month (UTC).
    Month(i32, u8),
    /// Documents without a usable date.
    Undated,
}

impl Bucket {
    /// The bucket's path below the listing base, e.g. `2024/09/` or `undated/`.
    pub fn path(self) -> String {
        match self {
            Bucket::Month(y, m) => format!("{y:04}/{m:02}/"),
            Bucket::Undated => "undated/".into(),
        }
    }

    /// A short stable spelling used in persisted state: `2024-09` or `undated`.
    pub fn key(self) -> String {
        match self {
            Bucket::Month(y, m) => format!("{y:04}-{m:02}"),
            Bucket::Undated => "undated".into(),
        }
    }

    /// Parses [`Bucket::key`].
    pub fn parse_key(s: &str) -> Option<Bucket> {
        if s == "undated" {
            return Some(Bucket::Undated);
        }
        let (y, m) = s.split_once('-')?;
        let (y, m) = (y.parse().ok()?, m.parse().ok()?);
        (1..=12).contains(&m).then_some(Bucket::Month(y, m))
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        match self {
            Bucket::Month(y, m) => write!(f, "{} {y}", MONTHS[(*m as usize).clamp(1, 12) - 1]),
            Bucket::Undated => f.write_str("Undated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_numerically_first() {
        let ids: Vec<IdOrd> = ["10", "9", "b", "a"].iter().map(|s| IdOrd::new(&Arc::from(*s))).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, vec![ids[1].clone(), ids[0].clone(), ids[3].clone(), ids[2].clone()]);
    }

    #[test]
    fn newest_puts_dateless_last() {
        let k = |d: Option<i64>, id: &str| SortKey::Newest(Reverse((d, IdOrd::new(&Arc::from(id)))));
        let mut keys = vec![k(None, "1"), k(Some(5), "2"), k(Some(9), "3"), k(Some(9), "4")];
        keys.sort();
        assert_eq!(keys, vec![k(Some(9), "4"), k(Some(9), "3"), k(Some(5), "2"), k(None, "1")]);
    }

    #[test]
    fn bucket_keys_round_trip() {
        for b in [Bucket::Month(2024, 9), Bucket::Undated] {
            assert_eq!(Bucket::parse_key(&b.key()), Some(b));
        }
        assert_eq!(Bucket::Month(2024, 9).path(), "2024/09/");
        assert_eq!(Bucket::Month(2024, 9).to_string(), "September 2024");
    }
}
