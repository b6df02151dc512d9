//! A TCP connection's bytes, counted into its series as they pass (Istio's
//! `istio_tcp_received_bytes_total` — from the downstream — and
//! `istio_tcp_sent_bytes_total` — to it), so that a long connection shows
//! its traffic while it lasts; the series counts the close when it ends,
//! and its access log line (if its side has access logs) is written then.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::access_log::{AccessLogs, Entry};
use super::metrics::{Metrics, TcpSeries};

/// The downstream side of a TCP connection, metered.
pub struct Metered<S> {
    inner: S,
    series: Arc<TcpSeries>,
    log: Option<Box<TcpLog>>,
}

/// What a TCP connection's access log line says besides its bytes.
pub struct TcpLog {
    pub logs: Arc<AccessLogs>,
    pub start: Instant,
    pub start_time: SystemTime,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    pub upstream_host: String,
    pub upstream_cluster: Arc<str>,
    pub source_principal: Option<String>,
    pub requested_server_name: Option<Arc<str>>,
    received: u64,
    sent: u64,
}

impl TcpLog {
    pub fn new(
        logs: Arc<AccessLogs>,
        downstream_remote: SocketAddr,
        downstream_local: SocketAddr,
        upstream_host: String,
        upstream_cluster: Arc<str>,
    ) -> Box<Self> {
        Box::new(TcpLog {
            logs,
            start: Instant::now(),
            start_time: SystemTime::now(),
            downstream_remote,
            downstream_local,
            upstream_host,
            upstream_cluster,
            source_principal: None,
            requested_server_name: None,
            received: 0,
            sent: 0,
        })
    }
}

impl<S> Metered<S> {
    pub fn new(inner: S, series: Arc<TcpSeries>) -> Self {
        Metered {
            inner,
            series,
            log: None,
        }
    }

    /// Writes an access log line for the connection when it closes.
    pub fn with_log(mut self, log: Option<Box<TcpLog>>) -> Self {
        self.log = log;
        self
    }

    fn count(&mut self, received: usize, sent: usize) {
        if let Some(l) = &mut self.log {
            l.received += received as u64;
            l.sent += sent as u64;
        }
    }
}

impl<S> Metered<S> {
    /// Counts bytes the downstream sent that were read before the stream
    /// was metered (a ClientHello read for its SNI).
    pub fn count_received(&self, n: u64) {
        self.series.received.fetch_add(n, Ordering::Relaxed);
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        Metrics::tcp_closed(&self.series);
        if let Some(l) = self.log.take() {
            l.logs.write(&Entry {
                upstream_host: Some(&l.upstream_host),
                upstream_cluster: Some(&l.upstream_cluster),
                downstream_local: Some(l.downstream_local),
                requested_server_name: l.requested_server_name.as_deref(),
                source_principal: l.source_principal.as_deref(),
                ..Entry::tcp(
                    (l.start_time, l.start),
                    "-",
                    (l.received, l.sent),
                    l.downstream_remote,
                )
            });
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.series.received.fetch_add(n as u64, Ordering::Relaxed);
            self.count(n, 0);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.series.sent.fetch_add(n as u64, Ordering::Relaxed);
            self.count(0, n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.series.sent.fetch_add(n as u64, Ordering::Relaxed);
            self.count(0, n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
