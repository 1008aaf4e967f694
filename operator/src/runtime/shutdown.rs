//! The process-wide shutdown: one [`CancellationToken`] that every task of a binary stops on,
//! cancelled by the first SIGTERM (what the kubelet sends) or Ctrl-C
//! ([`p2pcamera_api::shutdown::signal`], the handler camera-pod uses too).

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first shutdown signal. Spawns the task that waits for it, so it must
/// be called inside a Tokio runtime.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        p2pcamera_api::shutdown::signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
