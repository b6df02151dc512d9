//! The proxy's half of the discovery stream: connect, subscribe to every
//! type, hand each response to the proxy, (N)ACK it, and reconnect with
//! backoff when the control plane goes away. The proxy keeps whatever it last
//! applied while disconnected (static stability). The token is read again
//! for every connection (a projected token is rotated), and sent only where
//! [`XdsAddress::check_token_allowed`] allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::address::{AddressError, ConnectError, XdsAddress};
use crate::asks::{Asks, Unsent};
use crate::certs::{TokenError, TokenSource, authorization};
use crate::pb::aggregated_discovery_client::AggregatedDiscoveryClient;
use crate::pb::{DiscoveryRequest, DiscoveryResponse, HostRefusal, Node, Resource, Status};

/// Applies the resources of one type. Returning `Err` NACKs the response and
/// the proxy must keep its previous resources of that type.
pub trait ConfigHandler: Send + Sync + 'static {
    fn apply(&self, type_url: &str, version: &str, resources: Vec<Resource>) -> Result<(), String>;

    /// Whether [`ConfigHandler::apply_partial`] is implemented; if so the
    /// control plane sends only what changed.
    fn accepts_partial(&self) -> bool {
        false
    }

    /// Whether the handler joins the resources that name one route config
    /// into one (`RouteConfig` in proxy.proto), as the proxy does; `false`
    /// asks for every route config whole, as a proxy from before the pieces
    /// is sent them.
    fn joins_route_pieces(&self) -> bool {
        true
    }

    /// Whether the handler reads resources in their compact forms (read back
    /// with [`crate::whole_form`]), as the proxy does; `false` asks for the
    /// whole forms, as a proxy from before the compact ones is sent them.
    fn compact_resources(&self) -> bool {
        true
    }

    /// Applies a change to the resources of one type: `changed` replace the
    /// ones of the same name or are added, `removed` are dropped, the rest
    /// stay. `version` is the version of the whole resulting set. `Err` NACKs
    /// and the handler must keep its previous resources of that type.
    fn apply_partial(
        &self,
        type_url: &str,
        version: &str,
        changed: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let _ = (type_url, version, changed, removed);
        Err("partial updates are not supported".into())
    }

    /// Set: the proxy discovers its outbound hosts on demand (its node says
    /// `on_demand`, with the hosts asked for so far), subscribes to the
    /// directory too, and sends the hosts asked for here as they come.
    fn asks(&self) -> Option<Arc<Asks>> {
        None
    }

    /// The control plane refused hosts asked for (they are forgotten from
    /// [`ConfigHandler::asks`], so a later request may ask again).
    fn refused(&self, refused: Vec<HostRefusal>) {
        let _ = refused;
    }
}

/// What a proxy says it takes, on each subscribe: the control plane sends
/// each proxy only the forms it takes, so that trellisd can be upgraded
/// before its proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takes {
    pub partial: bool,
    pub route_pieces: bool,
    pub compact_resources: bool,
}

impl Takes {
    /// What trellis-proxy takes (a test there says so): every form. A
    /// simulated proxy that is to be measured as trellis-proxy says the same.
    pub const PROXY: Takes = Takes {
        partial: true,
        route_pieces: true,
        compact_resources: true,
    };

    /// What `handler` says it takes.
    pub fn of<H: ConfigHandler + ?Sized>(handler: &H) -> Self {
        Takes {
            partial: handler.accepts_partial(),
            route_pieces: handler.joins_route_pieces(),
            compact_resources: handler.compact_resources(),
        }
    }

    /// The request that subscribes to `type_url` saying so (without the
    /// node, which only the first request carries, and the version held).
    pub fn subscribe(self, type_url: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.to_string(),
            accepts_partial: self.partial,
            joins_route_pieces: self.route_pieces,
            compact_resources: self.compact_resources,
            ..Default::default()
        }
    }
}

