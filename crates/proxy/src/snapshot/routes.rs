//! Compiled route configs: virtual hosts, routes and their actions, with
//! every cluster reference resolved once per config instead of per request.
//! The submodules are the compiled forms of a route's policies, which the
//! HTTP handlers apply.

pub mod cors;
pub mod fault;
pub mod header_ops;
pub mod retry;
pub mod rewrite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderValue;
use rand::Rng;
use wire::pb;

use super::domains::DomainIndex;
use super::matcher::{PathMatch, RequestView, RouteMatch};
use crate::lb::Cluster;
use cors::Cors;
use fault::Fault;
use header_ops::HeaderOps;
use retry::RetryPolicy;
use rewrite::{RedirectSpec, RegexRewrite};

// A proxy holds one of these per service it can call (thousands in a large
// mesh), so the compiled forms are kept tight: slices sized exactly (a
// collected `Vec` keeps room for four), and what few routes use is boxed.

pub struct RouteTable {
    pub name: Arc<str>,
    pub virtual_hosts: Box<[VirtualHost]>,
    domains: DomainIndex,
}

impl RouteTable {
    pub fn compile(
        rc: &pb::RouteConfig,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Self, String> {
        let hosts: Vec<&pb::VirtualHost> = rc.virtual_hosts.iter().collect();
        Self::compile_hosts(&rc.name, &hosts, clusters)
    }

    /// The table named `name` of these virtual hosts (a route config's, or
    /// those of the pieces it was sent in).
    pub fn compile_hosts(
        name: &str,
        hosts: &[&pb::VirtualHost],
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Self, String> {
        let mut virtual_hosts = Vec::with_capacity(hosts.len());
        for (i, vh) in hosts.iter().enumerate() {
            let at = format!("virtual_hosts[{i}] ({})", vh.name);
            let routes = vh
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    Route::compile(r, clusters)
                        .map_err(|e| format!("{at}.routes[{j}] ({}): {e}", r.name))
                })
                .collect::<Result<Box<[_]>, _>>()?;
            virtual_hosts.push(VirtualHost {
                name: vh.name.as_str().into(),
                routes,
            });
        }
        let domains = DomainIndex::build(
            hosts
                .iter()
                .enumerate()
                .flat_map(|(i, vh)| vh.domains.iter().map(move |d| (i, d.as_str()))),
        )
        .map_err(|e| format!("virtual_hosts: {e}"))?;
        Ok(RouteTable {
            name: name.into(),
            virtual_hosts: virtual_hosts.into_boxed_slice(),
            domains,
        })
    }

    /// The virtual host for a lowercase authority.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        self.domains
            .find(authority)
            .and_then(|i| self.virtual_hosts.get(i))
    }
}

pub struct VirtualHost {
    pub name: Arc<str>,
    pub routes: Box<[Route]>,
}

impl VirtualHost {
    /// The first route that matches, and which of its matches did (rewrites need it).
    pub fn select(&self, req: &RequestView<'_>) -> Option<(&Route, Option<&PathMatch>)> {
        self.routes.iter().find_map(|r| {
            if r.matches.is_empty() {
                return Some((r, None));
            }
            r.matches
                .iter()
                .find(|m| m.matches(req))
                .map(|m| (r, m.path.as_ref()))
        })
    }
}

pub struct Route {
    pub name: Arc<str>,
    matches: Box<[RouteMatch]>,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub fault: Option<Box<Fault>>,
    pub cors: Option<Box<Cors>>,
}

pub enum Action {
    Forward(Forward),
    Redirect(RedirectSpec),
    Direct { status: StatusCode, body: Bytes },
}

