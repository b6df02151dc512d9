//! A TCP connection's bytes, counted into its series as they pass (Istio's
//! `istio_tcp_received_bytes_total` — from the downstream — and
//! `istio_tcp_sent_bytes_total` — to it), so that a long connection shows
//! its traffic while it lasts; the series counts the close when it ends.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::metrics::{Metrics, TcpSeries};

/// The downstream side of a TCP connection, metered.
pub struct Metered<S> {
    inner: S,
    series: Arc<TcpSeries>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, series: Arc<TcpSeries>) -> Self {
        Metered { inner, series }
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
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
