//! Connections to one endpoint of one cluster, with Envoy's connection pool
//! semantics, because the circuit breakers are defined in its terms:
//! - HTTP/1.1: one request per connection at a time. A request that finds
//!   no idle connection waits as *pending* (bounded by `max_pending`) while
//!   a connection is opened for it, if `max_connections` allows, else until
//!   one is given back.
//! - HTTP/2: requests share one connection; they wait as pending only while
//!   it is being opened.
//! - A request only becomes *active* (bounded by `max_requests`) once it has
//!   a connection.
//! - An endpoint with no connection may always open one, whatever the
//!   cluster-wide limit (else its pending requests could wait forever).
//!
//! Connections are opened by tasks of their own, so that a request that gives
//! up does not abort a connection others may use; each connection's driver
//! task closes it when it has been idle too long or lived too long.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;
use tokio::time::Instant;

use arc_swap::ArcSwapOption;

use super::breaker::{Breakers, Permit, Resource};
use crate::failure::Failure;
use crate::req_body::ReqBody;
use crate::tls::io::UpstreamIo;
use crate::tls::outbound::Upstream;

mod dial;
mod settings;

pub use settings::{ConnSettings, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT};

/// How often a request may find its connection closed under it (the
/// upstream closed an idle keep-alive connection) before it gives up.
const STALE_CONNECTION_TRIES: usize = 3;

/// Why a request got no response from this endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// A circuit breaker refused: the request was not sent.
    Overflow,
    Failure(Failure),
}

/// The connection pools of one endpoint in one cluster.
pub struct EndpointPool {
    authority: Authority,
    /// How new connections are secured (mTLS, TLS, plaintext); set with each config.
    tls: ArcSwapOption<Upstream>,
    /// The local address connections are made from (Envoy's
    /// `upstream_bind_config`); `None`: the kernel's choice.
    source: Option<IpAddr>,
    state: Mutex<State>,
}

struct State {
    settings: ConnSettings,
    breakers: Breakers,
    next_id: u64,
    /// Connections with an id up to this one were secured by a TLS setting
    /// that has since changed: they take no new request.
    retired_up_to: u64,
    h1: H1State,
    h2: H2State,
}

type Waiter<C> = oneshot::Sender<Result<C, Failure>>;

#[derive(Default)]
struct H1State {
    idle: Vec<H1Conn>,
    /// Open and opening connections.
    open: u32,
    connecting: u32,
    waiters: VecDeque<Waiter<H1Conn>>,
}

struct H1Conn {
    sender: http1::SendRequest<ReqBody>,
    id: u64,
    created: Instant,
    served: u32,
    idle_since: Instant,
}

#[derive(Default)]
struct H2State {
    /// Connections that take new streams.
    conns: Vec<H2Conn>,
    open: u32,
    connecting: bool,
    waiters: VecDeque<Waiter<H2Conn>>,
}

#[derive(Clone)]
struct H2Conn {
    sender: http2::SendRequest<ReqBody>,
    meta: Arc<H2Meta>,
}

struct H2Meta {
    id: u64,
    created: Instant,
    served: AtomicU32,
    active: AtomicU32,
    idle_since: Mutex<Instant>,
}

impl H2Meta {
    fn is_idle_for(&self, d: Duration, now: Instant) -> bool {
        self.active.load(Ordering::Acquire) == 0
            && now.duration_since(*self.idle_since.lock().unwrap_or_else(|e| e.into_inner())) >= d
    }
}

/// What a request holds while its response is in flight: its place among
/// the cluster's active requests, and its connection.
pub struct Lease {
    _request: Permit,
    conn: LeasedConn,
}

enum LeasedConn {
    /// Given back when the response has been read to its end.
    H1 {
        pool: Arc<EndpointPool>,
        conn: H1Conn,
    },
    H2(Arc<H2Meta>),
    /// Switched protocols: the connection now belongs to the tunnel.
    Upgraded,
}

impl Lease {
    /// Ends the request: an HTTP/1 connection whose response was read to its
    /// end goes back to the pool; one abandoned mid-response is closed (its
    /// state is unknown).
    pub fn finish(self, response_complete: bool) {
        match self.conn {
            LeasedConn::H1 { pool, conn } => {
                if response_complete {
                    pool.checkin_h1(conn);
                }
            }
            LeasedConn::H2(meta) => {
                if meta.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                    *meta.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                }
            }
            LeasedConn::Upgraded => {}
        }
    }
}

