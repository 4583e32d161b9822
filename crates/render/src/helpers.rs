//! Filters and functions available to templates.
//!
//! | name | kind | what it does |
//! |---|---|---|
//! | `markdown` | filter | markdown → sanitised HTML (marked safe) |
//! | `safe_url` | filter | the URL if it is http(s), mailto or relative, else `#` |
//! | `date(format)` | filter | formats a timestamp: `iso`, `long`, `month`, `rfc3339` or a `time` format description |
//! | `slugify` | filter | free text → URL segment |
//! | `description(max=160, markdown=false)` | filter | text (or, with `markdown=true`, markdown as plain text) → one line for a link preview or a feed: control characters and runs of white space one space, cut at a word with `…` |
//! | `url(path)` | function | a root-relative URL for a site path |
//! | `absolute_url(path)` | function | the absolute URL of a site path (for canonical links, feeds) |
//! | `group_url(route, value)` | function | the first page of a group of a grouped listing, e.g. a tag page |
//! | `img(media, alt=…, sizes=…, class=…)` | function | an `<img>` of an uploaded image (a document field of `format: media`) with `srcset`, `width`, `height` and lazy loading |
//! | `asset(name)` | function | the fingerprinted URL of a file of `static/` (`asset("style.css")` → `/static/style.<hash>.css`), cached for good |
//! | `partial_cached(name, item)` | function | the template `name` rendered with `item` alone, kept for every page that shows the same item (`partials.rs`; installed by [`crate::Renderer`], which owns the cache) |

use std::sync::Arc;

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};
use sesame_config::RouteKind;
use sesame_model::slug::slugify;
use sesame_model::time;
use sesame_site::Site;

use crate::Assets;
use crate::markdown::markdown_to_safe_html;

pub(crate) fn install(env: &mut Environment<'static>, site: &Arc<Site>, assets: &Arc<Assets>) {
    env.set_formatter(html_formatter);
    env.add_filter("markdown", |text: &str| Value::from_safe_string(markdown_to_safe_html(text)));
    env.add_filter("safe_url", safe_url);
    env.add_filter("date", format_date);
    env.add_filter("slugify", |text: &str| slugify(text).unwrap_or_default());
    env.add_filter("description", description);
    env.add_function("url", |path: &str| root_relative(path));
    let s = site.clone();
    env.add_function("absolute_url", move |path: &str| s.absolute(&root_relative(path)));
    env.add_function("img", img);
    let a = assets.clone();
    env.add_function("asset", move |name: &str| -> Result<String, Error> {
        a.get(name.trim_start_matches('/').trim_start_matches("static/")).cloned().ok_or_else(|| {
            Error::new(ErrorKind::InvalidOperation, format!("asset({name:?}): static/{name} does not exist"))
        })
    });
    let s = site.clone();
    env.add_function("group_url", move |route: &str, value: &str| -> Result<Value, Error> {
        let Some(ix) = s.config.routes.iter().position(|r| r.name == route) else {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("no route named {route:?}")));
        };
        match s.route(ix as u16) {
            RouteKind::Listing(l) if l.group_by.is_some() => {
                Ok(slugify(value).map(|g| Value::from(s.group_base(ix as u16, &g))).unwrap_or_default())
            }
            _ => Err(Error::new(ErrorKind::InvalidOperation, format!("route {route:?} is not a grouped listing"))),
        }
    });
}

/// Longest description by default: what search results and most link
/// previews show.
const DESCRIPTION_MAX: usize = 160;

/// `text | description(max=160, markdown=false)`: text on one line, for
/// `<meta name="description">`, `og:description` and feeds: control
/// characters and runs of white space made one space, cut at a word
/// boundary to at most `max` characters with `…`. With `markdown=true` the
/// text is read as markdown and only its words are kept (markup and HTML
/// dropped); otherwise it is taken as it is, as the page shows it. Nothing
/// for an absent value. (Escaping is the template's, as for any text.)
fn description(text: Value, max: Option<usize>, kwargs: Kwargs) -> Result<String, Error> {
    let markdown: Option<bool> = kwargs.get("markdown")?;
    kwargs.assert_all_used()?;
    if text.is_undefined() || text.is_none() {
        return Ok(String::new());
    }
    Ok(one_line(&text.to_string(), markdown.unwrap_or(false), max.unwrap_or(DESCRIPTION_MAX)))
}

