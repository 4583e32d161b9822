//! A hook for the crash tests: `SESAME_TEST_PAUSE_AT=<point>` stops the
//! process at that point of a publish (reporting it on stderr) until it is
//! killed, so a test can `kill -9` it exactly there. Unset, it costs one
//! load of a cached value.

use std::sync::OnceLock;

/// Blocks the calling thread for good when `SESAME_TEST_PAUSE_AT` names
/// `point`.
pub(crate) fn pause_point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("SESAME_TEST_PAUSE_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("paused at {point}");
        loop {
            std::thread::park();
        }
    }
}
