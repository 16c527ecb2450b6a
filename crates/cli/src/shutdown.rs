//! The shutdown signal: SIGINT (Ctrl-C) or SIGTERM, shared by every server a command runs.

use tokio::sync::watch;

/// A cloneable future source that resolves once the process was asked to stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Installs the signal handlers. Call once, inside the runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!("{name} received, shutting down");
            let _ = tx.send(true);
        });
        Ok(Shutdown(rx))
    }

    /// Resolves when the stop signal arrives.
    pub async fn wait(mut self) {
        // An error means the sender is gone, which only happens at process exit.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
