//! The part of a snapshot the listener resources make: what each listener
//! binds and the policies (authorization, rate limits, telemetry, L4
//! routes) attached to its address.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wire::pb;
use wire::pb::resource::Kind;

use super::mtls::MtlsMode;
use super::{
    Direction, InboundPassthrough, ListenerSpec, Serve, Sides, Snapshot, TypeState, wrong_kind,
};
use crate::lb::{BuildEnv, Cluster};
use crate::path::Normalization;
use crate::policy::authz::ListenerAuthz;
use crate::policy::rate_limit::LocalRateLimit;
use crate::telemetry::meta::ServiceMeta;

/// What the listener resources make.
pub(super) struct ListenerPart {
    pub(super) listeners: Vec<ListenerSpec>,
    pub(super) registry_only: bool,
    pub(super) inbound_passthrough: InboundPassthrough,
    pub(super) authz: HashMap<SocketAddr, Arc<ListenerAuthz>>,
    pub(super) l4_routes: HashMap<SocketAddr, Arc<crate::tcp::L4Routes>>,
    pub(super) rate_limits: HashMap<SocketAddr, Arc<LocalRateLimit>>,
    pub(super) global_rate_limits:
        HashMap<SocketAddr, Arc<crate::policy::global_rate_limit::GlobalRateLimit>>,
    pub(super) inbound_services: HashMap<SocketAddr, Arc<ServiceMeta>>,
    pub(super) path_normalization: Normalization,
    pub(super) tracing: Sides<Option<Arc<crate::telemetry::trace::Policy>>>,
    pub(super) access_logs: Sides<Option<Arc<crate::telemetry::access_log::AccessLogs>>>,
    pub(super) metrics: Sides<Option<Arc<crate::telemetry::metrics::Overrides>>>,
}

impl ListenerPart {
    /// `s`'s, shared.
    pub(super) fn of(s: &Snapshot) -> Self {
        ListenerPart {
            listeners: s.listeners.clone(),
            registry_only: s.registry_only,
            inbound_passthrough: s.inbound_passthrough.clone(),
            authz: s.authz.clone(),
            l4_routes: s.l4_routes.clone(),
            rate_limits: s.rate_limits.clone(),
            global_rate_limits: s.global_rate_limits.clone(),
            inbound_services: s.inbound_services.clone(),
            path_normalization: s.path_normalization,
            tracing: s.tracing.clone(),
            access_logs: s.access_logs.clone(),
            metrics: s.metrics.clone(),
        }
    }
}

