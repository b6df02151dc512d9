//! How long a downstream HTTP connection stays open: its requests in flight
//! (each counted until its response body has been sent), the idle timeout
//! counted from when the last one ended, and the proxy's drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;

use super::{Drain, until_true};

/// Requests in flight on one downstream connection, and since when there
/// has been none (Envoy's idle timeout counts from then).
pub(super) struct Activity {
    /// (requests in flight, when the last one ended or the connection opened)
    state: Mutex<(u32, tokio::time::Instant)>,
    /// The proxy's flag: a request ended, memory was freed.
    freed: Arc<AtomicBool>,
}

impl Activity {
    pub(super) fn new(freed: Arc<AtomicBool>) -> Self {
        Activity {
            state: Mutex::new((0, tokio::time::Instant::now())),
            freed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, tokio::time::Instant)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.lock().0 += 1;
        InFlight(self.clone())
    }

    /// `None`: a request is in flight; else when the connection went idle.
    fn idle_since(&self) -> Option<tokio::time::Instant> {
        let st = self.lock();
        (st.0 == 0).then_some(st.1)
    }
}

/// One request in flight; ends when dropped.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Read first: no write (and no cache line moving between cores) while set.
        if !self.0.freed.load(Ordering::Relaxed) {
            self.0.freed.store(true, Ordering::Relaxed);
        }
        let mut st = self.0.lock();
        st.0 -= 1;
        if st.0 == 0 {
            st.1 = tokio::time::Instant::now();
        }
    }
}

/// A response body that keeps its request counted as in flight.
pub(super) struct Tracked<B> {
    pub(super) body: B,
    pub(super) _request: InFlight,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves one HTTP connection until it ends, the proxy drains, or it has
/// had no request in flight for `idle_timeout` (then as on drain, HTTP/1:
/// close once the current response is sent; HTTP/2: GOAWAY).
pub(super) async fn until_drained<C>(
    connection: C,
    peer: SocketAddr,
    drain: Drain,
    activity: Arc<Activity>,
    idle_timeout: Option<Duration>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let Drain {
        mut signal, _alive, ..
    } = drain;
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = until_true(&mut signal) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = until_idle(&activity, idle_timeout) => {
            tracing::debug!(%peer, "downstream connection idle; closing it");
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once the connection has had no request in flight for `timeout`.
async fn until_idle(activity: &Activity, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        // While a request is in flight, look again a timeout later: the
        // earliest it can have been idle for that long.
        let deadline = match activity.idle_since() {
            Some(since) if since.elapsed() >= timeout => return,
            Some(since) => since + timeout,
            None => tokio::time::Instant::now() + timeout,
        };
        tokio::time::sleep_until(deadline).await;
    }
}
