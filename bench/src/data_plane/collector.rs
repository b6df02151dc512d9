//! The telemetry scenario's trace collector: this binary with
//! `--serve-collector`. It takes Zipkin v2 exports (`POST /api/v2/spans`)
//! as Zipkin does (202, body read and dropped) and counts them, so the
//! scenario can check that spans were really sent (`GET /exports`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

pub const EXPORTS_PATH: &str = "/exports";

pub fn serve(addr: SocketAddr) -> Result<()> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the trace collector on {addr}"))?;
        let exports = Arc::new(AtomicU64::new(0));
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let (exports, builder) = (exports.clone(), builder.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let exports = exports.clone();
                    async move {
                        let post = req.method() == http::Method::POST;
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        let (status, body) = if post && path == "/api/v2/spans" {
                            exports.fetch_add(1, Ordering::Relaxed);
                            (http::StatusCode::ACCEPTED, Bytes::new())
                        } else if path == EXPORTS_PATH {
                            let n = exports.load(Ordering::Relaxed);
                            (http::StatusCode::OK, Bytes::from(n.to_string()))
                        } else {
                            (http::StatusCode::NOT_FOUND, Bytes::new())
                        };
                        let mut resp = http::Response::new(Full::new(body));
                        *resp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
