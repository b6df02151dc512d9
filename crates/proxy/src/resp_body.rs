//! Response bodies of the data plane, as sent downstream: local ones, and
//! upstream ones that hold their connection's lease. A plain enum, as
//! `req_body`'s.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::lb::upstream::Lease;
use crate::req_body::BoxError;

/// What is sent downstream.
#[derive(Debug)]
pub enum RespBody {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// An upstream response body, holding the request's lease on its connection
/// until it has been read: then an HTTP/1 connection can serve another
/// request, while one abandoned mid-body is closed.
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
    ended: bool,
}

impl UpstreamBody {
    pub fn new(body: Incoming, lease: Option<Lease>) -> Self {
        UpstreamBody {
            body,
            lease,
            ended: false,
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("ended", &self.ended)
            .finish()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.finish(self.ended || self.body.is_end_stream());
        }
    }
}

impl RespBody {
    pub fn text(s: impl Into<Bytes>) -> Self {
        let b = s.into();
        if b.is_empty() {
            RespBody::Empty
        } else {
            RespBody::Full(Some(b))
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            RespBody::Empty => Poll::Ready(None),
            RespBody::Full(d) => Poll::Ready(d.take().map(|d| Ok(Frame::data(d)))),
            RespBody::Upstream(u) => {
                let polled = Pin::new(&mut u.body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => u.ended = true,
                    Poll::Ready(Some(Ok(_))) if u.body.is_end_stream() => u.ended = true,
                    _ => {}
                }
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Empty => true,
            RespBody::Full(d) => d.is_none(),
            RespBody::Upstream(u) => u.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Empty => SizeHint::with_exact(0),
            RespBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            RespBody::Upstream(u) => u.body.size_hint(),
        }
    }
}
