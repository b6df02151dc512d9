//! The listeners the proxy has bound, reconciled with each new config: new
//! ones are bound, removed ones closed, kept ones untouched (their
//! connections live on; a changed spec applies to new requests). Nothing is
//! bound before the first complete config.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::capture::CapturePorts;
use crate::capture::inbound::VirtualInbound;
use crate::config::ConfigStore;
use crate::http::forward::LocalApp;
use crate::http::{Conn, ListenerRt, Shared};
use crate::lb::upstream::ConnSettings;
use crate::limits::Limits;
use crate::snapshot::mtls::MtlsMode;
use crate::snapshot::{Direction, ListenerSpec, Serve, Snapshot};
use crate::tcp;
use crate::telemetry::meta::PeerMeta;
use crate::tls::PeerIdentity;
use crate::tls::inbound::{self, Accepted};
use crate::tls::io::{DownstreamIo, MaybeTls};

mod activity;
mod whole;
use activity::{Activity, Tracked, until_drained};
pub(crate) use whole::client_logs;
use whole::{serve_l4, tcp_allowed, tcp_log};

/// What the admin server reports about the data plane.
#[derive(Default)]
pub struct Status {
    /// The first config is applied and every listener is bound.
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    listeners: Mutex<Vec<ListenerStatus>>,
}

impl Status {
    pub fn listeners(&self) -> Vec<ListenerStatus> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub address: SocketAddr,
    pub direction: Direction,
    pub serve: Serve,
    /// Why the listener is not bound (it is retried every second).
    pub error: Option<String>,
}

/// The name of the explicit HTTP proxy listener for the application's outbound calls.
pub const OUTBOUND_PROXY: &str = "outbound_proxy";

/// Held by every HTTP connection: tells it to drain, and (through the
/// channel's sender count) tells the drain when all connections are gone.
#[derive(Clone)]
pub(crate) struct Drain {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
    /// Set when a request ends: what it held is freed (see [`release_memory`]).
    freed: Arc<AtomicBool>,
}

/// How often memory freed by finished requests is handed back to the OS.
const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// Hands the memory that requests freed back to the OS, at most once per
/// interval, and the memory config updates freed when an update put its
/// release off (see `ConfigStore::release_after_update`) within a second.
/// A burst of concurrent requests leaves megabytes of free chunks (buffers,
/// connection state) in the allocator's arenas, which glibc's malloc keeps
/// resident unless asked; asked, the proxy's RSS returns to near idle after
/// the burst. A walk of the heap (milliseconds), skipped when nothing was
/// freed since the last time.
pub(crate) async fn release_memory(freed: Arc<AtomicBool>, store: Arc<ConfigStore>) {
    let mut requests = tokio::time::interval(RELEASE_INTERVAL);
    let mut updates = tokio::time::interval(crate::config::MIN_BETWEEN_UPDATE_RELEASES);
    for every in [&mut requests, &mut updates] {
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let due = tokio::select! {
            _ = requests.tick() => freed.swap(false, Ordering::Relaxed),
            _ = updates.tick() => store.take_pending_release(),
        };
        if due {
            store.release_freed_memory();
        }
    }
}

struct Bound {
    rt: Arc<ArcSwap<ListenerRt>>,
    /// Dropping it stops the accept loop.
    _stop: oneshot::Sender<()>,
}