impl EndpointPool {
    pub fn new(authority: Authority, settings: ConnSettings, breakers: Breakers) -> Arc<Self> {
        EndpointPool::from_source(authority, None, settings, breakers)
    }

    /// A pool whose connections are made from `source` (any port).
    pub fn from_source(
        authority: Authority,
        source: Option<IpAddr>,
        settings: ConnSettings,
        breakers: Breakers,
    ) -> Arc<Self> {
        Arc::new(EndpointPool {
            authority,
            tls: ArcSwapOption::empty(),
            source,
            state: Mutex::new(State {
                settings,
                breakers,
                next_id: 0,
                retired_up_to: 0,
                h1: H1State::default(),
                h2: H2State::default(),
            }),
        })
    }

    /// Where this pool's connections go.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// A config update may change the limits and settings; connections stay.
    pub fn configure(&self, settings: ConnSettings, breakers: Breakers) {
        let mut st = self.lock();
        st.settings = settings;
        st.breakers = breakers;
    }

    /// How connections opened from now on are secured (`None`: plaintext).
    /// `changed`: the cluster's TLS setting is not the one the open
    /// connections were made with (another CA, client certificate or
    /// mode), so none of them takes another request — as Envoy drains a
    /// cluster's connections when the cluster changes. Requests in flight
    /// finish on theirs.
    pub fn set_tls(&self, tls: Option<Arc<Upstream>>, changed: bool) {
        self.tls.store(tls);
        if changed {
            let mut st = self.lock();
            st.retired_up_to = st.next_id;
            // Dropped, which closes them.
            st.h1.idle.clear();
            st.h2.conns.clear();
        }
    }

    /// How connections to this endpoint are secured.
    pub fn tls(&self) -> Option<Arc<Upstream>> {
        self.tls.load_full()
    }

    /// A connection of its own for a proxied TCP stream (captured TCP and
    /// TLS, a CONNECT tunnel): opened as the pool opens its HTTP ones (the
    /// same source address and connect timeout) and secured for TCP, but
    /// not pooled — it belongs to the stream.
    pub async fn connect_tcp(&self) -> Result<UpstreamIo, Failure> {
        let settings = self.lock().settings;
        let tls = self.tls.load_full();
        let stream = self.dial(&settings, tls.is_some()).await?;
        crate::tls::outbound::secure_tcp(stream, &self.authority, tls.as_deref()).await
    }

    /// A TCP connection to the endpoint, from the address [`dial::source_for`] says.
    async fn dial(
        &self,
        settings: &ConnSettings,
        secured: bool,
    ) -> Result<tokio::net::TcpStream, Failure> {
        let source = dial::source_for(
            &self.authority,
            self.source,
            settings.loopback_source,
            secured,
        );
        dial::tcp(&self.authority, source, settings.connect_timeout).await
    }

    /// A connection ready for HTTP/1.1 or (`http2`) HTTP/2.
    async fn connect(
        &self,
        settings: &ConnSettings,
        http2: bool,
    ) -> Result<hyper_util::rt::TokioIo<UpstreamIo>, Failure> {
        let tls = self.tls.load_full();
        let stream = self.dial(settings, tls.is_some()).await?;
        crate::tls::outbound::secure(stream, &self.authority, tls.as_deref(), http2)
            .await
            .map(hyper_util::rt::TokioIo::new)
    }

    /// The settings new connections are made with (for tests).
    #[cfg(test)]
    pub(crate) fn settings(&self) -> ConnSettings {
        self.lock().settings
    }

