//! The control plane's half of the discovery stream.
//!
//! The control plane hands each connected proxy a `watch` channel of its
//! compiled config; this module turns changes of that channel into versioned
//! responses per type and reports ACKs and NACKs back. To a proxy that
//! accepts them, a response carries only the resources whose content hash
//! changed since the set it was last sent, and the names of those removed.
//! Resources are encoded once, when compiled ([`EncodedResource`]), and so
//! is each response, for all the streams that send it (`server::responses`): a
//! stream adds only its nonce.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use crate::certs::BearerToken;
use crate::pb::{DiscoveryRequest, HostRefusal, Node};
use crate::snapshot::{ProxySnapshot, TypeSnapshot};
use generated::aggregated_discovery_server::{AggregatedDiscovery, SERVICE_NAME};
pub use push::MAX_MESSAGE_BYTES;
use push::encode_push;
pub use responses::EncodedResponse;
use responses::Responses;
use whole_forms::WholeForms;
use whole_routes::WholeRoutes;

pub(crate) mod on_demand;
mod push;
mod responses;
mod whole_forms;
mod whole_routes;

/// The discovery service as `build.rs` generates it for [`EncodedResponse`].
mod generated {
    #![allow(clippy::all)]
    // Only the trait is used: `DiscoveryServer` serves it (see there why).
    #![allow(dead_code)]
    include!(concat!(
        env!("OUT_DIR"),
        "/trellis.proxy.v1.AggregatedDiscovery.rs"
    ));
}

/// The status refusing a token that came over plaintext: whoever is on the
/// path has read it, and could take the workload's identity with it.
pub const TOKEN_OVER_PLAINTEXT: &str = "tokens are accepted only over TLS on 15012 (trellisd --xds-tls-addr, verified with the mesh root): this is the plaintext discovery port, which serves config only to proxies that present no token";

/// Whether `request` came over TLS: the control plane's TLS listener serves
/// `tokio_rustls` streams over TCP, whose connection info tonic puts in the
/// request's extensions; the plaintext listener serves bare TCP streams.
pub fn over_tls<T>(request: &Request<T>) -> bool {
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .is_some()
}

/// A proxy the control plane accepted.
pub struct Accepted {
    /// Who the proxy is, as the control plane knows it (which need not be
    /// what it claimed): the stream's ACKs, NACKs and logs name this node.
    pub node: Node,
    /// Its config.
    pub config: watch::Receiver<Arc<ProxySnapshot>>,
}

/// What the control plane provides to the discovery service.
#[tonic::async_trait]
pub trait ConfigProvider: Send + Sync + 'static {
    /// A proxy connected claiming to be `node`; authenticate it and return
    /// who it is and the channel of its config. `token`: the stream's
    /// `authorization: Bearer` credential, if any.
    /// Async: authenticating may ask another service (Kubernetes' TokenReview).
    async fn connect(&self, node: &Node, token: Option<&BearerToken>) -> Result<Accepted, Status>;
    /// The proxy applied `version` of `type_url`.
    fn ack(&self, node: &Node, type_url: &str, version: &str);
    /// The proxy rejected a response of `type_url`; it keeps `version` (its last good one).
    fn nack(&self, node: &Node, type_url: &str, version: &str, reason: &str);
    /// A response was sent.
    fn sent(&self, node: &Node, type_url: &str, version: &str);
    /// The stream ended.
    fn disconnect(&self, node: &Node);
    /// An on-demand proxy (`Node.on_demand`) asked for `hosts`: add those it
    /// may have to its `asked_hosts` (their config then follows on its
    /// channel) and return the others, each with why.
    async fn ask(&self, node: &Node, hosts: Vec<String>) -> Vec<HostRefusal> {
        let _ = node;
        hosts
            .into_iter()
            .map(|host| HostRefusal {
                host,
                reason: "this control plane does not serve on-demand discovery".into(),
            })
            .collect()
    }
    /// An on-demand proxy no longer needs `hosts` (unused for a while): take
    /// them out of its `asked_hosts` (the smaller config then follows on its
    /// channel). A host it did not ask for is forgotten already.
    async fn forget(&self, node: &Node, hosts: Vec<String>) {
        let _ = (node, hosts);
    }
    /// Every proxy has answered every response sent to it: no push is in
    /// flight. After a burst (a thousand proxies connecting, a change sent
    /// to all) the memory its responses took is free, and a good moment to
    /// return it.
    fn pushes_settled(&self) {}
}

