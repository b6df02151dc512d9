//! Request bodies of the data plane, as sent upstream. Plain enums instead of
//! boxed trait objects: a request costs no allocation for its body type, and
//! every variant stays `Unpin`, so no pin projection is needed. (Responses:
//! `resp_body`, which sits above the connection pools.)

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest request body kept in memory so that a retry or a mirror can
/// replay it. Larger bodies stream through once and are not retried.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// The start of a downstream body, read before the request was handed on
/// by a filter that had to see it (ext_authz's `includeRequestBodyInCheck`),
/// kept in the request's extensions: the body delivers it first.
#[derive(Clone, Debug, Default)]
pub struct Peeked {
    data: VecDeque<Bytes>,
    /// The body's trailers, when the whole body was read.
    trailers: Option<HeaderMap>,
}

impl Peeked {
    fn len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty() && self.trailers.is_none()
    }
}

/// What [`peek`] read.
pub struct Peek {
    /// Everything read so far, in one piece.
    pub bytes: Bytes,
    /// The body ended there.
    pub complete: bool,
}

/// Reads the body of `req` until it ends or at least `want` bytes are in,
/// keeping what it read in the request (as [`Peeked`]) for whoever sends
/// the body on.
pub async fn peek(req: &mut Request<Incoming>, want: usize) -> Result<Peek, hyper::Error> {
    let mut peeked = req.extensions_mut().remove::<Peeked>().unwrap_or_default();
    let mut len = peeked.len();
    let (mut failed, mut ended) = (None, false);
    while len < want && peeked.trailers.is_none() && !req.body().is_end_stream() {
        let body = req.body_mut();
        match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => {
                failed = Some(e);
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    peeked.data.push_back(data);
                }
                Err(frame) => peeked.trailers = frame.into_trailers().ok(),
            },
        }
    }
    let complete = ended || peeked.trailers.is_some() || req.body().is_end_stream();
    let bytes = concat(&peeked.data, len);
    req.extensions_mut().insert(peeked);
    match failed {
        Some(e) => Err(e),
        None => Ok(Peek { bytes, complete }),
    }
}

fn concat(chunks: &VecDeque<Bytes>, len: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks[0].clone(),
        _ => {
            let mut buf = BytesMut::with_capacity(len);
            chunks.iter().for_each(|c| buf.extend_from_slice(c));
            buf.freeze()
        }
    }
}

/// A downstream body that counts the bytes it delivers (for the access log).
#[derive(Debug)]
pub struct Counted {
    inner: Incoming,
    /// Read already (`Peeked`), delivered before the rest (boxed: most
    /// bodies have none, and `ReqBody` stays small).
    peeked: Option<Box<Peeked>>,
    received: Arc<AtomicU64>,
    /// gRPC requests: their messages, for telemetry.
    messages: Option<(crate::telemetry::grpc::MessageCounter, Arc<AtomicU64>)>,
}

impl Counted {
    pub fn new(inner: Incoming, received: Arc<AtomicU64>) -> Self {
        Counted {
            inner,
            peeked: None,
            received,
            messages: None,
        }
    }

    /// Delivers `peeked` before the rest of the body.
    pub fn with_peeked(mut self, peeked: Option<Peeked>) -> Self {
        self.peeked = peeked.filter(|p| !p.is_empty()).map(Box::new);
        self
    }

    fn is_end_stream(&self) -> bool {
        self.peeked.as_ref().is_none_or(|p| p.is_empty()) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.inner.size_hint();
        let peeked = self.peeked.as_ref().map_or(0, |p| p.len()) as u64;
        if peeked == 0 {
            return rest;
        }
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + peeked);
        if let Some(u) = rest.upper() {
            hint.set_upper(u + peeked);
        }
        hint
    }

    /// Also counts the gRPC messages of the body into `messages`.
    pub fn with_grpc_messages(mut self, messages: Option<Arc<AtomicU64>>) -> Self {
        self.messages = messages.map(|m| (Default::default(), m));
        self
    }

    fn poll_counted(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = if let Some(peeked) = &mut self.peeked {
            if let Some(data) = peeked.data.pop_front() {
                Poll::Ready(Some(Ok(Frame::data(data))))
            } else if let Some(trailers) = peeked.trailers.take() {
                self.peeked = None;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            } else {
                self.peeked = None;
                Pin::new(&mut self.inner).poll_frame(cx)
            }
        } else {
            Pin::new(&mut self.inner).poll_frame(cx)
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Some((counter, total)) = &mut self.messages {
                let before = counter.messages;
                counter.feed(data);
                total.fetch_add(counter.messages - before, Ordering::Relaxed);
            }
        }
        polled
    }
}

