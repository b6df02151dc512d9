//! The upstream: this binary with `--serve-upstream`.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Either, Full};

/// A 1 KB answer to anything, HTTP/1.1 or h2c (prior knowledge), on one
/// thread: cheap enough that direct throughput is far above the proxied one.
/// A gRPC request (`content-type: application/grpc…`, any method) gets a
/// gRPC answer: one message of `body_size` bytes and `grpc-status: 0` in the
/// trailers, as a unary echo server would send.
pub fn serve(addr: SocketAddr, body_size: usize) -> Result<()> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the upstream on {addr}"))?;
        let body = Bytes::from(vec![b'x'; body_size]);
        let mut framed = BytesMut::with_capacity(body_size + 5);
        // The gRPC message frame: not compressed, 4-byte big-endian length.
        framed.put_u8(0);
        framed.put_u32(body_size as u32);
        framed.put_slice(&body);
        let grpc_body = framed.freeze();
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (body, grpc_body, builder) = (body.clone(), grpc_body.clone(), builder.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (body, grpc_body) = (body.clone(), grpc_body.clone());
                    async move {
                        let grpc = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                        // Read the request to its end, as a real server would.
                        let _ = req.into_body().collect().await;
                        let (body, content_type) = if grpc {
                            let mut t = HeaderMap::new();
                            t.insert("grpc-status", HeaderValue::from_static("0"));
                            let trailers = std::future::ready(Some(Ok(t)));
                            (
                                Either::Right(Full::new(grpc_body).with_trailers(trailers)),
                                "application/grpc",
                            )
                        } else {
                            // Exactly `Full`: HTTP/1.1 gets a content-length, h2 ends
                            // the stream on the one DATA frame.
                            (Either::Left(Full::new(body)), "text/plain")
                        };
                        let mut resp = http::Response::new(body);
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static(content_type),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

/// nginx as the HTTP/2 scenario's app: h2c only (`listen … http2`), the
/// same body to anything, one process (so that it can be pinned), its
/// files under `dir`.
pub fn nginx_conf(addr: SocketAddr, body_size: usize, dir: &Path) -> String {
    let d = dir.display();
    let body = "x".repeat(body_size);
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/logs/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         client_body_temp_path {d}/nginx-tmp/body;\n  proxy_temp_path {d}/nginx-tmp/proxy;\n\
         fastcgi_temp_path {d}/nginx-tmp/fastcgi;\n  uwsgi_temp_path {d}/nginx-tmp/uwsgi;\n\
         scgi_temp_path {d}/nginx-tmp/scgi;\n\
         server {{\n    listen {addr} http2;\n    location / {{ default_type text/plain; return 200 \"{body}\"; }}\n  }}\n}}\n"
    )
}