pub struct DiscoveryService<P> {
    provider: Arc<P>,
    pushes: Arc<Semaphore>,
    concurrent_pushes: usize,
    /// Resources whole for proxies that do not read the compact forms.
    whole_forms: Arc<WholeForms>,
    whole_routes: Arc<WholeRoutes>,
    responses: Arc<Responses>,
}

/// How many proxies may have unacknowledged config in flight at once (Istio's
/// PILOT_PUSH_THROTTLE does the same): a full push to a thousand proxies then
/// holds a bounded amount of memory instead of every proxy's config at once.
pub const DEFAULT_CONCURRENT_PUSHES: usize = 32;

/// A push no larger than this (its bodies' bytes: an endpoint change is a
/// few hundred) that another stream already made is sent without waiting
/// for a permit: it holds no memory of its own, and little in a
/// connection's buffers.
const UNTHROTTLED_BYTES: usize = 16 * 1024;

impl<P: ConfigProvider> DiscoveryService<P> {
    // Handed out inside the server that serves it, as tonic's generated
    // `new` does.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(provider: Arc<P>) -> DiscoveryServer<P> {
        Self::with_push_limit(provider, DEFAULT_CONCURRENT_PUSHES)
    }

    pub fn with_push_limit(provider: Arc<P>, concurrent_pushes: usize) -> DiscoveryServer<P> {
        DiscoveryServer {
            service: Arc::new(Self {
                provider,
                pushes: Arc::new(Semaphore::new(concurrent_pushes.max(1))),
                concurrent_pushes: concurrent_pushes.max(1),
                whole_forms: Arc::default(),
                whole_routes: Arc::default(),
                responses: Arc::default(),
            }),
        }
    }
}

/// The discovery service as a gRPC server: what tonic generates, but for how
/// responses are written. tonic encodes a stream's responses into one buffer
/// per stream, which keeps the capacity of the largest response the stream
/// ever wrote (doubled as it grew) for as long as the stream lives: with
/// 1,000 proxies each sent a route configuration of some hundred kilobytes,
/// that was 270 MB of trellisd's 390 MB heap (heaptrack). Here each response
/// is framed in a buffer of its own size, freed once written.
pub struct DiscoveryServer<P> {
    service: Arc<DiscoveryService<P>>,
}

impl<P> Clone for DiscoveryServer<P> {
    fn clone(&self) -> Self {
        DiscoveryServer {
            service: self.service.clone(),
        }
    }
}

impl<P> tonic::server::NamedService for DiscoveryServer<P> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<P, B> tonic::codegen::Service<http::Request<B>> for DiscoveryServer<P>
where
    P: ConfigProvider,
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        Box::pin(async move {
            if request.uri().path() != format!("/{SERVICE_NAME}/Stream") {
                return Ok(Status::unimplemented("").into_http());
            }
            // tonic's yield threshold, its default (32 KiB), which it does not export.
            let buffer = tonic::codec::BufferSettings::new(REQUEST_BUFFER_BYTES, 32 * 1024);
            let decoder = tonic_prost::ProstDecoder::<DiscoveryRequest>::new(buffer);
            let request = Request::from_http(
                request.map(|body| Streaming::new_request(decoder, body, None, None)),
            );
            let responses = match service.stream(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => return Ok(status.into_http()),
            };
            let body = http_body_util::StreamBody::new(frames(responses));
            let mut response = http::Response::new(tonic::body::Body::new(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                tonic::metadata::GRPC_CONTENT_TYPE,
            );
            Ok(response)
        })
    }
}