/// Why one discovery session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the token cannot be sent as gRPC metadata (it must be printable ASCII)")]
    BadToken,
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// Runs the discovery stream until the process ends. `token` proves to the
/// control plane that this proxy is the workload `node` names.
pub async fn run<H: ConfigHandler>(
    address: XdsAddress,
    node: Node,
    token: Option<TokenSource>,
    handler: H,
) {
    let mut applied: HashMap<String, String> = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(
            &address,
            &node,
            token.as_ref(),
            &handler,
            &mut applied,
            &mut backoff,
        )
        .await
        {
            Ok(()) => tracing::warn!(%address, "control plane closed the discovery stream"),
            Err(err) => tracing::warn!(%address, error = %err, "discovery stream failed"),
        }
        let jitter = Duration::from_millis(rand_millis(backoff.as_millis() as u64 / 4 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session<H: ConfigHandler>(
    address: &XdsAddress,
    node: &Node,
    token: Option<&TokenSource>,
    handler: &H,
    applied: &mut HashMap<String, String>,
    backoff: &mut Duration,
) -> Result<(), SessionError> {
    let authorization = match token {
        Some(source) => {
            address.check_token_allowed()?;
            Some(authorization(&source.read().await?).ok_or(SessionError::BadToken)?)
        }
        None => None,
    };
    let mut client = AggregatedDiscoveryClient::new(address.connect().await?);
    let (tx, rx) = mpsc::channel(16);
    let asks = handler.asks();
    let mut node = node.clone();
    let types: &[&str] = match &asks {
        Some(asks) => {
            node.on_demand = true;
            node.asked_hosts = asks.for_new_stream();
            &crate::types::SERVED
        }
        None => &crate::types::ALL,
    };
    for (i, type_url) in types.iter().enumerate() {
        let req = DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            version_info: applied.get(*type_url).cloned().unwrap_or_default(),
            ..Takes::of(handler).subscribe(type_url)
        };
        // The channel holds 16 and this sends 5 at most: it cannot be full.
        let _ = tx.try_send(req);
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert(crate::certs::AUTHORIZATION, value);
    }
    let mut responses = client.stream(request).await?.into_inner();
    tracing::info!(%address, tls = address.is_tls(), "connected to the control plane");
    *backoff = Duration::from_millis(100);
    // Responses of one version sent in pieces (`more`), gathered until the last.
    let mut pieces: HashMap<String, DiscoveryResponse> = HashMap::new();
    loop {
        let response = tokio::select! {
            response = responses.next() => match response {
                Some(response) => response?,
                None => break,
            },
            unsent = unsent(asks.as_deref()) => {
                let ask = DiscoveryRequest {
                    forget_hosts: unsent.forget,
                    ask_hosts: unsent.ask,
                    ..Default::default()
                };
                if tx.send(ask).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if !response.refused.is_empty() {
            // An ask's answer: nothing to apply or answer.
            if let Some(asks) = &asks {
                for r in &response.refused {
                    asks.forget(&r.host);
                }
            }
            handler.refused(response.refused);
            continue;
        }
        let Some(response) = gather(&mut pieces, response) else {
            continue;
        };
        let reply = apply(handler, applied, response);
        if tx.send(reply).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The hosts to forget and ask for next; never, for a proxy that does not ask.
async fn unsent(asks: Option<&Asks>) -> Unsent {
    match asks {
        Some(asks) => asks.unsent().await,
        None => std::future::pending().await,
    }
}

/// `response` if it is whole; else `None` until its last piece, then the pieces as one.
fn gather(
    pieces: &mut HashMap<String, DiscoveryResponse>,
    response: DiscoveryResponse,
) -> Option<DiscoveryResponse> {
    let more = response.more;
    let whole = match pieces.remove(&response.type_url) {
        // The first piece says whether the whole is partial; the rest add to it.
        Some(mut first) => {
            first.resources.extend(response.resources);
            first.removed.extend(response.removed);
            first.version_info = response.version_info;
            first.nonce = response.nonce;
            first
        }
        None => response,
    };
    if more {
        pieces.insert(whole.type_url.clone(), whole);
        return None;
    }
    Some(DiscoveryResponse {
        more: false,
        ..whole
    })
}

fn apply<H: ConfigHandler>(
    handler: &H,
    applied: &mut HashMap<String, String>,
    response: DiscoveryResponse,
) -> DiscoveryRequest {
    let DiscoveryResponse {
        type_url,
        version_info,
        nonce,
        resources,
        partial,
        removed,
        more: _,
        refused: _,
    } = response;
    let result = if partial {
        handler.apply_partial(&type_url, &version_info, resources, removed)
    } else {
        handler.apply(&type_url, &version_info, resources)
    };
    let mut reply = DiscoveryRequest {
        type_url: type_url.clone(),
        response_nonce: nonce,
        ..Default::default()
    };
    match result {
        Ok(()) => {
            tracing::debug!(type_url, version = %version_info, "applied");
            applied.insert(type_url, version_info.clone());
            reply.version_info = version_info;
        }
        Err(message) => {
            tracing::warn!(type_url, version = %version_info, reason = %message, "rejected config (NACK)");
            reply.version_info = applied.get(&type_url).cloned().unwrap_or_default();
            reply.error_detail = Some(Status { code: 3, message });
        }
    }
    reply
}

fn rand_millis(max: u64) -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % max.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(nonce: &str, names: &[&str], partial: bool, more: bool) -> DiscoveryResponse {
        DiscoveryResponse {
            type_url: crate::types::CLUSTER.into(),
            version_info: "v2".into(),
            nonce: nonce.into(),
            resources: names
                .iter()
                .map(|n| Resource {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            partial,
            removed: if nonce == "1" {
                vec!["gone".into()]
            } else {
                vec![]
            },
            more,
            refused: vec![],
        }
    }

    #[test]
    fn pieces_are_applied_as_one_response_answering_the_last() {
        let mut pieces = HashMap::new();
        assert!(gather(&mut pieces, piece("1", &["a"], false, true)).is_none());
        assert!(gather(&mut pieces, piece("2", &["b"], true, true)).is_none());
        let whole = gather(&mut pieces, piece("3", &["c"], true, false)).expect("whole");
        assert!(
            !whole.partial && !whole.more,
            "the first piece says it is a full set"
        );
        assert_eq!(whole.nonce, "3");
        assert_eq!(
            whole
                .resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b", "c"]
        );
        assert_eq!(whole.removed, vec!["gone".to_string()]);
        assert!(pieces.is_empty());
        let single = gather(&mut pieces, piece("4", &["d"], true, false)).expect("whole");
        assert!(single.partial);
    }
}
