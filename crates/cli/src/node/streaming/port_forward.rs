//! `kubectl port-forward`: the kubelet's `portforward.k8s.io` protocol over
//! SPDY. For each connection it forwards, the client opens a pair of
//! streams with the same `requestID` and `port` headers: `error`, on which
//! a failure is written as text, and `data`, piped both ways to a TCP
//! connection to that port on the pod's localhost — dialled inside the
//! pod's network namespace, as a container runtime does, so the sidecar's
//! capture is not in the way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connection::{CHUNK, Connection, Stream};

pub const PROTOCOL: &str = "portforward.k8s.io";

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves port forwarding on `conn` into the network namespace `netns` of `pod`.
pub async fn run(mut conn: Connection, netns: PathBuf, pod: String) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = conn.streams.recv().await {
        // Older clients send no requestID: a pair is then told by its port.
        let key = stream
            .header("requestid")
            .or(stream.header("port"))
            .unwrap_or_default()
            .to_string();
        let pair = pairs.entry(key.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            other => {
                tracing::debug!(stream_type = ?other, "port-forward: unexpected stream; ignored");
                continue;
            }
        }
        if pair.error.is_some()
            && pair.data.is_some()
            && let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&key)
        {
            let hung_up = conn.hung_up();
            let (netns, pod) = (netns.clone(), pod.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = forward(error, data, netns, &pod) => {}
                    () = hung_up => {}
                }
            });
        }
    }
    conn.close().await;
}

async fn forward(error: Stream, mut data: Stream, netns: PathBuf, pod: &str) {
    let port = data
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0);
    let outcome = match port {
        None => Err(format!(
            "invalid port header {:?} (a port number from 1 to 65535)",
            data.header("port").unwrap_or_default()
        )),
        Some(port) => match dial(netns, port).await {
            Err(e) => {
                // `connection refused`, as Go words it, without Rust's `(os error 111)`.
                let why = match e.raw_os_error() {
                    Some(_) => e.kind().to_string(),
                    None => e.to_string(),
                };
                Err(format!(
                    "error forwarding port {port} to pod {pod}: dialing 127.0.0.1:{port} in the pod's network: {why}"
                ))
            }
            Ok(tcp) => {
                let (mut from_pod, mut to_pod) = tcp.into_split();
                let out = data.out.clone();
                let upstream = async {
                    while let Some(bytes) = data.incoming.recv().await {
                        if to_pod.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    // The client's end of input: the pod's socket is half-closed too.
                    let _ = to_pod.shutdown().await;
                };
                let downstream = async {
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        match from_pod.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if !out.send(&buf[..n]).await {
                                    return;
                                }
                            }
                        }
                    }
                    out.finish().await;
                };
                tokio::join!(upstream, downstream);
                Ok(())
            }
        },
    };
    if let Err(message) = outcome {
        tracing::info!(%pod, %message, "port-forward failed");
        error.out.send(message.as_bytes()).await;
        data.out.finish().await;
    }
    error.out.finish().await;
}

/// Connects to `127.0.0.1:port` in the network namespace at `netns`, from
/// a thread of its own: a thread that enters a namespace stays in it.
async fn dial(netns: PathBuf, port: u16) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connect = || -> std::io::Result<std::net::TcpStream> {
            let ns = std::fs::File::open(&netns)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let tcp = std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                DIAL_TIMEOUT,
            )?;
            tcp.set_nonblocking(true)?;
            Ok(tcp)
        };
        let _ = tx.send(connect());
    });
    let tcp = rx
        .await
        .map_err(|_| std::io::Error::other("the dialing thread ended"))??;
    TcpStream::from_std(tcp)
}