/// The buffer a stream's requests are decoded from, to begin with (a
/// larger request grows it). tonic's default, 8 KiB kept per stream for as
/// long as it lives, is 16 MB at 2,000 proxies, for requests (ACKs) of
/// about a hundred bytes.
const REQUEST_BUFFER_BYTES: usize = 1024;

/// The HTTP/2 body of a discovery stream: each response a gRPC message,
/// then the status as trailers. A response's prefix and nonce are its own
/// (`head`); its body is shared with the other streams that send it. A
/// large body follows its head as a data frame of its own, which h2 writes
/// without a copy; a small one (an endpoint change: a few hundred bytes) is
/// copied after its head, so that the response is one frame: each frame
/// passes h2's send path (the stream's lock, flow control, queueing) once,
/// and 2,000 streams sending a change pass it 2,000 times, not 4,000.
fn frames(
    responses: ResponseStream,
) -> impl Stream<Item = Result<http_body::Frame<Bytes>, Status>> + Send {
    let state = (Some(responses), None::<Bytes>);
    futures::stream::unfold(state, |(responses, body)| async move {
        let mut responses = responses?;
        if let Some(body) = body {
            return Some((Ok(http_body::Frame::data(body)), (Some(responses), None)));
        }
        let status = match responses.next().await {
            Some(Ok(response)) => match message(&response) {
                Ok((first, rest)) => {
                    return Some((Ok(http_body::Frame::data(first)), (Some(responses), rest)));
                }
                Err(status) => status,
            },
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            // A message that is no header value: the code alone.
            trailers.insert(Status::GRPC_STATUS, (status.code() as i32).into());
        }
        Some((Ok(http_body::Frame::trailers(trailers)), (None, None)))
    })
}

/// A body up to this size is copied after its head: one data frame.
const COPIED_BODY_BYTES: usize = 4 * 1024;

