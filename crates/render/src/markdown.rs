//! Markdown to sanitised HTML.

use pulldown_cmark::{Options, Parser, html};

/// Converts user markdown to HTML that is safe to embed: raw HTML in the input
/// is kept only where ammonia's allow-list permits it (no scripts, no event
/// handlers, no `javascript:` links), and links get `rel="noopener noreferrer"`.
pub fn markdown_to_safe_html(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut out = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut out, Parser::new_ext(text, options));
    ammonia::clean(&out)
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
}
