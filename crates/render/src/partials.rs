//! `partial_cached(name, item)`: a template rendered with one value, kept
//! for every page that shows the same value (a listing's card of a document
//! is rendered once per version of the document, not once per listing page
//! that shows it; Hugo's `partialCached`).
//!
//! The partial sees only `item` and the environment's functions and
//! filters, which are fixed for a [`crate::Renderer`], so the key is the
//! template's name and what names the value:
//!
//! - a listing's document ([`Item`]): the document version (its allocation,
//!   held by a `Weak` in the entry so that no other version can take its
//!   address while the entry lives) and its page path, from which its map
//!   is made: no need to build or walk it;
//! - any other value: a hash of everything the partial can read of it,
//!   walked (kind, safe or plain text, content).
//!
//! Either way a key names one output: a full build and an incremental
//! publish splice the same bytes.

use std::sync::{Arc, Weak};

use minijinja::value::ValueKind;
use minijinja::{Error, State, Value, context};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use sesame_model::Document;

use crate::view::Item;

/// A typical partial, for sizing the cache's index.
const TYPICAL: u64 = 512;
/// Deeper values are not cached (rendered every time): walking them could
/// cost more than the rendering it saves.
const MAX_DEPTH: usize = 16;

/// A rendered partial, and for a document's the version it shows.
#[derive(Clone)]
struct Kept {
    text: Arc<str>,
    /// Keeps the document's allocation (not its fields) while the entry lives.
    _version: Option<Weak<Document>>,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<[u8; 32], Kept> for ByLength {
    fn weight(&self, _key: &[u8; 32], kept: &Kept) -> u64 {
        // Key, pointers, a held document allocation and the cache's
        // bookkeeping: a few hundred bytes.
        kept.text.len() as u64 + 256
    }
}

/// Rendered partials by key, bounded in bytes (`None`: a capacity of 0,
/// every partial rendered every time).
pub(crate) struct Partials(Option<Cache<[u8; 32], Kept, ByLength>>);

impl Partials {
    pub(crate) fn new(capacity: u64) -> Partials {
        let items = (capacity / TYPICAL) as usize;
        Partials((capacity > 0).then(|| Cache::with_weighter(items.max(16), capacity, ByLength)))
    }

    /// `partial_cached(name, item)`.
    pub(crate) fn render(&self, state: &State, name: &str, item: Value) -> Result<Value, Error> {
        let cached = self.0.as_ref().and_then(|cache| Some((cache, key(name, &item)?)));
        if let Some(hit) = cached.as_ref().and_then(|(cache, key)| cache.get(key)) {
            return Ok(Value::from_safe_string(hit.text.to_string()));
        }
        let version = item.downcast_object_ref::<Item>().map(|i| Arc::downgrade(&i.doc));
        let text = state.env().get_template(name)?.render(context! { item => item })?;
        if let Some((cache, key)) = cached {
            cache.insert(key, Kept { text: Arc::from(text.as_str()), _version: version });
        }
        Ok(Value::from_safe_string(text))
    }
}

/// The template's name and what names the value, hashed; `None` for a
/// value the walk does not cover (an object of its own kind, or too deep).
fn key(name: &str, item: &Value) -> Option<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    bytes(&mut h, name.as_bytes());
    match item.downcast_object_ref::<Item>() {
        Some(i) => {
            // While this item lives, so does its document: no other version
            // can have its address, and an entry's `Weak` keeps the address
            // of the version it was rendered from.
            h.update(b"D");
            h.update(&(Arc::as_ptr(&i.doc) as usize as u64).to_le_bytes());
            match &i.path {
                Some(path) => bytes(&mut h, path.as_bytes()),
                None => _ = h.update(b"-"),
            }
        }
        None => walk(&mut h, item, 0)?,
    }
    Some(*h.finalize().as_bytes())
}

fn bytes(h: &mut blake3::Hasher, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

/// Feeds what a template can observe of `v`: its kind, whether text is safe
/// (printed as is) or plain (escaped), and its content, each part prefixed
/// by a tag or its length so that no two values feed the same bytes.
fn walk(h: &mut blake3::Hasher, v: &Value, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    match v.kind() {
        ValueKind::Undefined => h.update(b"u"),
        ValueKind::None => h.update(b"n"),
        ValueKind::Bool => h.update(if v.is_true() { b"T" } else { b"F" }),
        // Printed form: 1 and 1.0 differ, as they do on a page.
        ValueKind::Number => {
            h.update(b"#");
            bytes(h, v.to_string().as_bytes());
            h
        }
        ValueKind::String => {
            h.update(if v.is_safe() { b"S" } else { b"s" });
            bytes(h, v.as_str()?.as_bytes());
            h
        }
        ValueKind::Bytes => {
            h.update(b"b");
            bytes(h, v.as_bytes()?);
            h
        }
        ValueKind::Seq => {
            h.update(b"[");
            h.update(&(v.len()? as u64).to_le_bytes());
            for x in v.try_iter().ok()? {
                walk(h, &x, depth + 1)?;
            }
            h
        }
        ValueKind::Map => {
            h.update(b"{");
            h.update(&(v.len()? as u64).to_le_bytes());
            for k in v.try_iter().ok()? {
                let x = v.get_item(&k).ok()?;
                walk(h, &k, depth + 1)?;
                walk(h, &x, depth + 1)?;
            }
            h
        }
        // Iterables, plain objects, invalid values and any kind added later:
        // what a template reads of them is not theirs to say.
        _ => return None,
    };
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_within_its_bytes_and_nothing_at_zero() {
        let card = format!("{{{{ item }}}}{}", "x".repeat(300));
        for capacity in [0, 8 * 1024] {
            let partials = Arc::new(Partials::new(capacity));
            let mut env = minijinja::Environment::new();
            let p = partials.clone();
            env.add_function("partial_cached", move |state: &State, name: &str, item: Value| {
                p.render(state, name, item)
            });
            env.add_template_owned("c.html", card.clone()).unwrap();
            let page = r#"{% for i in range(1000) %}{{ partial_cached("c.html", i) }}|{% endfor %}"#;
            // Twice: the second pass reads what the first one kept.
            for _ in 0..2 {
                let out = env.render_str(page, ()).unwrap();
                let cards: Vec<&str> = out.split('|').filter(|c| !c.is_empty()).collect();
                assert_eq!(cards.len(), 1000);
                assert!(cards.iter().enumerate().all(|(i, c)| *c == format!("{i}{}", "x".repeat(300))));
            }
            match &partials.0 {
                None => assert_eq!(capacity, 0),
                Some(cache) => {
                    assert!(cache.weight() <= capacity, "{} > {capacity}", cache.weight());
                    // Each card weighs its text: far fewer than all of them fit.
                    assert!((1..100).contains(&cache.len()), "{} kept", cache.len());
                }
            }
        }
    }
}