/// `response` as a gRPC message: not compressed, its length, its nonce,
/// its body. In one piece if the body is small, else the head and then
/// the shared body.
fn message(response: &EncodedResponse) -> Result<(Bytes, Option<Bytes>), Status> {
    use prost::Message as _;
    let len = response.encoded_len();
    let prefix = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted(format!("a response of {len} bytes")))?;
    let nonce = response.head();
    let body = &response.body;
    let copied = body.len() <= COPIED_BODY_BYTES;
    let mut buf = Vec::with_capacity(5 + nonce.len() + if copied { body.len() } else { 0 });
    buf.push(0);
    buf.extend_from_slice(&prefix.to_be_bytes());
    buf.extend_from_slice(&nonce);
    if copied {
        buf.extend_from_slice(body);
        return Ok((buf.into(), None));
    }
    Ok((buf.into(), Some(body.clone())))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EncodedResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<P: ConfigProvider> AggregatedDiscovery for DiscoveryService<P> {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let token = BearerToken::from_metadata(request.metadata());
        if token.is_some() && !over_tls(&request) {
            let peer = request
                .remote_addr()
                .map_or_else(|| "unknown".to_string(), |a| a.to_string());
            tracing::warn!(%peer, "discovery stream refused: a token sent over plaintext");
            return Err(Status::unauthenticated(TOKEN_OVER_PLAINTEXT));
        }
        let mut inbound = request.into_inner();
        let first = match inbound.next().await {
            Some(Ok(req)) => req,
            Some(Err(status)) => return Err(status),
            None => {
                return Err(Status::invalid_argument(
                    "stream closed before the first request",
                ));
            }
        };
        let node = first
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        if node.id.is_empty() {
            return Err(Status::invalid_argument("node.id is empty"));
        }
        let Accepted { node, config } = self.provider.connect(&node, token.as_ref()).await?;
        // Room for little more than the response being written: a session
        // builds each response when the stream can take it, so a thousand
        // sessions do not each hold a queue of built responses.
        let (tx, rx) = mpsc::channel::<Queued>(2);
        let provider = self.provider.clone();
        let pushes = self.pushes.clone();
        let concurrent_pushes = self.concurrent_pushes;
        let whole_forms = (!first.compact_resources).then(|| self.whole_forms.clone());
        let whole_routes = (!first.joins_route_pieces).then(|| self.whole_routes.clone());
        let responses = self.responses.clone();
        let session = Box::new(Session {
            node,
            provider,
            config,
            tx,
            subscribed: Default::default(),
            accepts_partial: first.accepts_partial,
            whole_forms,
            whole_routes,
            responses,
            nonce: 0,
            pushes,
            concurrent_pushes,
            permit: None,
            awaiting: HashSet::new(),
        });
        tokio::spawn(session.serve(Box::new(first), Box::new(inbound)));
        let responses = ReceiverStream::new(rx).map(|response| Ok(*response));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// What was last sent for one subscribed type.
#[derive(Default)]
struct Sent {
    /// The proxy's config's set of the type that `version` was taken from
    /// (before any whole forms): while the config's set is this one, it
    /// has nothing new, and this is known without comparing versions.
    from: Option<Arc<TypeSnapshot>>,
    version: Option<String>,
    nonce: String,
    /// The set the proxy holds if it applied everything sent: what the next
    /// partial response is computed against. `None` when unknown (nothing
    /// sent yet, or a NACK): the next response is the full set. Shared with
    /// the snapshot it came from, so it costs no copy.
    base: Option<Arc<TypeSnapshot>>,
    /// Whether the last response was partial.
    partial: bool,
}

impl Sent {
    /// Whether the proxy was sent `current` (the config's set of this
    /// type) or a set of its version. A change of one type leaves the
    /// others' sets as they were, shared: those are known sent by address,
    /// with no version compared. Remembers `current` as the set seen.
    fn has(&mut self, current: &Arc<TypeSnapshot>) -> bool {
        if self.from.as_ref().is_some_and(|f| Arc::ptr_eq(f, current)) {
            return true;
        }
        self.from = Some(current.clone());
        self.version.as_deref() == Some(current.version.as_str())
    }
}

/// Where `type_url` is in [`crate::types::SERVED`], if served.
fn served(type_url: &str) -> Option<usize> {
    crate::types::SERVED.iter().position(|t| *t == type_url)
}

/// A response a session built, waiting for its stream. Boxed because
/// tokio's channel allocates its slots 32 at a time whatever its capacity,
/// for as long as the stream lives: 32 `Result<EncodedResponse, Status>`
/// (56 bytes each) are 1.8 KiB per stream, 3.5 MiB at 2,000 proxies; 32
/// boxes are 256 bytes.
type Queued = Box<EncodedResponse>;

/// A stream's requests.
type Inbound = Streaming<DiscoveryRequest>;

struct Session<P> {
    node: Node,
    provider: Arc<P>,
    config: watch::Receiver<Arc<ProxySnapshot>>,
    tx: mpsc::Sender<Queued>,
    /// What was sent of each subscribed type, at the type's place in
    /// [`crate::types::SERVED`]: a change looks its types up by place.
    subscribed: [Option<Sent>; crate::types::SERVED.len()],
    accepts_partial: bool,
    /// Set if the proxy does not read the compact forms: where its
    /// resources are made whole, once for all such streams.
    whole_forms: Option<Arc<WholeForms>>,
    /// For a proxy that does not join route-config pieces (it did not say
    /// `joins_route_pieces`): each route config whole, joined once for all
    /// the streams that send the same pieces.
    whole_routes: Option<Arc<WholeRoutes>>,
    /// Responses encoded once for the streams that send the same.
    responses: Arc<Responses>,
    nonce: u64,
    pushes: Arc<Semaphore>,
    concurrent_pushes: usize,
    /// Held from the first unacknowledged response until the proxy has
    /// answered all of them. A session holds at most one, and keeps reading
    /// its stream while it does, so sessions cannot deadlock on permits.
    permit: Option<OwnedSemaphorePermit>,
    awaiting: HashSet<String>,
}

impl<P: ConfigProvider> Session<P> {
    /// The session's task: its stream from `first` on, then its goodbye.
    /// The session and the arguments come boxed: a future holds its async
    /// fn's arguments beside the locals they are moved to (rustc #62958),
    /// so inline they were part of the task twice at every nesting, for as
    /// long as the stream lived.
    async fn serve(mut self: Box<Self>, first: Box<DiscoveryRequest>, inbound: Box<Inbound>) {
        self.run(first, inbound).await;
        // Drop the config channel first: the provider tells a stale stream
        // from a reconnected one by whether anybody still watches it.
        let Session {
            node,
            provider,
            config,
            ..
        } = *self;
        drop(config);
        provider.disconnect(&node);
    }

    /// Handles requests and changes until the stream ends. What a request
    /// or a change sets off (building and queueing responses, asking the
    /// provider) runs in a box of its own, held while it runs: inline, the
    /// largest of those futures was part of every session's task for as
    /// long as its stream lived (4.5 KiB a proxy, heaptrack), though a
    /// session spends nearly all its life waiting.
    async fn run(&mut self, first: Box<DiscoveryRequest>, mut inbound: Box<Inbound>) {
        if Box::pin(self.handle(*first)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                req = inbound.next() => match req {
                    Some(Ok(req)) => if Box::pin(self.handle(req)).await.is_err() { return },
                    Some(Err(status)) => {
                        tracing::debug!(proxy = %self.node.id, %status, "discovery stream error");
                        return;
                    }
                    None => return,
                },
                changed = self.config.changed() => {
                    if changed.is_err() {
                        // The control plane dropped this proxy (e.g. it shut down).
                        return;
                    }
                    if Box::pin(self.push_changed()).await.is_err() { return }
                }
            }
        }
    }

    async fn handle(&mut self, req: DiscoveryRequest) -> Result<(), ()> {
        if !req.ask_hosts.is_empty() || !req.forget_hosts.is_empty() {
            return self.ask(req.forget_hosts, req.ask_hosts).await;
        }
        let Some(place) = served(&req.type_url) else {
            // Everything a proxy may have is in its snapshot, by type; a type
            // outside the proxy API is nothing it is entitled to.
            tracing::warn!(proxy = %self.node.id, type_url = req.type_url, "request for an unknown resource type refused");
            return Ok(());
        };
        let type_url = crate::types::SERVED[place];
        if req.response_nonce.is_empty() {
            // A (re)subscription: a proxy that reconnects says which version it
            // has, so an unchanged config is not sent again.
            let mut sent = Sent {
                version: Some(req.version_info.clone()).filter(|v| !v.is_empty()),
                ..Default::default()
            };
            if let Some(v) = &sent.version {
                // Versions name content: a proxy at the current version holds the current set.
                let current = self.config.borrow().types.get(type_url).cloned();
                sent.base = current.filter(|c| &c.version == v);
                // What it already has counts as sent and acknowledged.
                self.provider.sent(&self.node, type_url, v);
                self.provider.ack(&self.node, type_url, v);
            }
            self.subscribed[place] = Some(sent);
            let snapshot = self.config.borrow().clone();
            return self.push_type(place, &snapshot).await;
        }
        self.awaiting.remove(&req.response_nonce);
        // The last answer awaited releases the permit; when no session
        // holds one, no push is in flight.
        if self.awaiting.is_empty()
            && self.permit.take().is_some()
            && self.pushes.available_permits() == self.concurrent_pushes
        {
            self.provider.pushes_settled();
        }
        let Some(sent) = self.subscribed[place].as_mut() else {
            return Ok(());
        };
        if sent.nonce != req.response_nonce {
            // An answer to a response that has since been superseded. If it
            // was a NACK, the proxy lacks what that response carried, and
            // partial responses sent after it assumed otherwise: resend the
            // whole set.
            if req.error_detail.is_some() && sent.partial {
                sent.base = None;
                sent.version = None;
                sent.from = None;
                let snapshot = self.config.borrow().clone();
                return self.push_type(place, &snapshot).await;
            }
            return Ok(());
        }
        match &req.error_detail {
            Some(err) => {
                // The proxy kept its previous set, which may not be `base`.
                sent.base = None;
                self.provider
                    .nack(&self.node, type_url, &req.version_info, &err.message)
            }
            None => self.provider.ack(&self.node, type_url, &req.version_info),
        }
        Ok(())
    }

    /// An on-demand proxy's forgets, then its asks, go to the provider; only
    /// refusals (names that are no host, hosts it may not have) are answered.
    async fn ask(&mut self, forget: Vec<String>, ask: Vec<String>) -> Result<(), ()> {
        let (forget, mut refused) = on_demand::screen(forget);
        if !forget.is_empty() {
            self.provider.forget(&self.node, forget).await;
        }
        let (hosts, more) = on_demand::screen(ask);
        refused.extend(more);
        if !hosts.is_empty() {
            refused.extend(self.provider.ask(&self.node, hosts).await);
        }
        if refused.is_empty() {
            return Ok(());
        }
        for r in &refused {
            tracing::info!(proxy = %self.node.id, host = %r.host, reason = %r.reason, "on-demand host refused");
        }
        self.nonce += 1;
        let response = on_demand::refusals(self.nonce, refused);
        self.tx.send(Box::new(response)).await.map_err(|_| ())
    }

    async fn push_changed(&mut self) -> Result<(), ()> {
        // One snapshot for all types, marked seen once: a change arriving
        // while they are sent (a push waits for a permit and for the stream)
        // wakes the session again, and is not taken as seen by the next type.
        let snapshot = self.config.borrow_and_update().clone();
        for place in 0..self.subscribed.len() {
            self.push_type(place, &snapshot).await?;
        }
        Ok(())
    }

    /// Sends the type at `place` in [`crate::types::SERVED`] if the proxy
    /// subscribed to it and its current version differs from `snapshot`'s.
    async fn push_type(&mut self, place: usize, snapshot: &ProxySnapshot) -> Result<(), ()> {
        let Some(sent) = self.subscribed[place].as_mut() else {
            return Ok(());
        };
        let type_url = crate::types::SERVED[place];
        let Some(current) = snapshot.types.get(type_url) else {
            return Ok(());
        };
        if sent.has(current) {
            return Ok(());
        }
        let whole;
        let whole_forms;
        let current = match &self.whole_forms {
            Some(forms) => {
                whole_forms = forms.of(type_url, current);
                &whole_forms
            }
            None => current,
        };
        let current = match &self.whole_routes {
            Some(joined) if type_url == crate::types::ROUTE_CONFIG => {
                whole = joined.get(current);
                &whole
            }
            _ => current,
        };
        let accepts_partial = self.accepts_partial;
        let Some(sent) = self.subscribed[place].as_mut() else {
            return Ok(());
        };
        let base = sent
            .base
            .replace(current.clone())
            .filter(|_| accepts_partial);
        // A small push another stream made already costs this one nothing
        // to hold (its bodies are shared): an endpoint change reaches every
        // proxy of a scope at once instead of a permit's worth at a time.
        let made = self
            .responses
            .made(base.as_ref(), current, accepts_partial)
            .filter(|push| push.iter().map(Bytes::len).sum::<usize>() <= UNTHROTTLED_BYTES);
        let push = match made {
            Some(push) => push,
            None => {
                if self.permit.is_none() {
                    self.permit = Some(self.pushes.clone().acquire_owned().await.map_err(|_| ())?);
                }
                self.responses
                    .get(base.as_ref(), current, accepts_partial, || {
                        encode_push(type_url, base.as_deref(), current, accepts_partial)
                    })
            }
        };
        let first = self.nonce + 1;
        self.nonce += push.len() as u64;
        // Only the last piece is answered.
        let last = self.nonce.to_string();
        sent.version = Some(current.version.clone());
        sent.nonce = last.clone();
        sent.partial = base.is_some();
        self.awaiting.insert(last);
        self.provider.sent(&self.node, type_url, &current.version);
        for (i, body) in push.iter().enumerate() {
            let response = EncodedResponse {
                nonce: (first + i as u64).to_string(),
                body: body.clone(),
            };
            self.tx.send(Box::new(response)).await.map_err(|_| ())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
