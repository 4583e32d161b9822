//! Host names: what a custom domain may be.

/// The ASCII (IDNA) form of a host name as someone typed it: lowercased,
/// without a trailing dot, at least two labels of letters, digits and `-`
/// (not at either end), 63 bytes a label and 253 in all. An IP address, a
/// single label or `localhost` is refused, saying why.
pub fn host_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Err("a host name is required, e.g. www.example.org".into());
    }
    let host = match url::Host::parse(text) {
        Ok(url::Host::Domain(domain)) => domain,
        Ok(_) => return Err(format!("{text:?} is an IP address: give a host name, e.g. www.example.org")),
        Err(e) => return Err(format!("{text:?} is not a host name ({e})")),
    };
    if host.len() > 253 {
        return Err(format!("{text:?} is longer than the 253 bytes a host name may have"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("{text:?} is a single label: give a full host name, e.g. www.example.org"));
    }
    let plain = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if let Some(bad) = labels.iter().find(|l| !plain(l)) {
        return Err(format!(
            "{text:?} has the label {bad:?}: a label is 1 to 63 letters, digits and '-', not at either end"
        ));
    }
    if labels.last() == Some(&"localhost") {
        return Err(format!("{text:?} is a local name"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_as_dns_has_them() {
        assert_eq!(host_name(" www.Ann.Example. ").as_deref(), Ok("www.ann.example"));
        assert_eq!(host_name("bücher.example").as_deref(), Ok("xn--bcher-kva.example"));
        for bad in [
            "",
            "ann",
            "127.0.0.1",
            "[::1]",
            "ann.localhost",
            "-ann.example",
            "ann_blog.example",
            "a..example",
            "ann.example/x",
            "ann.example:8080",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}example", "abcdefgh.".repeat(29)),
        ] {
            assert!(host_name(bad).is_err(), "{bad:?} was taken: {:?}", host_name(bad));
        }
    }
}
