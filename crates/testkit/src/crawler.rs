//! A careless crawler: the paths a sitemap lists, and one page fetched on a
//! new keep-alive connection, which the caller then keeps open. Used by the
//! connection-limit test and by the crawl benchmark's driver.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every `<loc>` in a sitemap or sitemap index, as a path: `base_url` (the
/// site's public origin) taken off the front.
pub fn sitemap_locs(xml: &str, base_url: &str) -> Vec<String> {
    xml.split("<loc>")
        .skip(1)
        .filter_map(|s| s.split_once("</loc>"))
        .map(|(loc, _)| loc.trim_start_matches(base_url).to_string())
        .collect()
}

/// Fetches `path` from `addr` on a new connection, waiting at most `wait` for
/// the connection and for each read. Returns the status (0: no answer) and
/// the connection, left open, once the whole response was read.
pub async fn fetch_and_keep(addr: &str, path: &str, wait: Duration) -> (u16, Option<TcpStream>) {
    let Ok(Ok(mut stream)) = tokio::time::timeout(wait, TcpStream::connect(addr)).await else {
        return (0, None);
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, None);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (status, total) = loop {
        let Ok(Ok(n)) = tokio::time::timeout(wait, stream.read(&mut chunk)).await else {
            return (0, None);
        };
        if n == 0 {
            return (0, None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            break (status, end + 4 + length);
        }
    };
    while buf.len() < total {
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (0, None),
        }
    }
    (status, Some(stream))
}