/// Runs until `drain` turns true, then stops accepting and gives open
/// connections up to `drain_timeout` to finish their requests.
pub async fn run(
    shared: Arc<Shared>,
    freed: Arc<AtomicBool>,
    outbound: Option<SocketAddr>,
    capture: Option<CapturePorts>,
    status: Arc<Status>,
    mut drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let mut changes = shared.store.subscribe();
    let (alive_tx, mut all_closed) = mpsc::channel::<()>(1);
    let conn_drain = Drain {
        signal: drain.clone(),
        _alive: alive_tx,
        freed,
    };
    let mut bound: HashMap<SocketAddr, Bound> = HashMap::new();
    let captured = capture.map(|ports| Captured {
        ports,
        inbound: Arc::default(),
    });
    let mut current: Option<Arc<Snapshot>> = changes.borrow_and_update().clone();
    loop {
        let all_bound = match &current {
            Some(snapshot) => {
                reconcile(
                    snapshot,
                    outbound,
                    captured.as_ref(),
                    &shared,
                    &conn_drain,
                    &mut bound,
                    &status,
                )
                .await
            }
            None => true,
        };
        status
            .ready
            .store(current.is_some() && all_bound, Ordering::Release);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                current = changes.borrow_and_update().clone();
            }
            // A listener that failed to bind (port taken) is tried again.
            _ = tokio::time::sleep(Duration::from_secs(1)), if !all_bound => {}
            () = until_true(&mut drain) => break,
        }
    }
    let open = bound.len();
    bound.clear();
    drop(conn_drain);
    tracing::info!(listeners = open, timeout = ?drain_timeout, "draining: no longer accepting connections");
    // recv() yields None once every connection has dropped its sender.
    match tokio::time::timeout(drain_timeout, all_closed.recv()).await {
        Ok(_) => tracing::info!("drained: all connections closed"),
        Err(_) => tracing::warn!("drain timeout reached; closing the remaining connections"),
    }
}

/// Capture is on: the listeners of captured traffic, and the inbound
/// listeners they hand connections to by original port (not bound).
struct Captured {
    ports: CapturePorts,
    inbound: Arc<VirtualInbound>,
}

async fn reconcile(
    snapshot: &Snapshot,
    outbound: Option<SocketAddr>,
    captured: Option<&Captured>,
    shared: &Arc<Shared>,
    drain: &Drain,
    bound: &mut HashMap<SocketAddr, Bound>,
    status: &Status,
) -> bool {
    let mut desired = snapshot.listeners.clone();
    if let Some(addr) = outbound {
        desired.push(ListenerSpec {
            name: OUTBOUND_PROXY.into(),
            bind: addr,
            direction: Direction::Outbound,
            serve: Serve::Http,
            app_http2: false,
            app_port: 0,
            route_config: "".into(),
            mtls: MtlsMode::Disable,
            gateway_tls: None,
            https_redirect: false,
            path_normalization: snapshot.path_normalization,
            num_trusted_proxies: 0,
        });
    }
    if let Some(c) = captured {
        desired.extend(crate::capture::listener_specs(
            &c.ports,
            snapshot.path_normalization,
        ));
    }
    bound.retain(|addr, _| {
        let keep = desired.iter().any(|d| d.bind == *addr);
        if !keep {
            tracing::info!(address = %addr, "listener removed; closing it");
        }
        keep
    });
    let mut statuses = Vec::with_capacity(desired.len());
    let mut all_bound = true;
    for spec in desired {
        let mut st = ListenerStatus {
            name: spec.name.to_string(),
            address: spec.bind,
            direction: spec.direction,
            serve: spec.serve,
            error: None,
        };
        // With capture, an inbound port is served through 15006: not bound
        // (the application itself listens on it in its pod).
        let virtual_port = captured.is_some()
            && spec.direction == Direction::Inbound
            && &*spec.name != crate::capture::VIRTUAL_INBOUND;
        // Under capture the proxy calls the application where the client
        // meant to reach it, the pod's address, as Istio (1.10 and later)
        // does: an application listening only on 127.0.0.1 is not reachable
        // from outside its pod. Otherwise, at the application's address.
        let (app_addr, source) = if virtual_port {
            let ip = spec.bind.ip();
            (
                SocketAddr::new(ip, spec.app_port),
                Some(crate::capture::inbound::passthrough_source(ip)),
            )
        } else {
            (SocketAddr::new(shared.app_ip, spec.app_port), None)
        };
        // The same application keeps its pool (and its warm connections).
        let app = match bound.get(&spec.bind).map(|b| b.rt.load_full()) {
            Some(old) if old.app.addr == app_addr && old.app.source == source => old.app.clone(),
            _ => match LocalApp::new(app_addr, source, ConnSettings::from_limits(&shared.limits)) {
                Some(app) => Arc::new(app),
                None => continue,
            },
        };
        let authz = snapshot.authz.get(&spec.bind).cloned().unwrap_or_default();
        let service = snapshot.inbound_services.get(&spec.bind).cloned();
        let rate_limit = snapshot.rate_limits.get(&spec.bind).cloned();
        let global_rate_limit = snapshot.global_rate_limits.get(&spec.bind).cloned();
        let rt = ListenerRt {
            spec,
            app,
            authz,
            service,
            rate_limit,
            global_rate_limit,
        };
        if let Some(b) = bound.get(&rt.spec.bind) {
            let old = b.rt.load();
            if old.spec != rt.spec
                || old.authz != rt.authz
                || old.service != rt.service
                || !same_limit(&old.rate_limit, &rt.rate_limit)
                || old.global_rate_limit != rt.global_rate_limit
            {
                b.rt.store(Arc::new(rt));
            }
        } else if virtual_port {
            let (stop_tx, _) = oneshot::channel();
            let rt = Arc::new(ArcSwap::from_pointee(rt));
            bound.insert(st.address, Bound { rt, _stop: stop_tx });
        } else {
            match crate::capture::bind(&rt.spec).await {
                Ok(listener) => {
                    tracing::info!(name = %rt.spec.name, address = %rt.spec.bind, direction = ?rt.spec.direction, "listening");
                    let (stop_tx, stop_rx) = oneshot::channel();
                    let rt = Arc::new(ArcSwap::from_pointee(rt));
                    tokio::spawn(accept_loop(
                        listener,
                        rt.clone(),
                        shared.clone(),
                        drain.clone(),
                        stop_rx,
                        captured.map(|c| c.inbound.clone()),
                    ));
                    bound.insert(st.address, Bound { rt, _stop: stop_tx });
                }
                Err(e) => {
                    tracing::warn!(name = %rt.spec.name, address = %rt.spec.bind, error = %e, "cannot bind listener; retrying");
                    st.error = Some(e.to_string());
                    all_bound = false;
                }
            }
        }
        statuses.push(st);
    }
    *status.listeners.lock().unwrap_or_else(|e| e.into_inner()) = statuses;
    if let Some(c) = captured {
        c.inbound.publish(
            bound
                .values()
                .filter(|b| b.rt.load().spec.direction == Direction::Inbound)
                .map(|b| b.rt.clone()),
        );
    }
    all_bound
}

