//! The one shutdown signal of both binaries.

/// Resolves on the first SIGTERM (what the kubelet sends) or Ctrl-C. Where SIGTERM cannot be
/// watched, Ctrl-C alone.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
