//! Serving one handler on several ports, with a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::reply::Body;

/// In-flight requests get this long to finish once a stop is asked for; the
/// mesh launcher waits for us, so a hung client must not hold up a restart.
const GRACE: Duration = Duration::from_secs(5);

/// What a handler may want to know about the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub local: SocketAddr,
}

/// One role of the sample application.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Bound listeners, not yet serving: binding first lets callers (and tests
/// that bind port 0) learn the real addresses before traffic starts.
pub struct Server {
    listeners: Vec<TcpListener>,
}

impl Server {
    pub async fn bind(ip: IpAddr, ports: &[u16]) -> anyhow::Result<Server> {
        let mut listeners = Vec::with_capacity(ports.len());
        for &port in ports {
            let addr = SocketAddr::new(ip, port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            listeners.push(listener);
        }
        Ok(Server { listeners })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes, then drains open connections.
    pub async fn serve<H: Handler>(self, handler: Arc<H>, shutdown: impl Future<Output = ()>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());

        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accept_loops = JoinSet::new();
        for listener in self.listeners {
            accept_loops.spawn(accept_loop(
                listener,
                handler.clone(),
                builder.clone(),
                graceful.clone(),
                stop_rx.clone(),
            ));
        }

        shutdown.await;
        let _ = stop_tx.send(true);
        while accept_loops.join_next().await.is_some() {}

        // Every accept loop has ended, so ours is the last reference.
        if let Ok(graceful) = Arc::try_unwrap(graceful)
            && tokio::time::timeout(GRACE, graceful.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("connections still open after {GRACE:?}; stopping anyway");
        }
    }
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    builder: auto::Builder<TokioExecutor>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!(%local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response exchanges dominate; Nagle only adds latency.
        let _ = stream.set_nodelay(true);

        let conn_info = ConnInfo { local };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(req, conn_info).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended with error: {e}");
            }
        });
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = ctrl_c => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
}