async fn accept_loop(
    listener: TcpListener,
    rt: Arc<ArcSwap<ListenerRt>>,
    shared: Arc<Shared>,
    drain: Drain,
    mut stop: oneshot::Receiver<()>,
    captured_inbound: Option<Arc<VirtualInbound>>,
) {
    let builder = server_builder(&shared.limits);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let now = rt.load();
        if let Some(inbound) = &captured_inbound {
            match &*now.spec.name {
                crate::capture::VIRTUAL_OUTBOUND => {
                    let (rt, shared, builder, drain) =
                        (rt.clone(), shared.clone(), builder.clone(), drain.clone());
                    tokio::spawn(async move {
                        crate::capture::outbound::serve(stream, peer, &rt, &shared, &builder, drain)
                            .await
                    });
                    continue;
                }
                crate::capture::VIRTUAL_INBOUND => {
                    match inbound.for_connection(&stream) {
                        Some(port_rt) => {
                            serve_inbound(stream, peer, port_rt, &shared, &builder, drain.clone())
                        }
                        None => {
                            tokio::spawn(crate::capture::inbound::passthrough(
                                stream,
                                peer,
                                shared.clone(),
                            ));
                        }
                    }
                    continue;
                }
                _ => {}
            }
        }
        if now.spec.serve == Serve::L4 {
            tokio::spawn(serve_l4(stream, peer, now.spec.bind, shared.clone()));
            continue;
        }
        if let Some(tls) = now.spec.gateway_tls.clone() {
            let (rt, shared, builder, drain) =
                (rt.clone(), shared.clone(), builder.clone(), drain.clone());
            tokio::spawn(async move {
                let Some(tls) = tls.accept(stream, peer).await else {
                    return;
                };
                // The connection routes by its server's route config (by
                // name: route changes apply) for its lifetime.
                let route_config = (!tls.route_config.is_empty()).then_some(tls.route_config);
                let client = Downstream {
                    peer,
                    identity: tls.identity,
                    sni: tls.sni,
                    route_config,
                    original_dst: None,
                };
                serve_http(
                    MaybeTls::Tls(Box::new(tls.stream)),
                    client,
                    &rt,
                    &shared,
                    &builder,
                    drain,
                );
            });
            continue;
        }
        if now.spec.direction != Direction::Inbound {
            serve_plain(stream, peer, &rt, &shared, &builder, drain.clone());
            continue;
        }
        drop(now);
        serve_inbound(stream, peer, rt.clone(), &shared, &builder, drain.clone());
    }
}

