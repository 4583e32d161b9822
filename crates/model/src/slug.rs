//! Validation of user-supplied text that becomes part of a URL path.
//!
//! Everything that fills a path placeholder passes through here, so that no
//! document can produce a path with `..`, a slash, or characters that a static
//! file server would interpret differently.

/// Longest accepted id or handle.
pub const MAX_SEGMENT: usize = 128;

/// Checks a document id: 1 to 128 characters of `A-Z a-z 0-9 - _ . ~`, not
/// starting with a dot.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_SEGMENT {
        return Err(format!("must be at most {MAX_SEGMENT} characters"));
    }
    if id.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.~".contains(*c))) {
        return Err(format!("must not contain {c:?} (allowed: letters, digits, - _ . ~)"));
    }
    Ok(())
}

/// Checks an account handle: a lowercase slug of 1 to 63 characters, letters,
/// digits and single inner hyphens (it is also a DNS label in host mode). Two
/// hyphens in a row are refused: `xn--` labels are punycode and display as
/// other, possibly confusable, characters.
pub fn validate_handle(handle: &str) -> Result<(), String> {
    let ok = !handle.is_empty()
        && handle.len() <= 63
        && handle.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !handle.starts_with('-')
        && !handle.ends_with('-')
        && !handle.contains("--");
    if ok { Ok(()) } else { Err("must be 1-63 lowercase letters, digits or single inner hyphens".into()) }
}

/// Turns free text (a tag, a title) into a path segment: lowercase ASCII
/// letters and digits, runs of anything else collapsed to one `-`, at most 64
/// characters. Returns `None` when nothing usable is left.
pub fn slugify(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len().min(64));
    let mut dash = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
            if out.len() >= 64 {
                break;
            }
        } else {
            dash = true;
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["1", "abc-DEF_1.2~x"] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", "%2e%2e", "é", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handles() {
        assert!(validate_handle("alice-2").is_ok());
        for bad in ["", "Alice", "-a", "a-", "a_b", "a.b", "xn--80ak6aa92e", "a--b", &"a".repeat(64)] {
            assert!(validate_handle(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Pixel Art!").as_deref(), Some("pixel-art"));
        assert_eq!(slugify("  --a--b-- ").as_deref(), Some("a-b"));
        assert_eq!(slugify("../../etc").as_deref(), Some("etc"));
        assert_eq!(slugify("日本"), None);
        assert_eq!(slugify(&"a".repeat(100)).map(|s| s.len()), Some(64));
    }
}