impl Route {
    fn compile(r: &pb::Route, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Self, String> {
        let matches = r
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| RouteMatch::compile(m).map_err(|e| format!("matches[{i}]: {e}")))
            .collect::<Result<Box<[_]>, _>>()?;
        let action = match &r.action {
            None => return Err("no action (forward, redirect or direct_response)".into()),
            Some(pb::route::Action::Forward(f)) => Action::Forward(Forward::compile(f, clusters)?),
            Some(pb::route::Action::Redirect(rd)) => Action::Redirect(redirect(rd)?),
            Some(pb::route::Action::DirectResponse(d)) => Action::Direct {
                status: u16::try_from(d.status)
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| {
                        format!("direct_response.status {} is not an HTTP status", d.status)
                    })?,
                body: Bytes::copy_from_slice(&d.body),
            },
        };
        Ok(Route {
            name: r.name.as_str().into(),
            matches,
            action,
            request_headers: HeaderOps::compile(r.request_headers.as_ref())
                .map_err(|e| format!("request_headers: {e}"))?,
            response_headers: HeaderOps::compile(r.response_headers.as_ref())
                .map_err(|e| format!("response_headers: {e}"))?,
            fault: Fault::compile(r.fault.as_ref())?.map(Box::new),
            cors: Cors::compile(r.cors.as_ref())?.map(Box::new),
        })
    }
}

fn redirect(r: &pb::Redirect) -> Result<RedirectSpec, String> {
    let code = match r.code {
        0 => StatusCode::MOVED_PERMANENTLY,
        c @ (301 | 302 | 303 | 307 | 308) => {
            StatusCode::from_u16(c as u16).map_err(|e| e.to_string())?
        }
        c => {
            return Err(format!(
                "redirect.code {c} is not one of 301, 302, 303, 307, 308"
            ));
        }
    };
    let port = match r.port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| format!("redirect.port {p} is out of range"))?),
    };
    let nonempty = |s: &str| (!s.is_empty()).then(|| Box::<str>::from(s));
    if !r.path.is_empty() && !r.path.starts_with('/') {
        return Err(format!("redirect.path {:?} must start with '/'", r.path));
    }
    Ok(RedirectSpec {
        scheme: nonempty(&r.scheme),
        authority: nonempty(&r.authority),
        port,
        path: nonempty(&r.path),
        code,
    })
}

/// A cluster a route sends to. The cluster is resolved when the config is
/// compiled; a name the proxy does not know (yet) is tolerated, as in Envoy,
/// and answered with 503 NC ("no cluster") at request time.
pub struct Target {
    pub name: Arc<str>,
    pub cluster: Option<Arc<Cluster>>,
    weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

pub struct Mirror {
    pub name: Arc<str>,
    pub cluster: Option<Arc<Cluster>>,
    fraction: f64,
}

impl Mirror {
    pub fn drawn(&self) -> bool {
        self.fraction >= 1.0 || (self.fraction > 0.0 && rand::rng().random::<f64>() < self.fraction)
    }
}

pub struct Forward {
    pub targets: Box<[Target]>,
    total_weight: u64,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub prefix_rewrite: Option<Box<str>>,
    pub regex_rewrite: Option<Box<RegexRewrite>>,
    pub authority_rewrite: Option<Box<HeaderValue>>,
    pub mirrors: Box<[Mirror]>,
}

impl Forward {
    fn compile(
        f: &pb::RouteAction,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Self, String> {
        if f.clusters.is_empty() {
            return Err("forward has no clusters".into());
        }
        let mut targets = Vec::with_capacity(f.clusters.len());
        for (i, wc) in f.clusters.iter().enumerate() {
            if wc.cluster.is_empty() {
                return Err(format!("forward.clusters[{i}]: cluster name is empty"));
            }
            let cluster = clusters.get(&wc.cluster).cloned();
            targets.push(Target {
                // The cluster's own name when it is known: one string, not one per route.
                name: cluster
                    .as_ref()
                    .map_or_else(|| wc.cluster.as_str().into(), |c| c.name.clone()),
                cluster,
                // A single destination takes all traffic, whatever its weight says (as in Istio).
                weight: if f.clusters.len() == 1 { 1 } else { wc.weight },
                request_headers: HeaderOps::compile(wc.request_headers.as_ref())
                    .map_err(|e| format!("forward.clusters[{i}].request_headers: {e}"))?,
                response_headers: HeaderOps::compile(wc.response_headers.as_ref())
                    .map_err(|e| format!("forward.clusters[{i}].response_headers: {e}"))?,
            });
        }
        let total_weight: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
        if total_weight == 0 {
            return Err("forward.clusters: the weights sum to zero".into());
        }
        let mirrors = f
            .mirrors
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !(0.0..=100.0).contains(&m.percent) {
                    return Err(format!(
                        "forward.mirrors[{i}].percent {} is not within 0..=100",
                        m.percent
                    ));
                }
                Ok(Mirror {
                    name: m.cluster.as_str().into(),
                    cluster: clusters.get(&m.cluster).cloned(),
                    fraction: m.percent / 100.0,
                })
            })
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(Forward {
            targets: targets.into_boxed_slice(),
            total_weight,
            timeout: (f.timeout_ms > 0).then(|| Duration::from_millis(f.timeout_ms)),
            retry: RetryPolicy::compile(f.retry.as_ref())
                .map_err(|e| format!("forward.retry: {e}"))?,
            prefix_rewrite: (!f.prefix_rewrite.is_empty())
                .then(|| f.prefix_rewrite.as_str().into()),
            regex_rewrite: f
                .regex_rewrite
                .as_ref()
                .filter(|r| !r.pattern.is_empty())
                .map(|r| RegexRewrite::compile(&r.pattern, &r.substitution).map(Box::new))
                .transpose()?,
            authority_rewrite: (!f.authority_rewrite.is_empty())
                .then(|| HeaderValue::from_str(&f.authority_rewrite).map(Box::new))
                .transpose()
                .map_err(|_| {
                    format!(
                        "forward.authority_rewrite {:?} is not a valid authority",
                        f.authority_rewrite
                    )
                })?,
            mirrors,
        })
    }