pub(super) fn compile_listeners(
    state: &TypeState,
    pod_ip: Option<IpAddr>,
    prev: Option<&Snapshot>,
    env: &BuildEnv<'_>,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<ListenerPart, String> {
    let mut listeners = Vec::new();
    let mut registry_only = false;
    let mut inbound_passthrough = InboundPassthrough::default();
    let mut authz = HashMap::new();
    let mut l4_routes = HashMap::new();
    let mut rate_limits = HashMap::new();
    let mut global_rate_limits = HashMap::new();
    let mut inbound_services = HashMap::new();
    let mut bound = HashSet::new();
    let mut path_normalization = Normalization::default();
    let mut tracing: Sides<Option<Arc<crate::telemetry::trace::Policy>>> = Sides::default();
    let mut access_logs: Sides<Option<Arc<crate::telemetry::access_log::AccessLogs>>> =
        Sides::default();
    let mut metrics: Sides<Option<Arc<crate::telemetry::metrics::Overrides>>> = Sides::default();
    for r in state.in_order() {
        let Some(Kind::Listener(l)) = &r.decode()?.kind else {
            return Err(wrong_kind("listeners", &r.name));
        };
        let server_side = pb::Direction::try_from(l.direction) == Ok(pb::Direction::Inbound);
        // A tracing policy the proxy cannot use leaves the side untraced
        // (and says so); it never stops the rest of the config.
        let trace_side = if server_side {
            &mut tracing.server
        } else {
            &mut tracing.client
        };
        if let Some(t) = &l.tracing
            && trace_side.is_none()
        {
            match crate::telemetry::trace::Policy::compile(t) {
                Ok(policy) => *trace_side = Some(Arc::new(policy)),
                Err(error) => {
                    tracing::warn!(listener = %l.name, %error, "requests on this side are not traced")
                }
            }
        }
        let metrics_side = if server_side {
            &mut metrics.server
        } else {
            &mut metrics.client
        };
        if let Some(m) = &l.metrics
            && metrics_side.is_none()
        {
            match crate::telemetry::metrics::Overrides::compile(m) {
                Ok(o) => *metrics_side = Some(Arc::new(o)),
                Err(error) => {
                    tracing::warn!(listener = %l.name, %error, "metrics overrides not applied")
                }
            }
        }
        // Every listener of a side carries the same logs: compiled once.
        let logs_side = if server_side {
            &mut access_logs.server
        } else {
            &mut access_logs.client
        };
        if !l.access_logs.is_empty() && logs_side.is_none() {
            *logs_side = crate::telemetry::access_log::AccessLogs::compile(&l.access_logs);
        }
        // Bound by the capture listeners when capture is on; its policy applies to the explicit proxy too.
        if l.name == crate::capture::VIRTUAL_OUTBOUND {
            registry_only = l.registry_only;
            continue;
        }
        // Served by the capture listener on 15006 when capture is on.
        if l.name == crate::capture::VIRTUAL_INBOUND {
            inbound_passthrough = InboundPassthrough::compile(l)
                .map_err(|e| format!("listener {:?}: {e}", l.name))?;
            continue;
        }
        path_normalization = normalization(l.path_normalization)
            .map_err(|e| format!("listener {:?}: {e}", l.name))?;
        let Some(spec) =
            listener(l, pod_ip, env.mesh_tls).map_err(|e| format!("listener {:?}: {e}", l.name))?
        else {
            continue;
        };
        if !bound.insert(spec.bind) {
            return Err(format!(
                "listener {:?}: another listener already binds {}",
                l.name, spec.bind
            ));
        }
        // Sidecars and gateways enforce the policies of their own workload.
        if matches!(spec.direction, Direction::Inbound | Direction::Gateway) {
            let compiled =
                ListenerAuthz::compile(l).map_err(|e| format!("listener {:?}: {e}", l.name))?;
            authz.insert(spec.bind, Arc::new(compiled));
        }
        if let Some(c) = &l.local_rate_limit
            && matches!(spec.direction, Direction::Inbound | Direction::Gateway)
        {
            let built =
                LocalRateLimit::new(c).map_err(|e| format!("listener {:?}: {e}", l.name))?;
            // An unchanged limit keeps its bucket (and the tokens it has used).
            let limit = match prev.and_then(|p| p.rate_limits.get(&spec.bind)) {
                Some(old) if **old == built => old.clone(),
                _ => Arc::new(built),
            };
            rate_limits.insert(spec.bind, limit);
        }
        if let Some(c) = &l.global_rate_limit
            && matches!(spec.direction, Direction::Inbound | Direction::Gateway)
        {
            let built = crate::policy::global_rate_limit::GlobalRateLimit::compile(c)
                .map_err(|e| format!("listener {:?}: {e}", l.name))?;
            global_rate_limits.insert(spec.bind, Arc::new(built));
        }
        if spec.serve == Serve::L4 {
            let tls = l.protocol != pb::Protocol::Tcp as i32;
            let routes = crate::tcp::L4Routes::new(&l.l4_routes, tls, l.auto_passthrough, clusters)
                .map_err(|e| format!("listener {:?}: {e}", l.name))?;
            l4_routes.insert(spec.bind, Arc::new(routes));
        }
        if spec.direction == Direction::Inbound && !l.service.is_empty() {
            inbound_services.insert(spec.bind, ServiceMeta::interned(&l.service));
        }
        listeners.push(spec);
    }

    Ok(ListenerPart {
        listeners,
        registry_only,
        inbound_passthrough,
        authz,
        l4_routes,
        rate_limits,
        global_rate_limits,
        inbound_services,
        path_normalization,
        tracing,
        access_logs,
        metrics,
    })
}