    /// Connections open (or opening), HTTP/1 and HTTP/2.
    pub fn open_connections(&self) -> u32 {
        let st = self.lock();
        st.h1.open + st.h2.open
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoned only if a holder panicked; the counts are still right.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` (origin-form URI for HTTP/1, absolute for HTTP/2) on a
    /// connection of this pool.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<ReqBody>,
        http2: bool,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        if http2 {
            self.send_h2(req).await
        } else {
            self.send_h1(req).await
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        for _ in 0..STALE_CONNECTION_TRIES {
            let mut conn = self.checkout_h1().await?;
            let Some(permit) = self.breakers().try_acquire(Resource::Requests) else {
                self.checkin_h1(conn);
                return Err(SendError::Overflow);
            };
            conn.served += 1;
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    // After a protocol switch the connection belongs to the tunnel.
                    let conn = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        LeasedConn::Upgraded
                    } else {
                        LeasedConn::H1 {
                            pool: self.clone(),
                            conn,
                        }
                    };
                    return Ok((
                        resp,
                        Lease {
                            _request: permit,
                            conn,
                        },
                    ));
                }
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request went out:
                    // nothing was sent, so another connection may take it.
                    Some(back) => req = back,
                    None => return Err(SendError::Failure(classify(e.error()))),
                },
            }
        }
        Err(SendError::Failure(Failure::Reset))
    }

    async fn send_h2(
        self: &Arc<Self>,
        mut req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        for _ in 0..STALE_CONNECTION_TRIES {
            let mut conn = self.checkout_h2().await?;
            let Some(permit) = self.breakers().try_acquire(Resource::Requests) else {
                return Err(SendError::Overflow);
            };
            conn.meta.active.fetch_add(1, Ordering::AcqRel);
            let lease = Lease {
                _request: permit,
                conn: LeasedConn::H2(conn.meta.clone()),
            };
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, lease)),
                Err(mut e) => {
                    lease.finish(false);
                    match e.take_message() {
                        Some(back) => {
                            self.forget_h2(conn.meta.id);
                            req = back;
                        }
                        None => return Err(SendError::Failure(classify(e.error()))),
                    }
                }
            }
        }
        Err(SendError::Failure(Failure::Reset))
    }

    fn breakers(&self) -> Breakers {
        self.lock().breakers.clone()
    }

    // ---------- HTTP/1.1 ----------

    async fn checkout_h1(self: &Arc<Self>) -> Result<H1Conn, SendError> {
        loop {
            let wait = {
                let mut st = self.lock();
                let now = Instant::now();
                let settings = st.settings;
                let mut found = None;
                while let Some(c) = st.h1.idle.pop() {
                    // Anything else is dropped here, which closes it.
                    if !c.sender.is_closed() && settings.fresh(c.created, c.served, now) {
                        found = Some(c);
                        break;
                    }
                }
                match found {
                    Some(c) => Ok(c),
                    None => {
                        let Some(pending) = st.breakers.try_acquire(Resource::Pending) else {
                            return Err(SendError::Overflow);
                        };
                        let (tx, rx) = oneshot::channel();
                        st.h1.waiters.push_back(tx);
                        self.open_h1_for_waiters(&mut st);
                        Err((rx, pending))
                    }
                }
            };
            let mut conn = match wait {
                Ok(c) => c,
                Err((rx, _pending)) => match rx.await {
                    Ok(Ok(c)) => c,
                    Ok(Err(f)) => return Err(SendError::Failure(f)),
                    Err(_) => return Err(SendError::Failure(Failure::Connect)),
                },
            };
            // A connection comes back as soon as its response has been read;
            // hyper may still be finishing with it.
            if conn.sender.ready().await.is_ok() {
                return Ok(conn);
            }
        }
    }

    /// Gives a connection to the first request waiting for one, or keeps it
    /// idle; one that may serve no more requests is closed.
    fn checkin_h1(&self, conn: H1Conn) {
        let mut st = self.lock();
        self.checkin_h1_locked(&mut st, conn);
    }

    fn checkin_h1_locked(&self, st: &mut State, mut conn: H1Conn) {
        let now = Instant::now();
        if conn.sender.is_closed()
            || conn.id <= st.retired_up_to
            || !st.settings.fresh(conn.created, conn.served, now)
        {
            // Dropping it closes it; its driver then makes room for waiters.
            return;
        }
        while let Some(w) = st.h1.waiters.pop_front() {
            match w.send(Ok(conn)) {
                Ok(()) => return,
                // That request gave up waiting.
                Err(Ok(back)) => conn = back,
                Err(Err(_)) => return,
            }
        }
        conn.idle_since = now;
        st.h1.idle.push(conn);
    }

    /// Opens connections for the requests waiting, as far as the limits allow.
    fn open_h1_for_waiters(self: &Arc<Self>, st: &mut State) {
        st.h1.waiters.retain(|w| !w.is_closed());
        while (st.h1.connecting as usize) < st.h1.waiters.len() {
            let permit = if st.h1.open == 0 {
                st.breakers.force(Resource::Connections)
            } else {
                match st.breakers.try_acquire(Resource::Connections) {
                    Some(p) => p,
                    None => break,
                }
            };
            st.h1.open += 1;
            st.h1.connecting += 1;
            st.next_id += 1;
            let (id, settings) = (st.next_id, st.settings);
            tokio::spawn(self.clone().connect_h1(id, settings, permit));
        }
    }

    async fn connect_h1(self: Arc<Self>, id: u64, settings: ConnSettings, permit: Permit) {
        let connected = match self.connect(&settings, false).await {
            Ok(io) => http1::Builder::new()
                .handshake::<_, ReqBody>(io)
                .await
                .map_err(|_| Failure::Connect),
            Err(f) => Err(f),
        };
        let mut st = self.lock();
        st.h1.connecting -= 1;
        match connected {
            Ok((sender, connection)) => {
                tokio::spawn(drive(
                    Arc::downgrade(&self),
                    id,
                    false,
                    connection.with_upgrades(),
                    permit,
                ));
                let now = Instant::now();
                let conn = H1Conn {
                    sender,
                    id,
                    created: now,
                    served: 0,
                    idle_since: now,
                };
                self.checkin_h1_locked(&mut st, conn);
            }
            Err(failure) => {
                st.h1.open -= 1;
                drop(permit);
                // As Envoy purges its pending requests: those this connection
                // was opened for fail now instead of waiting for a retry of it.
                while st.h1.waiters.len() > st.h1.connecting as usize {
                    if let Some(w) = st.h1.waiters.pop_front() {
                        let _ = w.send(Err(failure));
                    }
                }
            }
        }
    }

    // ---------- HTTP/2 ----------

    async fn checkout_h2(self: &Arc<Self>) -> Result<H2Conn, SendError> {
        let rx = {
            let mut st = self.lock();
            let now = Instant::now();
            let settings = st.settings;
            st.h2.conns.retain(|c| {
                !c.sender.is_closed()
                    && settings.fresh(c.meta.created, c.meta.served.load(Ordering::Acquire), now)
            });
            if let Some(c) = st.h2.conns.first() {
                let c = c.clone();
                take_stream(&mut st, &c, settings);
                return Ok(c);
            }
            let Some(pending) = st.breakers.try_acquire(Resource::Pending) else {
                return Err(SendError::Overflow);
            };
            let (tx, rx) = oneshot::channel();
            st.h2.waiters.push_back(tx);
            self.open_h2_for_waiters(&mut st);
            (rx, pending)
        };
        match rx.0.await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(f)) => Err(SendError::Failure(f)),
            Err(_) => Err(SendError::Failure(Failure::Connect)),
        }
    }

    fn open_h2_for_waiters(self: &Arc<Self>, st: &mut State) {
        st.h2.waiters.retain(|w| !w.is_closed());
        if st.h2.connecting || st.h2.waiters.is_empty() {
            return;
        }
        let permit = if st.h2.open == 0 {
            st.breakers.force(Resource::Connections)
        } else {
            match st.breakers.try_acquire(Resource::Connections) {
                Some(p) => p,
                None => return,
            }
        };
        st.h2.open += 1;
        st.h2.connecting = true;
        st.next_id += 1;
        let (id, settings) = (st.next_id, st.settings);
        tokio::spawn(self.clone().connect_h2(id, settings, permit));
    }

    async fn connect_h2(self: Arc<Self>, id: u64, settings: ConnSettings, permit: Permit) {
        let buffer = settings.buffer_bytes;
        let connected = match self.connect(&settings, true).await {
            Ok(io) => http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_connection_window_size(buffer)
                .initial_stream_window_size((buffer / 4).max(65_535))
                .handshake::<_, ReqBody>(io)
                .await
                .map_err(|_| Failure::Connect),
            Err(f) => Err(f),
        };
        let mut st = self.lock();
        st.h2.connecting = false;
        match connected {
            Ok((sender, connection)) => {
                tokio::spawn(drive(Arc::downgrade(&self), id, true, connection, permit));
                let conn = H2Conn {
                    sender,
                    meta: Arc::new(H2Meta::new(id, Instant::now())),
                };
                let settings = st.settings;
                while let Some(w) = st.h2.waiters.pop_front() {
                    if w.is_closed() {
                        continue;
                    }
                    if !settings.fresh(
                        conn.meta.created,
                        conn.meta.served.load(Ordering::Acquire),
                        Instant::now(),
                    ) {
                        st.h2.waiters.push_front(w);
                        break;
                    }
                    take_stream(&mut st, &conn, settings);
                    let _ = w.send(Ok(conn.clone()));
                }
                if id > st.retired_up_to
                    && settings.fresh(
                        conn.meta.created,
                        conn.meta.served.load(Ordering::Acquire),
                        Instant::now(),
                    )
                {
                    st.h2.conns.push(conn);
                }
                // Waiters left over when the connection filled up get another.
                self.open_h2_for_waiters(&mut st);
            }
            Err(failure) => {
                st.h2.open -= 1;
                drop(permit);
                for w in st.h2.waiters.drain(..) {
                    let _ = w.send(Err(failure));
                }
            }
        }
    }

    /// Stops giving new streams to a connection that turned out closed.
    fn forget_h2(&self, id: u64) {
        self.lock().h2.conns.retain(|c| c.meta.id != id);
    }

    // ---------- connection drivers ----------

    /// Closes what has been idle or alive too long; says when to look again.
    fn reap(&self, id: u64, http2: bool) -> Option<Duration> {
        let mut st = self.lock();
        let now = Instant::now();
        let s = st.settings;
        let too_old = |created: Instant| s.max_duration.is_some_and(|d| now >= created + d);
        if http2 {
            st.h2.conns.retain(|c| {
                let idle = s.idle_timeout.is_some_and(|t| c.meta.is_idle_for(t, now));
                c.meta.id != id || !(too_old(c.meta.created) || idle)
            });
        } else {
            // Idle connections are a stack (the last given back is the next
            // taken): those below the `max_idle` on top are the excess.
            let excess = st.h1.idle.len().saturating_sub(s.max_idle as usize);
            if let Some(at) = st.h1.idle.iter().position(|c| c.id == id) {
                let c = &st.h1.idle[at];
                let idle_for = now.duration_since(c.idle_since);
                if too_old(c.created)
                    || s.idle_timeout.is_some_and(|t| idle_for >= t)
                    || (at < excess && idle_for >= s.excess_idle_after)
                {
                    // Dropping it closes it.
                    st.h1.idle.remove(at);
                }
            }
        }
        s.check_after(http2)
    }

    fn closed(self: &Arc<Self>, id: u64, http2: bool) {
        let mut st = self.lock();
        if http2 {
            st.h2.open -= 1;
            st.h2.conns.retain(|c| c.meta.id != id);
            self.open_h2_for_waiters(&mut st);
        } else {
            st.h1.open -= 1;
            st.h1.idle.retain(|c| c.id != id);
            // The slot it held may serve a request waiting for one.
            self.open_h1_for_waiters(&mut st);
        }
    }
}

impl H2Meta {
    fn new(id: u64, now: Instant) -> Self {
        H2Meta {
            id,
            created: now,
            served: AtomicU32::new(0),
            active: AtomicU32::new(0),
            idle_since: Mutex::new(now),
        }
    }
}

/// Counts a stream on `conn`; a connection that has served its share stops
/// taking new ones (it closes when its last stream ends).
fn take_stream(st: &mut State, conn: &H2Conn, settings: ConnSettings) {
    let served = conn.meta.served.fetch_add(1, Ordering::AcqRel) + 1;
    if !settings.fresh(conn.meta.created, served, Instant::now()) {
        let id = conn.meta.id;
        st.h2.conns.retain(|c| c.meta.id != id);
    }
}

/// Runs a connection until it closes, closing it when idle or old, then
/// gives its slot back.
async fn drive<F>(pool: Weak<EndpointPool>, id: u64, http2: bool, connection: F, permit: Permit)
where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut check = pool
        .upgrade()
        .and_then(|p| p.lock().settings.check_after(http2));
    loop {
        let Some(after) = check else {
            let _ = connection.as_mut().await;
            break;
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep(after) => {
                check = match pool.upgrade() {
                    Some(p) => p.reap(id, http2),
                    None => None,
                };
            }
        }
    }
    drop(permit);
    if let Some(p) = pool.upgrade() {
        p.closed(id, http2);
    }
}

/// What went wrong with a request hyper could not complete.
fn classify(err: &hyper::Error) -> Failure {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Failure::Refused;
            }
            break;
        }
        source = e.source();
    }
    Failure::Reset
}

#[cfg(test)]
mod tests;