    /// A target drawn by weight.
    pub fn pick(&self) -> &Target {
        if self.targets.len() == 1 {
            return &self.targets[0];
        }
        let mut r = rand::rng().random_range(0..self.total_weight);
        for t in &self.targets {
            let w = u64::from(t.weight);
            if r < w {
                return t;
            }
            r -= w;
        }
        // Unreachable while total_weight is the sum of the weights; stay safe anyway.
        &self.targets[self.targets.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wc(name: &str, weight: u32) -> pb::WeightedCluster {
        pb::WeightedCluster {
            cluster: name.into(),
            weight,
            ..Default::default()
        }
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let f = Forward::compile(
            &pb::RouteAction {
                clusters: vec![wc("a", 80), wc("b", 20), wc("c", 0)],
                ..Default::default()
            },
            &HashMap::new(),
        )
        .expect("valid");
        let n = 20_000;
        let a = (0..n).filter(|_| &*f.pick().name == "a").count();
        let c = (0..n).filter(|_| &*f.pick().name == "c").count();
        assert!((15_400..16_600).contains(&a), "{a}");
        assert_eq!(c, 0);
    }

    #[test]
    fn weight_validation() {
        let zero = pb::RouteAction {
            clusters: vec![wc("a", 0), wc("b", 0)],
            ..Default::default()
        };
        assert!(Forward::compile(&zero, &HashMap::new()).is_err());
        let single = pb::RouteAction {
            clusters: vec![wc("a", 0)],
            ..Default::default()
        };
        assert!(Forward::compile(&single, &HashMap::new()).is_ok());
    }

    #[test]
    fn first_matching_route_wins() {
        let route = |name: &str, prefix: &str| pb::Route {
            name: name.into(),
            matches: vec![pb::RouteMatch {
                path: Some(pb::StringMatch {
                    kind: Some(pb::string_match::Kind::Prefix(prefix.into())),
                }),
                ..Default::default()
            }],
            action: Some(pb::route::Action::DirectResponse(pb::DirectResponse {
                status: 200,
                body: vec![],
            })),
            ..Default::default()
        };
        let rc = pb::RouteConfig {
            name: "80".into(),
            virtual_hosts: vec![pb::VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes: vec![route("api", "/api"), route("all", "/")],
            }],
        };
        let t = RouteTable::compile(&rc, &HashMap::new()).expect("valid");
        let vh = t.virtual_host("x").expect("catch-all");
        let h = http::HeaderMap::new();
        let view = |path| RequestView {
            method: "GET",
            path,
            query: None,
            authority: "x",
            scheme: "http",
            port: 80,
            headers: &h,
        };
        assert_eq!(
            vh.select(&view("/api/x")).map(|(r, _)| r.name.to_string()),
            Some("api".into())
        );
        assert_eq!(
            vh.select(&view("/other")).map(|(r, _)| r.name.to_string()),
            Some("all".into())
        );
    }
}