fn normalization(v: i32) -> Result<Normalization, String> {
    Ok(match pb::PathNormalization::try_from(v) {
        Ok(pb::PathNormalization::None) => Normalization::None,
        Ok(pb::PathNormalization::Default | pb::PathNormalization::Base) => Normalization::Base,
        Ok(pb::PathNormalization::MergeSlashes) => Normalization::MergeSlashes,
        Ok(pb::PathNormalization::DecodeAndMergeSlashes) => Normalization::DecodeAndMergeSlashes,
        Err(_) => return Err(format!("unknown path normalization {v}")),
    })
}

/// `None` for listeners this proxy deliberately does not bind (see below).
fn listener(
    l: &pb::Listener,
    pod_ip: Option<IpAddr>,
    mesh_tls: Option<&Arc<crate::tls::MeshTls>>,
) -> Result<Option<ListenerSpec>, String> {
    let port = u16::try_from(l.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {} is invalid", l.port))?;
    let ip = if l.address.is_empty() {
        pod_ip.ok_or("no address, and the node has no pod_ip to bind")?
    } else {
        l.address
            .parse::<IpAddr>()
            .map_err(|_| format!("address {:?} is not an IP address", l.address))?
    };
    let direction = match pb::Direction::try_from(l.direction) {
        Ok(pb::Direction::Inbound) => Direction::Inbound,
        Ok(pb::Direction::Outbound) => Direction::Outbound,
        Ok(pb::Direction::Gateway) => Direction::Gateway,
        Err(_) => return Err(format!("unknown direction {}", l.direction)),
    };
    let protocol = pb::Protocol::try_from(l.protocol)
        .map_err(|_| format!("unknown protocol {}", l.protocol))?;
    let serve = match (direction, protocol) {
        // Outbound traffic reaches this proxy through its explicit HTTP proxy
        // listener; per-port outbound listeners need traffic capture.
        (Direction::Outbound, _) => {
            tracing::debug!(listener = %l.name, "outbound listeners need traffic capture; served by the explicit proxy instead");
            return Ok(None);
        }
        (Direction::Inbound, pb::Protocol::Tcp | pb::Protocol::Tls | pb::Protocol::Https) => {
            Serve::Tcp
        }
        (Direction::Inbound, pb::Protocol::Unspecified) => Serve::Sniff,
        (
            _,
            pb::Protocol::Http
            | pb::Protocol::Http2
            | pb::Protocol::Grpc
            | pb::Protocol::Unspecified,
        ) => Serve::Http,
        (Direction::Gateway, pb::Protocol::Https) if !l.gateway_tls.is_empty() => Serve::Http,
        (Direction::Gateway, pb::Protocol::Tcp | pb::Protocol::Tls) if l.gateway_tls.is_empty() => {
            Serve::L4
        }
        (Direction::Gateway, _) => {
            tracing::warn!(listener = %l.name, ?protocol, "gateway TLS servers that terminate TLS and forward TCP are not supported; listener skipped");
            return Ok(None);
        }
    };
    let app_port = match l.app_port {
        0 => port,
        p => u16::try_from(p).map_err(|_| format!("app_port {p} is out of range"))?,
    };
    Ok(Some(ListenerSpec {
        name: l.name.as_str().into(),
        bind: SocketAddr::new(ip, port),
        direction,
        serve,
        app_http2: matches!(protocol, pb::Protocol::Http2 | pb::Protocol::Grpc),
        app_port,
        route_config: l.route_config.as_str().into(),
        mtls: match direction {
            Direction::Inbound => MtlsMode::from_pb(l.mtls_mode)?,
            _ => MtlsMode::Disable,
        },
        gateway_tls: match (direction, l.gateway_tls.is_empty()) {
            (Direction::Gateway, false) => Some(Arc::new(crate::tls::gateway::GatewayTls::new(
                &l.gateway_tls,
                mesh_tls,
            )?)),
            _ => None,
        },
        https_redirect: direction == Direction::Gateway && l.https_redirect,
        path_normalization: normalization(l.path_normalization)?,
        num_trusted_proxies: l.num_trusted_proxies,
    }))
}
