//! The members of one listing group and the permanent page positions
//! ("lanes" of sequence numbers) of the `stable` and `date` schemes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use crate::order::{Bucket, MemberKey};

/// Append-only sequence numbers: each key gets the next number the first time it
/// joins and keeps it forever, so a page (`seq / size`) never changes its
/// boundaries. Keys that left keep their number; only `live` ones are shown.
#[derive(Debug, Clone)]
pub(crate) struct Lane<K: Eq + Hash> {
    by_key: HashMap<K, u64>,
    live: BTreeMap<u64, K>,
    next: u64,
}

impl<K: Eq + Hash + Clone> Default for Lane<K> {
    fn default() -> Self {
        Lane { by_key: HashMap::new(), live: BTreeMap::new(), next: 0 }
    }
}

impl<K: Eq + Hash + Clone> Lane<K> {
    /// Records a persisted assignment.
    pub fn restore(&mut self, key: K, seq: u64) {
        self.by_key.insert(key, seq);
        self.next = self.next.max(seq + 1);
    }

    /// The key's number, if it ever had one.
    pub fn seq(&self, key: &K) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// Gives the key a number if it has none; returns it when newly assigned.
    pub fn assign(&mut self, key: &K) -> Option<u64> {
        if self.by_key.contains_key(key) {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        self.by_key.insert(key.clone(), seq);
        Some(seq)
    }

    /// Shows a numbered key. Returns false when the key has no number.
    pub fn show(&mut self, key: &K) -> bool {
        match self.by_key.get(key) {
            Some(&seq) => {
                self.live.insert(seq, key.clone());
                true
            }
            None => false,
        }
    }

    /// Hides a key (it keeps its number).
    pub fn hide(&mut self, key: &K) {
        if let Some(seq) = self.by_key.get(key) {
            self.live.remove(seq);
        }
    }

    /// Whether any number was ever assigned.
    pub fn is_used(&self) -> bool {
        self.next > 0
    }

    /// Number of pages (0 when no number was ever assigned).
    pub fn pages(&self, size: u32) -> u32 {
        if self.next == 0 { 0 } else { ((self.next - 1) / u64::from(size) + 1) as u32 }
    }

    /// The 1-based page holding `seq`.
    pub fn page_of(seq: u64, size: u32) -> u32 {
        (seq / u64::from(size) + 1) as u32
    }

    /// Live keys on a 1-based page, highest number first.
    pub fn page_items(&self, page: u32, size: u32) -> impl Iterator<Item = &K> {
        let lo = u64::from(page.saturating_sub(1)) * u64::from(size);
        self.live.range(lo..lo + u64::from(size)).rev().map(|(_, k)| k)
    }

    /// Live keys with their numbers in `range`, ascending.
    pub fn live_range(&self, range: std::ops::Range<u64>) -> impl Iterator<Item = (&u64, &K)> {
        self.live.range(range)
    }

    /// Every assignment, for persisting.
    pub fn assignments(&self) -> impl Iterator<Item = (&K, u64)> {
        self.by_key.iter().map(|(k, s)| (k, *s))
    }
}

/// One listing group: its live members in display order, plus lanes for
/// groups paginated by sequence numbers.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Live members in display order.
    pub members: BTreeSet<MemberKey>,
    /// The lane of a `stable` group (or an `offset` group that went hot).
    pub stable: Option<Lane<Arc<str>>>,
    /// Lanes per month of a `date` group.
    pub buckets: BTreeMap<Bucket, Lane<Arc<str>>>,
    /// Member ids in display order, built on first use after a change.
    sorted: OnceLock<Arc<[Arc<str>]>>,
}

impl Group {
    /// Adds a live member.
    pub fn insert(&mut self, key: MemberKey) {
        self.sorted = OnceLock::new();
        self.members.insert(key);
    }

    /// Removes a live member.
    pub fn remove(&mut self, key: &MemberKey) {
        self.sorted = OnceLock::new();
        self.members.remove(key);
    }

    /// Member ids in display order (cached until the next change).
    pub fn sorted(&self) -> Arc<[Arc<str>]> {
        self.sorted.get_or_init(|| self.members.iter().map(|(_, id)| id.clone()).collect()).clone()
    }
}