/// Text on one line of at most `max` characters: what [`description`] and
/// feeds make of a field (`markdown`: keep only the words of markdown).
pub(crate) fn one_line(text: &str, markdown: bool, max: usize) -> String {
    let words_of;
    let plain = if markdown {
        words_of = markdown_words(text);
        words_of.as_str()
    } else {
        text
    };
    let words: Vec<&str> =
        plain.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect();
    let line = words.join(" ");
    let max = max.max(1);
    if line.chars().count() <= max {
        return line;
    }
    // Whole words within max - 1 characters, then the ellipsis.
    let cut: String = line.chars().take(max - 1).collect();
    let at_word = match line.chars().nth(max - 1) {
        Some(' ') => cut.as_str(),
        _ => cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head),
    };
    format!("{}…", at_word.trim_end_matches(|c: char| c.is_whitespace() || ",;:.-".contains(c)))
}

/// The words of markdown: its text and code, markup and HTML dropped
/// (enough of it for a description).
fn markdown_words(source: &str) -> String {
    use pulldown_cmark::{Event, Parser, TagEnd};
    let mut plain = String::with_capacity(source.len().min(4 * DESCRIPTION_MAX));
    // Inside inline `<script>` or `<style>`: code, not words (the page's
    // sanitiser drops it too).
    let mut hidden = false;
    for event in Parser::new(source) {
        match event {
            Event::InlineHtml(tag) => {
                let tag = tag.to_ascii_lowercase();
                if tag.starts_with("<script") || tag.starts_with("<style") {
                    hidden = true;
                } else if tag.starts_with("</script") || tag.starts_with("</style") {
                    hidden = false;
                }
            }
            Event::Text(_) | Event::Code(_) if hidden => {}
            Event::Text(t) | Event::Code(t) => plain.push_str(&t),
            Event::SoftBreak | Event::HardBreak | Event::End(TagEnd::Paragraph | TagEnd::Heading(_) | TagEnd::Item) => {
                plain.push(' ')
            }
            _ => {}
        }
        if plain.len() > 8 * DESCRIPTION_MAX {
            break;
        }
    }
    plain
}

/// Escapes text for an HTML attribute value in double quotes.
fn attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `img(media, alt="", sizes="100vw", class="")`: the `<img>` of an uploaded
/// image as a document's view holds it (`url`, `srcset`, `width`, `height`);
/// nothing for an absent image.
fn img(media: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let alt: Option<String> = kwargs.get("alt")?;
    let sizes: Option<String> = kwargs.get("sizes")?;
    let class: Option<String> = kwargs.get("class")?;
    kwargs.assert_all_used()?;
    if media.is_undefined() || media.is_none() {
        return Ok(Value::from_safe_string(String::new()));
    }
    let field = |name: &str| media.get_attr(name).ok().filter(|v| !v.is_undefined() && !v.is_none());
    let Some(url) = field("url") else {
        return Err(Error::new(ErrorKind::InvalidOperation, "img() takes an image field of a document"));
    };
    let mut tag = format!("<img src=\"{}\"", attribute(&url.to_string()));
    if let Some(srcset) = field("srcset").map(|v| v.to_string()).filter(|s| !s.is_empty()) {
        tag.push_str(&format!(
            " srcset=\"{}\" sizes=\"{}\"",
            attribute(&srcset),
            attribute(sizes.as_deref().unwrap_or("100vw"))
        ));
    }
    for dimension in ["width", "height"] {
        if let Some(v) = field(dimension) {
            tag.push_str(&format!(" {dimension}=\"{v}\""));
        }
    }
    if let Some(class) = class {
        tag.push_str(&format!(" class=\"{}\"", attribute(&class)));
    }
    tag.push_str(&format!(" alt=\"{}\" loading=\"lazy\" decoding=\"async\">", attribute(alt.as_deref().unwrap_or(""))));
    Ok(Value::from_safe_string(tag))
}

/// Escapes only `& < > " '` in HTML templates. minijinja's default also
/// encodes `/`, which is valid but makes every URL three times longer.
fn html_formatter(out: &mut minijinja::Output, state: &mut minijinja::State, value: &Value) -> Result<(), Error> {
    let text = match value.as_str() {
        Some(s) => s,
        None => return minijinja::escape_formatter(out, state, value),
    };
    if value.is_safe() || *state.auto_escape() != minijinja::AutoEscape::Html {
        return minijinja::escape_formatter(out, state, value);
    }
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.write_str(&text[last..i]).map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))?;
        out.write_str(rep).map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))?;
        last = i + 1;
    }
    out.write_str(&text[last..]).map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
}

fn root_relative(path: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("/{path}") }
}

