//! CORS (Istio's `corsPolicy`), as Envoy's CORS filter applies it: a
//! request with an allowed `Origin` is a CORS request; its preflight
//! (`OPTIONS` with `Access-Control-Request-Method`) is answered by the proxy,
//! and any other response to it is decorated with the allow headers. A
//! request from an origin not allowed passes untouched (an unmatched
//! preflight goes upstream, unless the policy says to answer it bare).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use wire::pb;

use crate::resp_body::RespBody;
use crate::snapshot::matcher::StrMatch;

#[derive(Debug)]
pub struct Cors {
    origins: Vec<StrMatch>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    ignore_unmatched_preflights: bool,
}

/// What the policy makes of a request.
#[derive(Debug)]
pub enum Verdict {
    /// Not a CORS request (no origin, or one not allowed): proceed as usual.
    Pass,
    /// Answered here (a preflight).
    Reply(Box<Response<RespBody>>),
    /// A CORS request from this allowed origin: proceed, then decorate the response.
    Decorate(HeaderValue),
}

impl Cors {
    pub fn compile(p: Option<&pb::CorsPolicy>) -> Result<Option<Self>, String> {
        let Some(p) = p else { return Ok(None) };
        let origins = p
            .allow_origins
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                StrMatch::compile(m, false)
                    .map_err(|e| format!("cors.allow_origins[{i}]: {e}"))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let list = |what: &str, items: &[String]| -> Result<Option<HeaderValue>, String> {
            if items.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&items.join(","))
                .map(Some)
                .map_err(|_| format!("cors.{what}: {items:?} is not a valid header value"))
        };
        Ok(Some(Cors {
            origins,
            allow_methods: list("allow_methods", &p.allow_methods)?,
            allow_headers: list("allow_headers", &p.allow_headers)?,
            expose_headers: list("expose_headers", &p.expose_headers)?,
            max_age: p.max_age_s.map(HeaderValue::from),
            allow_credentials: p.allow_credentials,
            ignore_unmatched_preflights: p.ignore_unmatched_preflights,
        }))
    }

    /// Envoy allows an origin any matcher accepts; a matcher that accepts
    /// "*" allows every origin.
    fn allows(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|m| m.matches("*", false) || m.matches(origin, false))
    }

    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN).filter(|o| !o.is_empty()) else {
            return Verdict::Pass;
        };
        let preflight = method == Method::OPTIONS
            && headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .is_some_and(|m| !m.is_empty());
        if !self.allows(origin.to_str().unwrap_or("")) {
            if preflight && self.ignore_unmatched_preflights {
                return Verdict::Reply(Box::new(ok()));
            }
            return Verdict::Pass;
        }
        if !preflight {
            return Verdict::Decorate(origin.clone());
        }
        let mut resp = ok();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ] {
            if let Some(v) = value {
                h.insert(name, v.clone());
            }
        }
        Verdict::Reply(Box::new(resp))
    }

    /// The headers a response to an allowed CORS request carries.
    pub fn decorate(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

fn ok() -> Response<RespBody> {
    let mut resp = Response::new(RespBody::Empty);
    *resp.status_mut() = StatusCode::OK;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::string_match::Kind;

    fn policy() -> Cors {
        Cors::compile(Some(&pb::CorsPolicy {
            allow_origins: vec![
                pb::StringMatch {
                    kind: Some(Kind::Exact("https://a.example".into())),
                },
                pb::StringMatch {
                    kind: Some(Kind::Regex(r"https://.*\.b\.example".into())),
                },
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-token".into()],
            expose_headers: vec!["x-trace".into()],
            max_age_s: Some(600),
            allow_credentials: true,
            ignore_unmatched_preflights: false,
        }))
        .expect("valid")
        .expect("some")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn preflight_from_an_allowed_origin_is_answered() {
        let h = headers(&[
            ("origin", "https://x.b.example"),
            ("access-control-request-method", "POST"),
        ]);
        let Verdict::Reply(resp) = policy().check(&Method::OPTIONS, &h) else {
            panic!("a preflight is answered");
        };
        assert_eq!(resp.status(), StatusCode::OK);
        let got = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok());
        assert_eq!(
            got("access-control-allow-origin"),
            Some("https://x.b.example")
        );
        assert_eq!(got("access-control-allow-methods"), Some("GET,POST"));
        assert_eq!(got("access-control-allow-headers"), Some("x-token"));
        assert_eq!(got("access-control-max-age"), Some("600"));
        assert_eq!(got("access-control-allow-credentials"), Some("true"));
    }

    #[test]
    fn other_requests_are_decorated_or_passed() {
        let p = policy();
        let h = headers(&[("origin", "https://a.example")]);
        let Verdict::Decorate(origin) = p.check(&Method::GET, &h) else {
            panic!("an allowed CORS request is decorated");
        };
        let mut out = HeaderMap::new();
        p.decorate(origin, &mut out);
        assert_eq!(out["access-control-allow-origin"], "https://a.example");
        assert_eq!(out["access-control-expose-headers"], "x-trace");
        // Not allowed, or not CORS at all: untouched, preflight included.
        for h in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ]),
            HeaderMap::new(),
        ] {
            assert!(matches!(p.check(&Method::OPTIONS, &h), Verdict::Pass));
        }
        // OPTIONS without Access-Control-Request-Method is no preflight.
        let h = headers(&[("origin", "https://a.example")]);
        assert!(matches!(
            p.check(&Method::OPTIONS, &h),
            Verdict::Decorate(_)
        ));
    }

    #[test]
    fn wildcard_and_ignored_preflights() {
        let p = Cors::compile(Some(&pb::CorsPolicy {
            allow_origins: vec![pb::StringMatch {
                kind: Some(Kind::Exact("*".into())),
            }],
            ..Default::default()
        }))
        .expect("valid")
        .expect("some");
        let h = headers(&[("origin", "https://anything.example")]);
        assert!(matches!(p.check(&Method::GET, &h), Verdict::Decorate(_)));
        let strict = Cors::compile(Some(&pb::CorsPolicy {
            ignore_unmatched_preflights: true,
            ..Default::default()
        }))
        .expect("valid")
        .expect("some");
        let h = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
        ]);
        let Verdict::Reply(resp) = strict.check(&Method::OPTIONS, &h) else {
            panic!("answered without CORS headers");
        };
        assert!(resp.headers().is_empty());
    }
}
