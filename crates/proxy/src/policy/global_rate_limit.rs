//! The global rate limit of a listener's HTTP requests, as Envoy's
//! `envoy.filters.http.ratelimit` applies it: each of the routes'
//! `rate_limits` makes a descriptor of the request (its actions' entries in
//! order; none when an action has no entry to give), and a request with any
//! descriptor is sent to the rate limit service
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) under the
//! filter's domain. OVER_LIMIT is answered 429 (or `rate_limited_status`)
//! with `x-envoy-ratelimited: true`; a service that does not answer lets
//! the request through, or refuses it with 500 under `failure_mode_deny` —
//! logged and counted either way. A request without descriptors costs a
//! few header lookups and no call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use wire::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use wire::envoy::service::ratelimit::v3 as rls;
use wire::pb;

use super::call;
use super::rate_limit_actions::Actions;
pub use super::rate_limit_actions::RequestView;
use crate::resp_body::RespBody;
use crate::snapshot::Snapshot;

const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// Envoy's default timeout of a rate limit call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub struct GlobalRateLimit {
    /// What it was compiled from, to tell whether a new config changed it.
    source: pb::GlobalRateLimit,
    domain: Arc<str>,
    timeout: Duration,
    status: StatusCode,
    rate_limits: Actions,
}

impl PartialEq for GlobalRateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The filter's outcome.
pub enum Outcome {
    /// Under the limit, or not limited: go on, with these response headers
    /// (`x-ratelimit-*`, the service's `response_headers_to_add`) and
    /// request headers (`request_headers_to_add`).
    Pass {
        response: Vec<(HeaderName, HeaderValue)>,
        request: Vec<(HeaderName, HeaderValue)>,
    },
    /// The reply and Envoy's response code details; `true` when it is the
    /// service's failure (flag RLSE) rather than a limit (RL).
    Refuse(Box<Response<RespBody>>, &'static str, bool),
}

impl GlobalRateLimit {
    pub fn compile(c: &pb::GlobalRateLimit) -> Result<Self, String> {
        let rate_limits =
            Actions::compile(&c.rate_limits).map_err(|e| format!("global_rate_limit {e}"))?;
        let status = match c.status {
            0 => StatusCode::TOO_MANY_REQUESTS,
            s => match StatusCode::from_u16(u16::try_from(s).unwrap_or(0)) {
                // As Envoy: a status below 400 means 429.
                Ok(s) if s.as_u16() >= 400 => s,
                _ => StatusCode::TOO_MANY_REQUESTS,
            },
        };
        Ok(GlobalRateLimit {
            source: c.clone(),
            domain: c.domain.as_str().into(),
            timeout: if c.timeout_ms == 0 {
                DEFAULT_TIMEOUT
            } else {
                Duration::from_millis(c.timeout_ms)
            },
            status,
            rate_limits,
        })
    }

    pub fn origin(&self) -> &str {
        &self.source.origin
    }

    /// Whether the limit is asked after authentication and authorization
    /// (Istio's rate limit task inserts it just before the router) rather
    /// than at the head of the filters.
    pub fn after_authorization(&self) -> bool {
        self.source.after_authorization
    }

    /// The request's descriptors, one per `rate_limits` entry that gives one.
    pub fn descriptors(&self, r: &RequestView<'_>) -> Vec<RateLimitDescriptor> {
        self.rate_limits.descriptors(r)
    }

