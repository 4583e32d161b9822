//! Markdown to sanitised HTML, at a cost bounded by the input's length.
//!
//! Markdown lets a short input ask for a lot: 100 KB of `>` is a hundred
//! thousand nested quotes, which rendered to 2.7 MB of HTML and took the
//! sanitiser's HTML parser 0.83 s of CPU (its scope checks walk the stack of
//! open elements, so deep nesting costs quadratically). Three bounds keep
//! every input cheap: containers nested deeper than [`MAX_NESTING`] render
//! their content without another level of markup, raw HTML past
//! [`MAX_RAW_HTML_TAGS`] tags is shown as text, and rendering stops once the
//! HTML reaches [`MAX_HTML_BYTES`] (the sanitiser closes what is open).

use pulldown_cmark::{Event, Options, Parser, Tag, html};

/// Deepest nesting of quotes, lists, list items and inline markup (emphasis,
/// links, …) rendered as such; deeper levels keep their text only.
pub const MAX_NESTING: usize = 32;

/// Most HTML one markdown text renders to before sanitising; the rest of
/// the text is left out.
pub const MAX_HTML_BYTES: usize = 1 << 20;

/// Most tags of raw HTML one markdown text may hold; later raw HTML is shown
/// as text. Raw elements nest as the writer says (20,000 `<div>` took the
/// sanitiser 1.2 s), and real writing holds far fewer.
pub const MAX_RAW_HTML_TAGS: usize = 1024;

/// Converts user markdown to HTML that is safe to embed: raw HTML in the input
/// is kept only where ammonia's allow-list permits it (no scripts, no event
/// handlers, no `javascript:` links), and links get `rel="noopener noreferrer"`.
pub fn markdown_to_safe_html(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut out = String::with_capacity(text.len().min(MAX_HTML_BYTES) * 3 / 2);
    html::push_html(&mut out, Bounded::new(Parser::new_ext(text, options)));
    ammonia::clean(&out)
}

/// The parser's events within [`MAX_NESTING`], [`MAX_RAW_HTML_TAGS`] and
/// [`MAX_HTML_BYTES`].
struct Bounded<I> {
    events: I,
    /// Per open tag: whether its start was passed on (its end must be too),
    /// and whether it counted towards `depth`.
    open: Vec<(bool, bool)>,
    /// Open tags passed on that nest (quotes, lists, inline markup).
    depth: usize,
    /// An estimate, from above, of the HTML written so far.
    bytes: usize,
    /// Tags of raw HTML passed on.
    raw_tags: usize,
}

impl<I> Bounded<I> {
    fn new(events: I) -> Self {
        Bounded { events, open: Vec::new(), depth: 0, bytes: 0, raw_tags: 0 }
    }
}

/// Tags whose nesting a writer controls and the HTML parser pays for.
fn nests(tag: &Tag<'_>) -> bool {
    matches!(
        tag,
        Tag::BlockQuote(_)
            | Tag::List(_)
            | Tag::Item
            | Tag::Emphasis
            | Tag::Strong
            | Tag::Strikethrough
            | Tag::Link { .. }
            | Tag::Superscript
            | Tag::Subscript
    )
}

/// HTML bytes an event writes, at most (escaping can triple text; a tag with
/// its attributes is bounded by their lengths and a constant).
fn html_bytes(event: &Event<'_>) -> usize {
    const TAG: usize = 32;
    match event {
        Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => 3 * t.len() + TAG,
        Event::Start(Tag::Link { dest_url, title, .. } | Tag::Image { dest_url, title, .. }) => {
            3 * (dest_url.len() + title.len()) + TAG
        }
        _ => TAG,
    }
}

impl<'a, I: Iterator<Item = Event<'a>>> Iterator for Bounded<I> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        loop {
            let mut event = self.events.next()?;
            if let Event::Html(raw) | Event::InlineHtml(raw) = &event {
                self.raw_tags += raw.matches('<').count();
                if self.raw_tags > MAX_RAW_HTML_TAGS {
                    event = Event::Text(raw.clone());
                }
            }
            let passed = match &event {
                Event::Start(tag) => {
                    let nesting = nests(tag);
                    let pass = !nesting || self.depth < MAX_NESTING;
                    let counted = nesting && pass;
                    self.depth += usize::from(counted);
                    self.open.push((pass, counted));
                    pass
                }
                Event::End(_) => {
                    let (pass, counted) = self.open.pop().unwrap_or((true, false));
                    self.depth -= usize::from(counted);
                    pass
                }
                _ => true,
            };
            if !passed {
                continue;
            }
            self.bytes += html_bytes(&event);
            if self.bytes > MAX_HTML_BYTES {
                // Stop here; the sanitiser's parser closes what is open.
                return None;
            }
            return Some(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        assert_eq!(
            markdown_to_safe_html("*hi* [x](https://a.b)"),
            "<p><em>hi</em> <a href=\"https://a.b\" rel=\"noopener noreferrer\">x</a></p>\n"
        );
    }

