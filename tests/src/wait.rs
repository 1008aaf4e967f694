//! Polling until the system reaches a state: the one way tests wait for eventual consistency.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;

const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `check` until it returns `Ok`, at most for `timeout`. `Err(reason)` means "not yet";
/// the last reason is part of the timeout error, so a failing test says what it saw.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_ok_value() {
        let mut calls = 0;
        let got = eventually("third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("call {n}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn timeout_reports_the_last_reason() {
        let err = eventually::<(), _, _>("never", Duration::from_millis(300), || async {
            Err("still no".to_owned())
        })
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("waiting for never") && msg.contains("still no"),
            "{msg}"
        );
    }
}
