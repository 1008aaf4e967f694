//! Polling until the system reaches a state: the one way tests wait for eventual consistency.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;
use crate::process::ManagedProcess;

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

/// Like [`eventually`], while `processes` run: one that exits fails the wait at once with the end
/// of its log, and a timeout carries the end of every one's log.
pub async fn eventually_while_running<T, F, Fut>(
    what: &str,
    timeout: Duration,
    processes: &[&ManagedProcess],
    mut check: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let outcome = eventually(what, timeout, || {
        let exited = processes
            .iter()
            .find_map(|p| p.exited().map(|status| (p, status)));
        let probe = check();
        async move {
            if let Some((p, status)) = exited {
                return Ok(Err(Error::Exited {
                    name: p.name().to_owned(),
                    status,
                    log: p.log_tail(40),
                }));
            }
            probe.await.map(Ok)
        }
    })
    .await;
    match outcome {
        Ok(result) => result,
        Err(Error::Timeout {
            what,
            timeout,
            last,
        }) => {
            let logs: Vec<_> = processes
                .iter()
                .map(|p| {
                    format!(
                        "--- {} ({}) ---\n{}",
                        p.name(),
                        p.log_path().display(),
                        p.log_tail(15)
                    )
                })
                .collect();
            Err(Error::Timeout {
                what,
                timeout,
                last: format!("{last}\n{}", logs.join("\n")),
            })
        }
        Err(other) => Err(other),
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

    #[tokio::test]
    async fn a_process_that_exits_ends_the_wait_at_once_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "echo bind: address already in use; exit 1"]);
        let server =
            ManagedProcess::spawn("server", command, &dir.path().join("server.log")).unwrap();
        let started = Instant::now();
        let result: Result<(), Error> = eventually_while_running(
            "never ready",
            Duration::from_secs(30),
            &[&server],
            || async { Err("not yet".to_owned()) },
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited {:?}",
            started.elapsed()
        );
        match result {
            Err(Error::Exited { name, log, .. }) => {
                assert_eq!(name, "server");
                assert!(log.contains("address already in use"), "{log}");
            }
            other => panic!("{other:?}"),
        }
    }
}
