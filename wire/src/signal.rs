//! Graceful shutdown on SIGTERM / SIGINT, shared by the node, the client and the operator.

use std::future::Future;

/// Completes on SIGTERM or Ctrl-C (SIGINT): the graceful-shutdown trigger of the binaries.
///
/// The handlers are installed when this is called, not when the future is first polled: in a
/// container the process is PID 1, for which the kernel has no default SIGTERM action, so a
/// signal that came before the handler would be lost and the kubelet would wait out the
/// pod's grace period. Call it early, inside a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).expect("install SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("install SIGINT handler"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = signals;
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down");
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        }
    }
}
