//! Path patterns such as `/sprites/{id}/` or `/tags/{group}/`.

use std::fmt;

/// A named hole in a path pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// The document id.
    Id,
    /// The document owner's handle.
    Owner,
    /// The collection's slug field.
    Slug,
    /// The listing group.
    Group,
}

impl Placeholder {
    fn parse(name: &str) -> Option<Placeholder> {
        Some(match name {
            "id" => Placeholder::Id,
            "owner" => Placeholder::Owner,
            "slug" => Placeholder::Slug,
            "group" => Placeholder::Group,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Placeholder::Id => "id",
            Placeholder::Owner => "owner",
            Placeholder::Slug => "slug",
            Placeholder::Group => "group",
        }
    }
}

/// One `/`-separated piece of a pattern: fixed text or a whole-segment placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Fixed text.
    Literal(String),
    /// Replaced by one validated path segment.
    Hole(Placeholder),
}

/// A directory-style path pattern: starts and ends with `/`, each segment either
/// literal or exactly one placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Parses a pattern, allowing only the given placeholders.
    pub fn parse(text: &str, allowed: &[Placeholder]) -> Result<PathPattern, String> {
        if !text.starts_with('/') || !text.ends_with('/') {
            return Err(format!("path pattern {text:?} must start and end with '/'"));
        }
        let mut segments = Vec::new();
        let inner = if text == "/" { None } else { Some(&text[1..text.len() - 1]) };
        for seg in inner.into_iter().flat_map(|s| s.split('/')) {
            if seg.is_empty() {
                return Err(format!("path pattern {text:?} has an empty segment"));
            }
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let ph = Placeholder::parse(name).filter(|p| allowed.contains(p)).ok_or_else(|| {
                    let names: Vec<_> = allowed.iter().map(|p| format!("{{{}}}", p.name())).collect();
                    format!("unknown placeholder {{{name}}} in {text:?}; allowed here: {}", names.join(", "))
                })?;
                segments.push(Segment::Hole(ph));
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "segment {seg:?} of {text:?} mixes text and a placeholder; a placeholder must fill a whole segment"
                ));
            } else if !seg.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)) || seg == "." || seg == ".."
            {
                return Err(format!("segment {seg:?} of {text:?} may only use letters, digits and -_.~"));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(PathPattern { segments })
    }

    /// The segments in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the pattern contains the placeholder.
    pub fn has(&self, ph: Placeholder) -> bool {
        self.segments.contains(&Segment::Hole(ph))
    }

    /// Fills the placeholders. `value` must return an already validated segment.
    pub fn fill(&self, mut value: impl FnMut(Placeholder) -> Option<String>) -> Option<String> {
        let mut out = String::from("/");
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Hole(ph) => out.push_str(&value(*ph)?),
            }
            out.push('/');
        }
        Some(out)
    }

    /// Matches `path` exactly and returns the value of each placeholder.
    pub fn capture<'p>(&self, path: &'p str) -> Option<Vec<(Placeholder, &'p str)>> {
        let parts = segments_of(path)?;
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut values = Vec::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(s) if s != part => return None,
                Segment::Literal(_) => {}
                Segment::Hole(ph) => values.push((*ph, part)),
            }
        }
        Some(values)
    }

    /// Matches `path` (directory style) against the pattern and returns the
    /// remaining segments after the pattern's own, or `None` if it does not match.
    pub fn match_prefix<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let parts = segments_of(path)?;
        if parts.len() < self.segments.len() {
            return None;
        }
        for (seg, part) in self.segments.iter().zip(&parts) {
            match seg {
                Segment::Literal(s) if s != part => return None,
                _ => {}
            }
        }
        Some(parts[self.segments.len()..].to_vec())
    }
}

/// The segments of a directory-style path (`/` has none); `None` when the path
/// does not start and end with `/`.
fn segments_of(path: &str) -> Option<Vec<&str>> {
    if path == "/" {
        return Some(Vec::new());
    }
    let inner = path.strip_prefix('/')?.strip_suffix('/')?;
    Some(inner.split('/').collect())
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("/")?;
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => write!(f, "{s}/")?,
                Segment::Hole(ph) => write!(f, "{{{}}}/", ph.name())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[Placeholder] = &[Placeholder::Id, Placeholder::Owner, Placeholder::Slug];

    #[test]
    fn parses_and_fills() {
        let p = PathPattern::parse("/sprites/{id}/", DOC).unwrap();
        assert_eq!(p.fill(|_| Some("12".into())).unwrap(), "/sprites/12/");
        assert_eq!(p.to_string(), "/sprites/{id}/");
        let root = PathPattern::parse("/", &[]).unwrap();
        assert_eq!(root.fill(|_| None).unwrap(), "/");
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in ["sprites/{id}/", "/sprites/{id}", "/a//b/", "/x{id}/", "/{nope}/", "/../", "/a b/"] {
            assert!(PathPattern::parse(bad, DOC).is_err(), "{bad}");
        }
        assert!(PathPattern::parse("/{group}/", DOC).unwrap_err().contains("allowed here: {id}, {owner}, {slug}"));
    }

    #[test]
    fn matches_prefixes() {
        let p = PathPattern::parse("/tags/{group}/", &[Placeholder::Group]).unwrap();
        assert_eq!(p.match_prefix("/tags/x/page/2/"), Some(vec!["page", "2"]));
        assert_eq!(p.match_prefix("/tags/x/"), Some(vec![]));
        assert_eq!(p.match_prefix("/tagz/x/"), None);
        assert_eq!(p.match_prefix("/tags/"), None);
        let root = PathPattern::parse("/", &[]).unwrap();
        assert_eq!(root.match_prefix("/a/"), Some(vec!["a"]));
        assert_eq!(p.capture("/tags/x/"), Some(vec![(Placeholder::Group, "x")]));
        assert_eq!(p.capture("/tags/x/page/2/"), None);
        assert_eq!(root.capture("/"), Some(vec![]));
        assert_eq!(root.match_prefix("/"), Some(vec![]));
        assert_eq!(root.match_prefix("/page/2/"), Some(vec!["page", "2"]));
    }
}