/// Keeps http(s), mailto and scheme-less (relative) URLs; anything else,
/// such as `javascript:`, becomes `#`. Browsers ignore control characters and
/// whitespace inside a scheme, so those are removed before deciding.
pub(crate) fn safe_url(url: &str) -> String {
    let cleaned: String = url.chars().filter(|c| !c.is_ascii_control() && !c.is_whitespace()).collect();
    let scheme_end = cleaned.find(':');
    let first_special = cleaned.find(['/', '?', '#']);
    let has_scheme = match (scheme_end, first_special) {
        (Some(colon), Some(special)) => colon < special,
        (Some(_), None) => true,
        _ => false,
    };
    if !has_scheme {
        return url.trim().to_string();
    }
    let scheme = cleaned[..scheme_end.unwrap_or(0)].to_ascii_lowercase();
    if matches!(scheme.as_str(), "http" | "https" | "mailto") { url.trim().to_string() } else { "#".into() }
}

fn format_date(value: Value, format: Option<&str>) -> Result<String, Error> {
    let secs = match (value.as_i64(), value.as_str()) {
        (Some(n), _) => n,
        (None, Some(s)) => time::parse_date(s)
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("date: cannot parse {s:?}")))?,
        _ if value.is_undefined() || value.is_none() => return Ok(String::new()),
        _ => return Err(Error::new(ErrorKind::InvalidOperation, "date: expects a timestamp or a date string")),
    };
    let t = time::datetime(secs);
    let described = |desc: &str| -> Result<String, Error> {
        let items = ::time::format_description::parse_borrowed::<2>(desc)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("date: bad format {desc:?}: {e}")))?;
        t.format(&items).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("date: {e}")))
    };
    match format.unwrap_or("iso") {
        "iso" => described("[year]-[month]-[day]"),
        "rfc3339" => Ok(time::rfc3339(secs)),
        "long" => described("[month repr:long] [day padding:none], [year]"),
        "month" => described("[month repr:long] [year]"),
        custom => described(custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_is_one_line_of_plain_text_cut_at_a_word() {
        let none = || Kwargs::from_iter(std::iter::empty::<(&str, Value)>());
        let md = |text: &str| {
            let kwargs = Kwargs::from_iter([("markdown", Value::from(true))]);
            description(Value::from(text), None, kwargs).expect("a description")
        };
        let d = |text: &str, max| description(Value::from(text), max, none()).expect("a description");
        assert_eq!(
            md("Paints *lighthouses* and [boats](https://x.y).\n\nSince 2019."),
            "Paints lighthouses and boats. Since 2019."
        );
        assert_eq!(md("Hi <b>there</b>"), "Hi there", "tags are dropped, their text kept");
        assert_eq!(md("<script>alert(1)</script>\n\nHi"), "Hi", "an HTML block is dropped whole");
        assert_eq!(md("Hi <SCRIPT>alert(1)</script> <style>p{}</style>there"), "Hi there", "and inline code");
        assert_eq!(md("# Title\n\n- one\n- two\n\n`code` &amp; more"), "Title one two code & more");
        assert_eq!(md("\"quotes\" 'and' </script>"), "\"quotes\" 'and'", "a closing tag is markup");
        assert_eq!(d("*Not* <b>markdown</b> # here", None), "*Not* <b>markdown</b> # here", "text is taken as it is");
        assert_eq!(d("tab\there\u{0}nul\u{7}bell\u{2028}line\n\nnext", None), "tab here nul bell line next");
        assert_eq!(d("one two three four", Some(12)), "one two…");
        assert_eq!(d("one two three four", Some(8)), "one two…");
        assert_eq!(d("one two, three", Some(9)), "one two…", "no comma before the ellipsis");
        assert_eq!(d("unbreakablewordhere", Some(8)), "unbreak…");
        assert_eq!(d("fits", Some(4)), "fits");
        assert_eq!(d("", None), "");
        assert_eq!(description(Value::UNDEFINED, None, none()).expect("nothing"), "");
        assert_eq!(description(Value::from(()), None, none()).expect("nothing"), "");
        assert_eq!(d(&"long ".repeat(10_000), None).chars().count(), 160);
    }

    #[test]
    fn safe_url_keeps_web_links_only() {
        for ok in ["https://a.b/c", "http://x", "mailto:a@b", "/local", "rel/path", "#frag", "?q=1"] {
            assert_eq!(safe_url(ok), ok);
        }
        for bad in ["javascript:alert(1)", " JavaScript:alert(1)", "java\tscript:x", "data:text/html,x", "vbscript:x"] {
            assert_eq!(safe_url(bad), "#", "{bad:?}");
        }
    }

    #[test]
    fn dates() {
        let v = Value::from("2024-09-01");
        assert_eq!(format_date(v.clone(), None).unwrap(), "2024-09-01");
        assert_eq!(format_date(v.clone(), Some("long")).unwrap(), "September 1, 2024");
        assert_eq!(format_date(v, Some("[year]")).unwrap(), "2024");
        assert_eq!(format_date(Value::from(0), Some("rfc3339")).unwrap(), "1970-01-01T00:00:00Z");
        assert!(format_date(Value::from("soon"), None).is_err());
    }
}
