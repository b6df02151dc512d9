//! The benchmark's own load clients, for what oha cannot do: new TCP (+mTLS)
//! connections per second, and gRPC unary calls. Each runs as a child
//! process (this binary with `--client-job`), so that it can be pinned to the
//! client's CPUs like oha; it writes a [`JobResult`] as JSON.
//!
//! Both are closed loops bounded in time: `concurrency` workers, each
//! starting its next request when the previous one is answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Per request a new TCP connection (and a full mTLS handshake if
    /// `tls`), one HTTP/1.1 GET with `Connection: close`, the whole answer.
    Connect,
    /// gRPC unary calls over `connections` h2c connections, `concurrency`
    /// calls in flight on each.
    Grpc,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub kind: JobKind,
    /// host:port; a name is resolved as any application resolves it
    /// (the system resolver), so a client in a pod finds mesh services.
    pub addr: String,
    /// Host / :authority of every request.
    pub authority: String,
    pub secs: f64,
    pub concurrency: usize,
    pub connections: usize,
    pub request_bytes: usize,
    pub tls: Option<ClientTls>,
}

/// A mesh client's certificate, and the SPIFFE id the server must present.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientTls {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    pub roots: PathBuf,
    pub server_id: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobResult {
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// Runs `job` and writes its result to `out`.
pub fn run(job: &Job, out: &std::path::Path) -> Result<()> {
    let result = match job.kind {
        JobKind::Connect => connect_loop(job)?,
        JobKind::Grpc => grpc_loop(job)?,
    };
    std::fs::write(out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Latencies (µs) to the result's percentiles.
fn summarize(
    mut lat_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
) -> JobResult {
    lat_us.sort_unstable();
    let pct = |p: f64| {
        if lat_us.is_empty() {
            f64::NAN
        } else {
            let i = ((lat_us.len() as f64 * p).ceil() as usize).clamp(1, lat_us.len()) - 1;
            f64::from(lat_us[i]) / 1000.0
        }
    };
    JobResult {
        requests: lat_us.len() as u64,
        errors,
        first_error,
        elapsed_s: elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
    }
}

// ---------- new connections ----------

/// The mesh client's TLS config: the same verifier as the sidecars (chain to
/// the mesh roots, the server's SPIFFE id), its certificate, no resumption.
fn client_tls(tls: &ClientTls) -> Result<Arc<rustls::ClientConfig>> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let chain = identity::CertChain::from_pem(&read(&tls.cert_chain)?)?;
    let id = chain.spiffe_id()?;
    let key = identity::KeyAndCsr::from_private_key_pem(&id, &read(&tls.key)?)?;
    let certs = Arc::new(identity::CertManager::new(id));
    certs.install(key, &chain)?;
    let roots = identity::TrustBundle::from_pem(&read(&tls.roots)?)?;
    let server: identity::SpiffeId = tls.server_id.parse()?;
    let mut config = identity::client_config(certs, &roots, vec![server])?;
    // As a sidecar offers it: a PERMISSIVE port takes TLS without the mesh
    // ALPN id for the application's own and passes it through.
    config.alpn_protocols = vec![identity::ALPN_HTTP11.to_vec(), b"istio".to_vec()];
    // Every connection a full handshake: what a new client costs the server.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Reads one HTTP/1.1 response (with Content-Length) and returns its status.
fn read_response(s: &mut impl Read) -> Result<u16> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        ensure!(n > 0, "connection closed after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no content-length")?;
        while buf.len() < end + 4 + len {
            let n = s.read(&mut chunk)?;
            ensure!(n > 0, "connection closed in the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(status);
    }
}

fn one_connection(
    job: &Job,
    tls: Option<&Arc<rustls::ClientConfig>>,
    request: &[u8],
) -> Result<()> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(job.addr.as_str())?
        .next()
        .with_context(|| format!("{} has no address", job.addr))?;
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let status = match tls {
        Some(config) => {
            let name = rustls_pki_types::ServerName::try_from("echo.default.svc.cluster.local")?;
            let conn = rustls::ClientConnection::new(config.clone(), name.to_owned())?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(request)?;
            read_response(&mut s)?
        }
        None => {
            tcp.write_all(request)?;
            read_response(&mut tcp)?
        }
    };
    ensure!(status == 200, "status {status}");
    Ok(())
}

fn connect_loop(job: &Job) -> Result<JobResult> {
    let tls = job.tls.as_ref().map(client_tls).transpose()?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        job.authority
    )
    .into_bytes();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(job.secs);
    let workers: Vec<_> = (0..job.concurrency.max(1))
        .map(|_| {
            let (job, tls, request) = (job.clone(), tls.clone(), request.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let (mut errors, mut first) = (0u64, None);
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match one_connection(&job, tls.as_ref(), &request) {
                        Ok(()) => lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| format!("{e:#}"));
                            // A refusing server must not turn this into a busy loop.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut errors, mut first) = (0, None);
    for w in workers {
        let Ok((l, e, f)) = w.join() else {
            bail!("a client thread panicked");
        };
        lat.extend(l);
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    Ok(summarize(lat, errors, first, start.elapsed()))
}

// ---------- gRPC unary ----------

/// gRPC messages as raw bytes: the proxies never look inside them.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

fn grpc_loop(job: &Job) -> Result<JobResult> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let path: http::uri::PathAndQuery = "/bench.Echo/Unary".parse()?;
        let payload = bytes::Bytes::from(vec![b'q'; job.request_bytes]);
        let mut channels = Vec::new();
        for _ in 0..job.connections.max(1) {
            // Each `connect` is a connection of its own; :authority names the
            // service, so the client-side proxy routes it as any mesh call.
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", job.addr))?
                .origin(format!("http://{}", job.authority).parse()?)
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .with_context(|| format!("gRPC connection to {}", job.addr))?;
            channels.push(channel);
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(job.secs);
        let mut tasks = Vec::new();
        for channel in &channels {
            for _ in 0..job.concurrency.max(1) {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                let (path, payload) = (path.clone(), payload.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let (mut errors, mut first) = (0u64, None);
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        let call = async {
                            grpc.ready()
                                .await
                                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                            grpc.unary(tonic::Request::new(payload.clone()), path.clone(), RawCodec)
                                .await
                        };
                        match call.await {
                            Ok(_) => {
                                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32)
                            }
                            Err(e) => {
                                errors += 1;
                                first.get_or_insert_with(|| e.to_string());
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    (lat, errors, first)
                }));
            }
        }
        let mut lat = Vec::new();
        let (mut errors, mut first) = (0, None);
        for t in tasks {
            let (l, e, f) = t.await?;
            lat.extend(l);
            errors += e;
            if first.is_none() {
                first = f;
            }
        }
        Ok(summarize(lat, errors, first, start.elapsed()))
    })
}
