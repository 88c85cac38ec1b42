//! Ctrl-C and SIGTERM: remembered, and acted on at the next safe point.
//!
//! A deploy must never stop between "old container stopped" and "new container started",
//! so signals do not kill the process: they set a flag that the deploy checks between
//! steps (and that the build and the health gate wait on, so they end promptly). What a
//! safe point does then is the deploy's business: before the switch it just stops; after
//! it, it puts the previous release back.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static FLAG: AtomicBool = AtomicBool::new(false);
static NOTIFY: OnceLock<Notify> = OnceLock::new();

fn notify() -> &'static Notify {
    NOTIFY.get_or_init(Notify::new)
}

/// Start listening. Call once, inside the runtime, before any work.
pub fn install() {
    use tokio::signal::unix::{SignalKind, signal};
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        let Ok(mut sig) = signal(kind) else { continue };
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if !FLAG.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "\n! interrupted: stopping at the next safe point (the service is never left half-switched)"
                    );
                }
                notify().notify_waiters();
            }
        });
    }
}

pub fn requested() -> bool {
    FLAG.load(Ordering::SeqCst)
}

/// Resolves once an interrupt has been requested.
pub async fn wait() {
    loop {
        let notified = notify().notified();
        if requested() {
            return;
        }
        notified.await;
    }
}