/// What is sent upstream.
#[derive(Debug)]
pub enum ReqBody {
    Empty,
    /// A buffered body (replayable: `Bytes` clones are cheap).
    Full(Option<Bytes>),
    /// The downstream body, streamed. Boxed, as in `Prefixed`: hyper's
    /// client queues requests in a channel whose blocks hold 32 of them
    /// whatever is in flight (one or two blocks per upstream HTTP/1
    /// connection for its life), so every byte of `ReqBody` is 32-64 bytes
    /// of each connection (see [`ReqBody::stream`]).
    Stream(Box<Counted>),
    /// Frames already read while trying to buffer, then the rest of the stream.
    Prefixed {
        prefix: VecDeque<Bytes>,
        rest: Box<Counted>,
    },
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ReqBody::Stream(s) => s.poll_counted(cx).map_err(Into::into),
            ReqBody::Prefixed { prefix, rest } => match prefix.pop_front() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => rest.poll_counted(cx).map_err(Into::into),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(d) => d.is_none(),
            ReqBody::Stream(s) => s.is_end_stream(),
            ReqBody::Prefixed { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            ReqBody::Stream(s) => s.size_hint(),
            ReqBody::Prefixed { prefix, rest } => {
                let buffered: u64 = prefix.iter().map(|b| b.len() as u64).sum();
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + buffered);
                if let Some(u) = r.upper() {
                    hint.set_upper(u + buffered);
                }
                hint
            }
        }
    }
}

impl ReqBody {
    /// The downstream body, streamed upstream.
    pub fn stream(body: Counted) -> Self {
        ReqBody::Stream(Box::new(body))
    }

    pub fn bytes(b: Bytes) -> Self {
        if b.is_empty() {
            ReqBody::Empty
        } else {
            ReqBody::Full(Some(b))
        }
    }
}

/// A request body made ready to be sent more than once, if it is small.
pub enum Replay {
    /// The whole body (possibly empty): every attempt gets a copy.
    Whole(Bytes),
    /// Too large or unbounded: it can be sent exactly once.
    Once(ReqBody),
}

/// Reads up to `limit` bytes of `body` into memory.
pub async fn buffer_for_replay(mut body: Counted, limit: usize) -> Result<Replay, hyper::Error> {
    if body.is_end_stream() {
        return Ok(Replay::Whole(Bytes::new()));
    }
    // A declared length over the limit: don't read at all, stream it once.
    if body.size_hint().lower() > limit as u64 {
        return Ok(Replay::Once(ReqBody::stream(body)));
    }
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| body.poll_counted(cx)).await;
        match frame {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                // Request trailers are rare (gRPC sends none) and dropped here.
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    chunks.push_back(data);
                    if len > limit {
                        return Ok(Replay::Once(ReqBody::Prefixed {
                            prefix: chunks,
                            rest: Box::new(body),
                        }));
                    }
                }
            }
        }
    }
    Ok(Replay::Whole(concat(&chunks, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper's HTTP/1 client queues `Request<ReqBody>`s in a tokio channel
    /// that allocates 32 slots per block: with the downstream body inline
    /// (`Counted`, 96 bytes) a slot was 88 bytes larger, 2.8 KiB per block.
    #[test]
    fn a_request_body_is_a_few_words() {
        assert!(
            std::mem::size_of::<ReqBody>() <= 40,
            "ReqBody is {} bytes",
            std::mem::size_of::<ReqBody>()
        );
    }
}