/// The same bucket (not only an equal config: a new bucket starts full).
fn same_limit<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// An inbound connection: PeerAuthentication decides first (mesh TLS,
/// plaintext, or refused), then the port's protocol.
fn serve_inbound(
    stream: TcpStream,
    peer: SocketAddr,
    rt: Arc<ArcSwap<ListenerRt>>,
    shared: &Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    drain: Drain,
) {
    {
        let (shared, builder) = (shared.clone(), builder.clone());
        tokio::spawn(async move {
            let spec = rt.load_full();
            let mesh = shared.store.mesh_tls().map(Arc::as_ref);
            match inbound::accept(stream, peer, &spec.spec, mesh).await {
                Some(Accepted::Plain(stream)) => {
                    serve_plain(stream, peer, &rt, &shared, &builder, drain);
                }
                Some(Accepted::Mtls {
                    stream,
                    peer: identity,
                    http,
                }) => {
                    let sni: Option<Arc<str>> = stream.get_ref().1.server_name().map(Arc::from);
                    // Mesh clients name HTTP by ALPN; without it, the bytes go through.
                    match (spec.spec.serve, http) {
                        (Serve::Tcp, _) | (Serve::Sniff, false) => {
                            let principal = identity.as_ref().map(|i| i.id().to_string());
                            if tcp_allowed(
                                &shared,
                                &spec,
                                peer,
                                principal.as_deref(),
                                sni.as_deref(),
                            )
                            .await
                            {
                                let meta = identity.as_ref().map(|i| {
                                    let snapshot = shared.store.current();
                                    match snapshot.as_deref() {
                                        Some(s) => s.peers.find(peer.ip(), i.id()),
                                        None => PeerMeta::from_identity(i.id()).interned(),
                                    }
                                });
                                let log =
                                    tcp_log(&shared, &spec, peer, spec.app.addr).map(|mut l| {
                                        l.source_principal = principal.clone();
                                        l.requested_server_name = sni.clone();
                                        l
                                    });
                                let stream = shared
                                    .telemetry
                                    .meter_inbound_tcp(stream, meta, spec.service.clone())
                                    .with_log(log);
                                tcp::forward_from(stream, spec.app.source, spec.app.addr).await;
                            }
                        }
                        _ => {
                            let client = Downstream {
                                peer,
                                identity,
                                sni,
                                route_config: None,
                                original_dst: None,
                            };
                            serve_http(MaybeTls::Tls(stream), client, &rt, &shared, &builder, drain)
                        }
                    }
                }
                None => {}
            }
        });
    }
}

/// The HTTP/1 and HTTP/2 server settings of every downstream connection.
fn server_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Timers bound how long a client may take to send its headers and let
    // HTTP/2 keep-alive work. Heads beyond the limits are answered 431 by
    // hyper (HTTP/1) and h2 (HTTP/2, which then resets the stream).
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(limits.max_headers)
        .max_buf_size(limits.http1_buffer_bytes());
    // The connection's receive window bounds what all its streams together
    // can make the proxy buffer; one stream may use a quarter of it.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_request_headers_bytes).unwrap_or(u32::MAX))
        .initial_connection_window_size(limits.connection_buffer_bytes)
        .initial_stream_window_size((limits.connection_buffer_bytes / 4).max(65_535))
        .max_send_buf_size(limits.connection_buffer_bytes as usize);
    builder
}