    #[test]
    fn strips_script_and_handlers() {
        let out =
            markdown_to_safe_html("<script>alert(1)</script><img src=x onerror=alert(1)>\n\n[a](javascript:alert(1))");
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("onerror"), "{out}");
        assert!(!out.contains("href=\"javascript:"), "{out}");
        assert!(out.contains("<a rel=\"noopener noreferrer\">a</a>"), "{out}");
    }

    #[test]
    fn nesting_within_the_bound_renders_whole() {
        let quotes = format!("{}deep", "> ".repeat(MAX_NESTING));
        let out = markdown_to_safe_html(&quotes);
        assert_eq!(out.matches("<blockquote>").count(), MAX_NESTING, "{out}");
        assert_eq!(out.matches("</blockquote>").count(), MAX_NESTING, "{out}");
    }

    #[test]
    fn nesting_beyond_the_bound_keeps_its_text_without_markup() {
        let out = markdown_to_safe_html(&format!("{}deep *and **strong***", "> ".repeat(1000)));
        assert_eq!(out.matches("<blockquote>").count(), MAX_NESTING);
        assert_eq!(out.matches("</blockquote>").count(), MAX_NESTING);
        assert!(out.contains("deep and strong"), "{out}");
    }

    /// The deepest nesting of elements in `html`.
    fn depth(html: &str) -> usize {
        let (mut depth, mut deepest) = (0usize, 0);
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            rest = &rest[at + 1..];
            let void = ["br", "hr", "img", "input"].iter().any(|v| rest.starts_with(v));
            if rest.starts_with('/') {
                depth = depth.saturating_sub(1);
            } else if !void {
                depth += 1;
                deepest = deepest.max(depth);
            }
        }
        deepest
    }

    /// The pathological inputs of the CommonMark reference implementation's
    /// test suite (cmark's `test/pathological_tests.py`), each within the
    /// content limit of 100 KB: every one renders to bounded, shallow HTML.
    pub(crate) fn pathological() -> Vec<(&'static str, String)> {
        let fit = |s: String| s.chars().take(100_000).collect::<String>();
        vec![
            ("nested block quotes", fit("> ".repeat(50_000) + "a")),
            ("nested quotes without spaces", fit(">".repeat(100_000))),
            ("nested lists", fit((0..1000).map(|i| format!("{}* a\n", "  ".repeat(i))).collect())),
            ("nested ordered lists", fit((0..1000).map(|i| format!("{}1. a\n", "   ".repeat(i))).collect())),
            ("nested strong emphasis", fit(format!("{}b{}", "*a **a ".repeat(6000), " a** a*".repeat(6000)))),
            ("emphasis closers without openers", fit("a_ ".repeat(33_000))),
            ("emphasis openers without closers", fit("_a ".repeat(33_000))),
            ("link closers without openers", fit("a]".repeat(50_000))),
            ("link openers without closers", fit("[a".repeat(50_000))),
            ("mismatched openers and closers", fit("*a_ ".repeat(25_000))),
            ("openers and closers multiple of 3", fit(format!("a**b{}", "c* ".repeat(33_000)))),
            ("link openers and emphasis closers", fit("[ a_".repeat(25_000))),
            ("brackets and parentheses", fit("[ (](".repeat(20_000))),
            ("nested brackets", fit(format!("{}a{}", "[".repeat(50_000), "]".repeat(50_000)))),
            ("nested inline links", fit(format!("{}a{}", "[a](".repeat(25_000), ")".repeat(25_000)))),
            ("backtick runs", fit((1..450).map(|i| format!("e{}", "`".repeat(i))).collect())),
            ("unclosed links with angle brackets", fit("[a](<b".repeat(16_000))),
            ("unclosed links", fit("[a](b".repeat(20_000))),
            ("link reference flood", fit("[a]: /b\n".repeat(6_000) + &"[a]".repeat(14_000))),
            ("emphasis runs", fit("*".repeat(50_000) + "a" + &"*".repeat(50_000))),
            ("table with many rows", fit(format!("| a | b |\n|---|---|\n{}", "| c |\n".repeat(16_000)))),
            ("table with many columns", fit(format!("{}\n{}\n", "| a ".repeat(16_000), "|---".repeat(16_000)))),
            ("raw HTML nesting", fit("<div>".repeat(20_000))),
            ("inline raw HTML nesting", fit("a <span>".repeat(12_500))),
            ("entities", fit("&amp;".repeat(20_000))),
        ]
    }

    #[test]
    fn pathological_inputs_render_bounded_and_shallow() {
        for (name, input) in pathological() {
            let out = markdown_to_safe_html(&input);
            assert!(out.len() <= MAX_HTML_BYTES, "{name}: {} bytes of HTML", out.len());
            // Markdown containers stop at their bound, raw HTML at its own.
            let deepest = depth(&out);
            assert!(deepest <= MAX_NESTING.max(MAX_RAW_HTML_TAGS) + 8, "{name}: nested {deepest} deep");
        }
    }

    /// Run with `cargo test --release -p sesame-render -- --ignored --nocapture
    /// cpu_per_pathological_input` for the numbers in BENCHMARKS.md.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cpu_per_pathological_input() {
        for (name, input) in pathological() {
            let started = std::time::Instant::now();
            let out = markdown_to_safe_html(&input);
            println!("| {name} | {} | {} | {:.1} |", input.len(), out.len(), started.elapsed().as_secs_f64() * 1000.0);
        }
    }
}