    /// Asks the service about `descriptors` (none: nothing to ask).
    pub async fn check(
        &self,
        snapshot: &Snapshot,
        descriptors: Vec<RateLimitDescriptor>,
    ) -> Outcome {
        if descriptors.is_empty() {
            return Outcome::Pass {
                response: Vec::new(),
                request: Vec::new(),
            };
        }
        let request = rls::RateLimitRequest {
            domain: self.domain.to_string(),
            descriptors,
            hits_addend: 0,
        };
        let answer: Result<rls::RateLimitResponse, _> = call::grpc(
            snapshot,
            &self.source.cluster,
            &self.source.authority,
            SHOULD_RATE_LIMIT,
            &request,
            self.timeout,
        )
        .await;
        let resp = match answer {
            Ok(resp) => resp,
            Err(e) if self.source.failure_mode_deny => {
                tracing::warn!(domain = %self.domain, filter = self.origin(), error = %e, "rate limit service unavailable; request refused (failure_mode_deny)");
                super::stats::rate_limit(&self.domain, "error");
                let mut reply = Response::new(RespBody::text(Bytes::new()));
                *reply.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Outcome::Refuse(Box::new(reply), "rate_limiter_error", true);
            }
            Err(e) => {
                tracing::warn!(domain = %self.domain, filter = self.origin(), error = %e, "rate limit service unavailable; request allowed (failure_mode_deny false)");
                super::stats::rate_limit(&self.domain, "failure_mode_allowed");
                return Outcome::Pass {
                    response: Vec::new(),
                    request: Vec::new(),
                };
            }
        };
        let headers = |list: &[wire::envoy::config::core::v3::HeaderValue]| {
            list.iter()
                .filter_map(|h| {
                    Some((
                        HeaderName::try_from(h.key.as_str()).ok()?,
                        HeaderValue::try_from(h.value.as_str()).ok()?,
                    ))
                })
                .collect::<Vec<_>>()
        };
        let mut response = headers(&resp.response_headers_to_add);
        if self.source.x_ratelimit_headers {
            response.extend(x_ratelimit_headers(&resp));
        }
        if resp.overall_code == rls::rate_limit_response::Code::OverLimit as i32 {
            super::stats::rate_limit(&self.domain, "over_limit");
            tracing::debug!(domain = %self.domain, "over the global rate limit");
            let mut reply = Response::new(RespBody::text(Bytes::from(resp.raw_body)));
            *reply.status_mut() = self.status;
            if !self.source.disable_x_envoy_ratelimited_header {
                reply.headers_mut().insert(
                    HeaderName::from_static("x-envoy-ratelimited"),
                    HeaderValue::from_static("true"),
                );
            }
            for (name, value) in response {
                reply.headers_mut().insert(name, value);
            }
            return Outcome::Refuse(Box::new(reply), "request_rate_limited", false);
        }
        super::stats::rate_limit(&self.domain, "ok");
        Outcome::Pass {
            response,
            request: headers(&resp.request_headers_to_add),
        }
    }
}

/// Envoy's DRAFT_VERSION_03 headers from the descriptor closest to its limit.
fn x_ratelimit_headers(resp: &rls::RateLimitResponse) -> Vec<(HeaderName, HeaderValue)> {
    let Some(closest) = resp
        .statuses
        .iter()
        .filter(|s| s.current_limit.is_some())
        .min_by_key(|s| s.limit_remaining)
    else {
        return Vec::new();
    };
    let limit = closest
        .current_limit
        .as_ref()
        .map_or(0, |l| l.requests_per_unit);
    let reset = closest
        .duration_until_reset
        .as_ref()
        .map_or(0, |d| d.seconds.max(0));
    [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", closest.limit_remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ]
    .into_iter()
    .filter_map(|(n, v)| Some((HeaderName::from_static(n), HeaderValue::try_from(v).ok()?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use pb::rate_limit_action::Action as A;

    fn limit(rate_limits: Vec<Vec<A>>) -> GlobalRateLimit {
        GlobalRateLimit::compile(&pb::GlobalRateLimit {
            domain: "d".into(),
            rate_limits: rate_limits
                .into_iter()
                .map(|actions| pb::RateLimitActions {
                    actions: actions
                        .into_iter()
                        .map(|a| pb::RateLimitAction { action: Some(a) })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        })
        .expect("compiles")
    }

    fn view<'a>(headers: &'a HeaderMap, path: &'a str) -> RequestView<'a> {
        RequestView {
            method: &Method::GET,
            path,
            authority: "productpage:9080",
            scheme: "http",
            headers,
            remote: "10.0.0.7".parse().expect("ip"),
            inbound_port: Some(9080),
        }
    }

    fn entries(d: &[RateLimitDescriptor]) -> Vec<Vec<(String, String)>> {
        d.iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn descriptors_as_envoy_makes_them() {
        let header = |name: &str, key: &str, skip: bool| {
            A::RequestHeaders(pb::RequestHeadersAction {
                header_name: name.into(),
                descriptor_key: key.into(),
                skip_if_absent: skip,
            })
        };
        let admin = A::HeaderValueMatch(pb::HeaderValueMatchAction {
            descriptor_value: "admin".into(),
            expect_match: true,
            headers: vec![pb::HeaderValueMatcher {
                name: ":path".into(),
                kind: Some(pb::header_value_matcher::Kind::Prefix("/admin".into())),
                ..Default::default()
            }],
            ..Default::default()
        });
        let l = limit(vec![
            vec![header(":path", "PATH", false)],
            vec![header("x-user", "USER", false)],
            vec![
                A::GenericKey(pb::GenericKeyAction {
                    descriptor_value: "all".into(),
                    ..Default::default()
                }),
                header("x-user", "USER", true),
                A::RemoteAddress(true),
            ],
            vec![admin],
            vec![A::DestinationCluster(true)],
        ]);
        let none = HeaderMap::new();
        assert_eq!(
            entries(&l.descriptors(&view(&none, "/productpage"))),
            vec![
                vec![("PATH".into(), "/productpage".into())],
                // x-user absent: the second entry gives no descriptor; the
                // third skips it.
                vec![
                    ("generic_key".into(), "all".into()),
                    ("remote_address".into(), "10.0.0.7".into())
                ],
                vec![("destination_cluster".into(), "inbound|9080||".into())],
            ]
        );
        let mut user = HeaderMap::new();
        user.insert("x-user", HeaderValue::from_static("jason"));
        let d = entries(&l.descriptors(&view(&user, "/admin/x")));
        assert_eq!(d[1], vec![("USER".to_string(), "jason".to_string())]);
        assert_eq!(d[2][1], ("USER".to_string(), "jason".to_string()));
        assert_eq!(
            d[3],
            vec![("header_match".to_string(), "admin".to_string())]
        );
    }

    #[test]
    fn source_cluster_masked_address_query_and_header_variants() {
        use pb::header_value_matcher::Kind;
        let header = |kind: Kind, ignore_case: bool, missing_as_empty: bool| {
            A::HeaderValueMatch(pb::HeaderValueMatchAction {
                descriptor_value: "hit".into(),
                expect_match: true,
                headers: vec![pb::HeaderValueMatcher {
                    name: "x-tier".into(),
                    kind: Some(kind),
                    ignore_case,
                    treat_missing_as_empty: missing_as_empty,
                    ..Default::default()
                }],
                ..Default::default()
            })
        };
        let query = |value: Option<pb::QueryValueMatcher>| {
            A::QueryParameterValueMatch(pb::QueryParameterValueMatchAction {
                descriptor_value: "q".into(),
                expect_match: true,
                parameters: vec![pb::QueryParameterMatcher {
                    name: "debug".into(),
                    value,
                }],
                ..Default::default()
            })
        };
        let l = limit(vec![
            vec![A::SourceCluster("productpage.default".into())],
            vec![A::MaskedRemoteAddress(pb::MaskedRemoteAddressAction {
                v4_prefix_len: 24,
                v6_prefix_len: 64,
            })],
            vec![header(Kind::Exact("GOLD".into()), true, false)],
            vec![header(
                Kind::Range(pb::HeaderValueRange { start: 1, end: 10 }),
                false,
                false,
            )],
            vec![header(Kind::Exact(String::new()), false, true)],
            vec![query(None)],
            vec![query(Some(pb::QueryValueMatcher {
                kind: Some(pb::query_value_matcher::Kind::Prefix("T".into())),
                ignore_case: true,
            }))],
        ]);
        let none = HeaderMap::new();
        assert_eq!(
            entries(&l.descriptors(&view(&none, "/p"))),
            vec![
                vec![("source_cluster".into(), "productpage.default".into())],
                vec![("masked_remote_address".into(), "10.0.0.0/24".into())],
                // A missing x-tier treated as empty matches exact "".
                vec![("header_match".into(), "hit".into())],
            ]
        );
        let mut gold = HeaderMap::new();
        gold.insert("x-tier", HeaderValue::from_static("gold"));
        assert_eq!(
            entries(&l.descriptors(&view(&gold, "/p?debug=true")))[2..],
            [
                vec![("header_match".into(), "hit".into())],
                vec![("query_match".into(), "q".into())],
                vec![("query_match".into(), "q".into())],
            ]
        );
        let mut five = HeaderMap::new();
        five.insert("x-tier", HeaderValue::from_static("5"));
        assert_eq!(
            entries(&l.descriptors(&view(&five, "/p?debug")))[2..],
            [
                vec![("header_match".into(), "hit".into())],
                vec![("query_match".into(), "q".into())],
            ]
        );
        let mut v6 = view(&none, "/");
        v6.remote = "2001:db8:1:2:3:4:5:6".parse().expect("ip");
        assert_eq!(
            entries(&l.descriptors(&v6))[1],
            vec![(
                "masked_remote_address".to_string(),
                "2001:db8:1:2::/64".to_string()
            )]
        );
    }

    #[test]
    fn no_actions_no_descriptors() {
        let l = limit(Vec::new());
        assert!(l.descriptors(&view(&HeaderMap::new(), "/")).is_empty());
    }
}
