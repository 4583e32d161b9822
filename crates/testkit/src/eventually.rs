//! Waiting for what happens asynchronously, without fixed sleeps.

use std::time::{Duration, Instant};

/// Polls `probe` until it gives `Ok`, and returns that. What tests wait for
/// happens asynchronously (the publisher's quiet period, the router following
/// a generation), so they ask until it is so: every 10 ms at first, backing
/// off to 100 ms, for at most 30 s; then the test fails with `what` and the
/// probe's last `Err`, which says what was seen instead.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    eventually_within(what, Duration::from_secs(30), probe).await
}

/// [`eventually`] with a deadline of `limit`.
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: still {seen} after {limit:?}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