/// A plaintext connection, by the listener's protocol.
pub(crate) fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    rt: &Arc<ArcSwap<ListenerRt>>,
    shared: &Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    drain: Drain,
) {
    let listener_now = rt.load();
    let (source, app) = (listener_now.app.source, listener_now.app.addr);
    match listener_now.spec.serve {
        Serve::Http => serve_http(
            MaybeTls::Plain(stream),
            Downstream::plain(peer),
            rt,
            shared,
            builder,
            drain,
        ),
        Serve::Tcp => {
            let (rt, shared) = (rt.clone(), shared.clone());
            tokio::spawn(async move {
                let now = rt.load_full();
                if tcp_allowed(&shared, &now, peer, None, None).await {
                    let stream = shared
                        .telemetry
                        .meter_inbound_tcp(stream, None, now.service.clone())
                        .with_log(tcp_log(&shared, &now, peer, app));
                    tcp::forward_from(stream, source, app).await;
                }
            });
        }
        Serve::L4 => {
            tokio::spawn(serve_l4(
                stream,
                peer,
                listener_now.spec.bind,
                shared.clone(),
            ));
        }
        Serve::Sniff => {
            let (rt, shared, builder) = (rt.clone(), shared.clone(), builder.clone());
            tokio::spawn(async move {
                if crate::sniff::detect(&stream).await.is_http() {
                    serve_http(
                        MaybeTls::Plain(stream),
                        Downstream::plain(peer),
                        &rt,
                        &shared,
                        &builder,
                        drain,
                    );
                } else if tcp_allowed(&shared, &rt.load_full(), peer, None, None).await {
                    let now = rt.load();
                    let stream = shared
                        .telemetry
                        .meter_inbound_tcp(stream, None, now.service.clone())
                        .with_log(tcp_log(&shared, &now, peer, app));
                    tcp::forward_from(stream, source, app).await;
                }
            });
        }
    }
}

/// Who is at the other end of a downstream connection.
pub(crate) struct Downstream {
    pub(crate) peer: SocketAddr,
    /// The verified mesh peer of an mTLS connection.
    identity: Option<Arc<PeerIdentity>>,
    /// The server name the client asked for in its TLS handshake.
    sni: Option<Arc<str>>,
    /// A gateway TLS server's route config (see [`Conn::route_config`]).
    route_config: Option<Arc<str>>,
    /// A captured connection's original destination.
    pub(crate) original_dst: Option<SocketAddr>,
}

impl Downstream {
    pub(crate) fn plain(peer: SocketAddr) -> Self {
        Downstream {
            peer,
            identity: None,
            sni: None,
            route_config: None,
            original_dst: None,
        }
    }
}

pub(crate) fn serve_http(
    stream: DownstreamIo,
    client: Downstream,
    rt: &Arc<ArcSwap<ListenerRt>>,
    shared: &Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    drain: Drain,
) {
    let Downstream {
        peer,
        identity,
        sni,
        route_config,
        original_dst,
    } = client;
    let own = shared.store.mesh_tls().map(|m| m.id());
    shared
        .telemetry
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        listener: rt.clone(),
        peer,
        mesh_peer: identity.map(|id| {
            let snapshot = shared.store.current();
            let peers = snapshot.as_deref().map(|s| &*s.peers);
            inbound::MeshPeer::new(id, own, peer, peers)
        }),
        sni,
        route_config,
        original_dst,
        rate_limit_buckets: Default::default(),
    });
    let inbound = rt.load().spec.direction == Direction::Inbound;
    let activity = Arc::new(Activity::new(drain.freed.clone()));
    let in_flight = activity.clone();
    let max_headers = shared.limits.max_headers;
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        if req.headers().len() > max_headers {
            req.extensions_mut().insert(crate::http::TooManyHeaders);
        } else if inbound {
            inbound::decorate(req.headers_mut(), conn.mesh_peer.as_ref());
        }
        let request = in_flight.start();
        let handled = crate::http::handle(req, conn.clone());
        // Boxed: hyper spawns a task per HTTP/2 stream, and the request's
        // state is kilobytes; a task holding a pointer is cheap to create.
        Box::pin(async move {
            let response = handled.await?;
            // In flight until its response body has been sent (or dropped).
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                body,
                _request: request,
            }))
        })
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let idle_timeout = shared.limits.downstream_idle_timeout;
    tokio::spawn(until_drained(
        connection,
        peer,
        drain,
        activity,
        idle_timeout,
    ));
}

/// Resolves once the flag is (or was) set. Also when its sender is gone:
/// nobody can clear it any more, so the proxy is going away.
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
