//! A `jwksUri`'s keys: fetched by the proxy (Envoy's `remote_jwks`, Istio's
//! `PILOT_JWT_ENABLE_REMOTE_JWKS=envoy`), cached, refreshed in the background.
//!
//! - The first request that needs the keys fetches them (one fetch at a time;
//!   the others wait for it, within the rule's timeout).
//! - Keys older than [`Timing::refresh`] are refreshed in the background
//!   while requests go on with them.
//! - A failed fetch, or a document that no longer parses, keeps the last
//!   good keys until [`Timing::expire`] after they were fetched; then, and
//!   when there never were any, the issuer's tokens fail ("Jwks remote fetch
//!   is failed") — never pass. Every failure is logged and counted
//!   (`trellis_jwt_authn_jwks_fetch_failed_total`); a failure is retried no
//!   sooner than [`Timing::retry`] later (Envoy's failed_refetch_duration).
//! - A URI whose document is an OpenID configuration (it has `jwks_uri`)
//!   is followed once to the JWKS.
//!
//! Caches are shared by URI across config changes, so a new config does not
//! refetch what the proxy has.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::keys::KeySet;
use super::metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    pub refresh: Duration,
    pub expire: Duration,
    pub retry: Duration,
    /// Fetch timeout (the rule's `timeout`).
    pub timeout: Duration,
}

impl Timing {
    pub fn with_timeout(timeout: Duration) -> Self {
        Timing {
            // Envoy's default cache_duration.
            refresh: Duration::from_secs(600),
            // As istiod keeps a JWKS it could not refresh.
            expire: Duration::from_secs(24 * 3600),
            retry: Duration::from_secs(1),
            timeout,
        }
    }
}

/// A JWKS document is small; anything bigger is not one.
const MAX_BODY: usize = 1 << 20;

pub struct RemoteJwks {
    uri: String,
    timing: Timing,
    state: ArcSwap<State>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// When `keys` were fetched.
    fetched_at: Option<Instant>,
    failed_at: Option<Instant>,
}

type Registry = Mutex<HashMap<(String, Timing), Weak<RemoteJwks>>>;

impl RemoteJwks {
    /// The cache for this URI, shared with every rule (of any config) that uses it.
    pub fn shared(uri: &str, timing: Timing) -> Arc<Self> {
        static ALL: LazyLock<Registry> = LazyLock::new(Registry::default);
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, w| w.strong_count() > 0);
        let key = (uri.to_string(), timing);
        if let Some(r) = all.get(&key).and_then(Weak::upgrade) {
            return r;
        }
        let r = Arc::new(RemoteJwks {
            uri: uri.to_string(),
            timing,
            state: ArcSwap::from_pointee(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        });
        all.insert(key, Arc::downgrade(&r));
        r
    }

    /// The keys to verify with now, or `None`: none could be fetched.
    pub async fn keys(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        let now = Instant::now();
        let st = self.state.load();
        if let (Some(keys), Some(at)) = (&st.keys, st.fetched_at)
            && now < at + self.timing.expire
        {
            let retry_ok = st.failed_at.is_none_or(|f| now >= f + self.timing.retry);
            if now >= at + self.timing.refresh && retry_ok {
                self.refresh_in_background();
            }
            return Some(keys.clone());
        }
        if st.failed_at.is_some_and(|f| now < f + self.timing.retry) {
            return None;
        }
        drop(st);
        // Nothing usable: this request waits for a fetch (its own or another's).
        let seen = self.state.load_full();
        let Ok(_guard) = tokio::time::timeout(self.timing.timeout, self.fetching.lock()).await
        else {
            return None;
        };
        if !Arc::ptr_eq(&seen, &self.state.load_full()) {
            // Another request fetched meanwhile.
            return self.state.load().keys.clone();
        }
        self.fetch_once().await;
        let st = self.state.load();
        st.keys
            .as_ref()
            .filter(|_| {
                st.fetched_at
                    .is_some_and(|at| Instant::now() < at + self.timing.expire)
            })
            .cloned()
    }

    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(guard) = self.fetching.try_lock() else {
            return; // one is running
        };
        drop(guard);
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(_guard) = me.fetching.try_lock() else {
                return;
            };
            me.fetch_once().await;
        });
    }

    /// One fetch; the state records its outcome. Called with `fetching` held.
    async fn fetch_once(&self) {
        let outcome = tokio::time::timeout(self.timing.timeout, fetch_jwks(&self.uri))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {:?}", self.timing.timeout)));
        let old = self.state.load();
        let new = match outcome {
            Ok(keys) => {
                metrics::jwks_fetch(&self.uri, true);
                tracing::debug!(uri = %self.uri, "JWKS fetched");
                State {
                    keys: Some(Arc::new(keys)),
                    fetched_at: Some(Instant::now()),
                    failed_at: None,
                }
            }
            Err(error) => {
                metrics::jwks_fetch(&self.uri, false);
                let kept = old.keys.is_some();
                tracing::warn!(uri = %self.uri, %error, last_good_keys_kept = kept, "JWKS fetch failed");
                State {
                    keys: old.keys.clone(),
                    fetched_at: old.fetched_at,
                    failed_at: Some(Instant::now()),
                }
            }
        };
        self.state.store(Arc::new(new));
    }
}

/// GETs the JWKS at `uri`, following an OpenID configuration's `jwks_uri`.
async fn fetch_jwks(uri: &str) -> Result<KeySet, String> {
    let body = get(uri).await?;
    #[derive(serde::Deserialize)]
    struct Discovery {
        jwks_uri: String,
    }
    if let Ok(d) = serde_json::from_slice::<Discovery>(&body)
        && !body_has_keys(&body)
    {
        let body = get(&d.jwks_uri).await?;
        return parse(&body);
    }
    parse(&body)
}

fn body_has_keys(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.get("keys").is_some())
}

fn parse(body: &[u8]) -> Result<KeySet, String> {
    KeySet::parse(std::str::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".to_string())?)
}

/// One HTTP/1.1 GET over a fresh connection (plain or TLS with the system's
/// roots); a status other than 200 is an error.
async fn get(uri: &str) -> Result<Bytes, String> {
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| format!("invalid URI {uri:?}: {e}"))?;
    let tls = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{uri:?}: only http and https are fetched")),
    };
    let host = parsed
        .host()
        .ok_or_else(|| format!("{uri:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let authority = parsed
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = parsed
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = if tls {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        send(TokioIo::new(stream), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if response.status() != http::StatusCode::OK {
        return Err(format!("{uri}: HTTP status {}", response.status()));
    }
    Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{uri}: reading the body: {e}"))
}

async fn send<I>(
    io: I,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP request: {e}"))
}

/// The system's trust roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured),
/// loaded once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("no trusted CA certificates found for https jwksUri".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
    });
    CONFIG.clone()
}
