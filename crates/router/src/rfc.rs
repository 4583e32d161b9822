//! The request header fields the router honours, read exactly as RFC 9110
//! defines them: entity tags and their comparison (section 8.8.3),
//! content negotiation by `Accept-Encoding` (12.5.3) and byte ranges (14).
//! Pure functions of header values; their test vectors, shared with the
//! edge Worker, are `crates/router/tests/vectors.json` (run by `plan.rs`).

use sesame_objects::Encoding;
use sesame_store::encodings;

/// An entity tag as sent by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag<'a> {
    /// `W/` prefix.
    pub weak: bool,
    /// The opaque tag, without quotes.
    pub opaque: &'a str,
}

/// A list of entity tags (`If-Match`, `If-None-Match`), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tags<'a> {
    /// `*`: any current representation.
    Any,
    /// The listed tags (malformed members are skipped).
    List(Vec<Tag<'a>>),
}

/// Parses `#entity-tag` or `*`.
pub(crate) fn parse_tags(value: &str) -> Tags<'_> {
    if value.trim() == "*" {
        return Tags::Any;
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        let body = if weak { &rest[2..] } else { rest };
        let Some(quoted) = body.strip_prefix('"') else {
            // Not a tag: skip to the next member.
            rest = body.split_once(',').map_or("", |(_, r)| r);
            continue;
        };
        match quoted.split_once('"') {
            Some((opaque, r)) => {
                tags.push(Tag { weak, opaque });
                rest = r;
            }
            None => break,
        }
    }
    Tags::List(tags)
}

/// Whether an opaque tag is `hash` followed by `suffix` (how the router
/// spells its entity tags, without building the string).
fn is_tag(opaque: &str, (hash, suffix): (&str, &str)) -> bool {
    opaque.strip_prefix(hash) == Some(suffix)
}

/// Strong comparison (`If-Match`, `If-Range`): both tags strong and equal.
pub(crate) fn strong_match(value: &str, etag: (&str, &str)) -> bool {
    match parse_tags(value) {
        Tags::Any => true,
        Tags::List(tags) => tags.iter().any(|t| !t.weak && is_tag(t.opaque, etag)),
    }
}

/// Weak comparison (`If-None-Match`): equal opaque tags, `W/` ignored.
pub(crate) fn weak_match(value: &str, etag: (&str, &str)) -> bool {
    match parse_tags(value) {
        Tags::Any => true,
        Tags::List(tags) => tags.iter().any(|t| is_tag(t.opaque, etag)),
    }
}

/// The weight of each coding a client lists, `None` when the field or a
/// weight is malformed (`q=` must be 0 to 1 with up to three decimals).
fn weight(params: &str) -> Option<u16> {
    let mut q = 1000;
    for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") {
            continue; // other parameters are not defined for codings
        }
        let value = value.trim();
        let (int, frac) = value.split_once('.').unwrap_or((value, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Thousandths: "5" is 500, "05" is 50, "005" is 5.
        let frac_value =
            frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
        q = match int {
            "0" => frac_value,
            "1" if frac_value == 0 => 1000,
            _ => return None,
        };
    }
    Some(q)
}

/// Picks the content coding for a response: the acceptable one with the
/// highest weight among the variants `available` ([`encodings`] bits, with
/// identity always there), preferring brotli, then gzip, then identity on a
/// tie. Codings are case-insensitive; `*` stands for every coding not
/// listed; `identity` is acceptable unless excluded. Without the field, or
/// when nothing listed is acceptable, identity.
pub(crate) fn negotiate(accept: Option<&str>, available: u8) -> Encoding {
    let Some(accept) = accept else { return Encoding::Identity };
    // The highest weight listed for br, gzip, identity and `*` (one pass, no
    // allocation: this runs on every request).
    let mut q: [Option<u16>; 4] = [None; 4];
    for member in accept.split(',') {
        let (coding, params) = member.split_once(';').unwrap_or((member, ""));
        let coding = coding.trim();
        let slot = ["br", "gzip", "identity", "*"].iter().position(|name| coding.eq_ignore_ascii_case(name));
        if let Some(slot) = slot {
            // A malformed weight makes that member unusable, not the field.
            let weight = weight(params).unwrap_or(0);
            q[slot] = Some(q[slot].map_or(weight, |w| w.max(weight)));
        }
    }
    let q_of = |slot: usize| q[slot].or(q[3]);
    let candidates = [(Encoding::Brotli, 0, encodings::BROTLI), (Encoding::Gzip, 1, encodings::GZIP)];
    // Brotli first: it keeps a tie.
    let mut best: Option<(Encoding, u16)> = None;
    for (encoding, slot, bit) in candidates {
        if let Some(q) = q_of(slot).filter(|&q| available & bit != 0 && q > 0)
            && best.is_none_or(|(_, b)| q > b)
        {
            best = Some((encoding, q));
        }
    }
    // Identity needs no weight to be acceptable; only a listed weight (its
    // own or the wildcard's) can make it preferred to a coding.
    let identity = q_of(2).unwrap_or(0);
    match best {
        Some((encoding, q)) if q >= identity => encoding,
        _ => Encoding::Identity,
    }
}

/// What a `Range` field asks of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeAsk {
    /// Serve the whole representation: no usable range (an unknown unit,
    /// malformed syntax, or several ranges, which a server may answer whole).
    Whole,
    /// One satisfiable range, inclusive, clamped to the representation.
    One(u64, u64),
    /// No range is satisfiable: 416.
    Unsatisfiable,
}

/// Reads a `Range` field (RFC 9110, section 14.2). The unit is
/// case-insensitive and only `bytes` is understood; a last position past
/// the end is clamped; a suffix range takes the last N bytes.
pub(crate) fn range(value: &str, size: u64) -> RangeAsk {
    let Some((unit, set)) = value.split_once('=') else { return RangeAsk::Whole };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAsk::Whole;
    }
    let mut satisfiable = Vec::new();
    let mut any = false;
    for spec in set.split(',').map(str::trim) {
        if spec.is_empty() {
            continue; // empty list elements are allowed
        }
        let Some((first, last)) = spec.split_once('-') else { return RangeAsk::Whole };
        let number = |s: &str| -> Option<Option<u64>> {
            let s = s.trim();
            if s.is_empty() {
                return Some(None);
            }
            if !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Too many digits to fit: as good as infinite.
            Some(Some(s.parse().unwrap_or(u64::MAX)))
        };
        let (Some(first), Some(last)) = (number(first), number(last)) else { return RangeAsk::Whole };
        any = true;
        match (first, last) {
            (Some(f), Some(l)) if l < f => return RangeAsk::Whole, // invalid syntax
            (Some(f), last) if f < size => satisfiable.push((f, last.map_or(size - 1, |l| l.min(size - 1)))),
            (Some(_), _) => {}
            (None, Some(n)) if n > 0 && size > 0 => satisfiable.push((size - n.min(size), size - 1)),
            (None, Some(_)) => {}
            (None, None) => return RangeAsk::Whole,
        }
    }
    match satisfiable.as_slice() {
        _ if !any => RangeAsk::Whole,
        [] => RangeAsk::Unsatisfiable,
        [(start, end)] => RangeAsk::One(*start, *end),
        _ => RangeAsk::Whole,
    }
}
