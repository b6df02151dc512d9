//! Running pods as local processes: network namespaces with capture, the
//! programs containers' images map to, supervision, and the per-block lock.
//! Shared by `trellis up` and `trellis node`.

pub mod lock;
pub mod netns;
pub mod programs;
pub mod supervise;

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
