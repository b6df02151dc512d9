//! Request authentication: the JWT rules of a listener's workload
//! (RequestAuthentication, compiled), applied as Istio configures Envoy's
//! `jwt_authn` filter — every rule is an alternative (`requires_any`) and a
//! request without a token passes (`allow_missing`):
//!
//! - no token in any rule's locations: the request goes on unauthenticated,
//!   and AuthorizationPolicy decides (`requestPrincipals` do not match it);
//! - a token that no rule validates — malformed, of an issuer no rule at
//!   that location names, expired, for other audiences, badly signed, or of
//!   an issuer whose keys cannot be fetched — is answered 401 with Envoy's
//!   message as the body;
//! - a valid token makes `request.auth.*` ([`Verified`]) for authorization,
//!   is removed from its header unless `forwardOriginalToken`, and is
//!   copied out as `outputPayloadToHeader` / `outputClaimToHeaders` say
//!   (headers of those names that the client sent are always removed first,
//!   so that the application can trust them).

mod cache;
mod keys;
mod metrics;
mod remote;
mod token;

pub use keys::KeySet;
pub use metrics::encode as encode_metrics;
pub use remote::Timing;
pub use token::{Failure, Jwt, Verified};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{COOKIE, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use serde_json::Value;
use wire::pb;

use remote::RemoteJwks;

/// Istio's default `timeout` for fetching a jwksUri.
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener's JWT rules.
#[derive(Debug, Default)]
pub struct Authn {
    rules: Vec<Rule>,
    /// Every output header of every rule: never taken from the client.
    outputs: Vec<HeaderName>,
}

#[derive(Debug)]
struct Rule {
    name: String,
    issuer: String,
    audiences: Vec<String>,
    keys: Keys,
    headers: Vec<(HeaderName, String)>,
    params: Vec<String>,
    cookies: Vec<String>,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    space_delimited: Vec<String>,
    /// Tokens this rule's keys verified.
    verified: cache::Verified,
}

enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
    /// An inline JWKS that does not parse: its issuer's tokens fail, as in
    /// Envoy (the rest of the config still applies).
    Unusable,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::Inline(k) => write!(f, "Inline({k:?})"),
            Keys::Remote(_) => write!(f, "Remote"),
            Keys::Unusable => write!(f, "Unusable"),
        }
    }
}

/// Where a token was found: for removing it once validated.
#[derive(Clone, Debug)]
enum Location {
    Header(HeaderName),
    Elsewhere,
}

/// A refused request: 401 with `failure.message()` as the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub Failure);

impl Authn {
    pub fn compile(rules: &[pb::JwtRule]) -> Result<Self, String> {
        let header = |n: &str| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}"))
        };
        let mut outputs = Vec::new();
        let mut compiled = Vec::new();
        for r in rules {
            let ctx = |e: String| format!("{}: {e}", r.name);
            let timeout = match r.jwks_timeout_ms {
                0 => DEFAULT_FETCH_TIMEOUT,
                ms => Duration::from_millis(ms.into()),
            };
            let keys = match &r.jwks {
                Some(pb::jwt_rule::Jwks::JwksInline(text)) => match KeySet::parse(text) {
                    Ok(k) => Keys::Inline(Arc::new(k)),
                    Err(e) => {
                        tracing::warn!(rule = %r.name, issuer = %r.issuer, error = %e, "inline JWKS unusable: this issuer's tokens are refused");
                        Keys::Unusable
                    }
                },
                Some(pb::jwt_rule::Jwks::JwksUri(uri)) => {
                    Keys::Remote(RemoteJwks::shared(uri, Timing::with_timeout(timeout)))
                }
                None => Keys::Unusable,
            };
            let payload_header = (!r.output_payload_to_header.is_empty())
                .then(|| header(&r.output_payload_to_header))
                .transpose()
                .map_err(ctx)?;
            let claim_headers = r
                .output_claim_to_headers
                .iter()
                .map(|c| Ok((header(&c.header)?, c.claim.clone())))
                .collect::<Result<Vec<_>, String>>()
                .map_err(ctx)?;
            outputs.extend(payload_header.iter().cloned());
            outputs.extend(claim_headers.iter().map(|(h, _)| h.clone()));
            compiled.push(Rule {
                name: r.name.clone(),
                issuer: r.issuer.clone(),
                audiences: r.audiences.clone(),
                keys,
                headers: r
                    .from_headers
                    .iter()
                    .map(|h| Ok((header(&h.name)?, h.prefix.clone())))
                    .collect::<Result<_, String>>()
                    .map_err(ctx)?,
                params: r.from_params.clone(),
                cookies: r.from_cookies.clone(),
                forward: r.forward_original_token,
                payload_header,
                claim_headers,
                space_delimited: r.space_delimited_claims.clone(),
                verified: cache::Verified::default(),
            });
        }
        Ok(Authn {
            rules: compiled,
            outputs,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Authenticates one request, changing its headers as the rules say.
    /// `Ok(None)`: no token, the request goes on unauthenticated.
    pub async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        uri: &Uri,
    ) -> Result<Option<Arc<Verified>>, Refused> {
        if self.rules.is_empty() {
            return Ok(None);
        }
        for h in &self.outputs {
            headers.remove(h);
        }
        // Each distinct token, with the rules whose locations hold it.
        let mut found: Vec<(String, Vec<(usize, Location)>)> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.extract(headers, uri, |token, loc| {
                match found.iter_mut().find(|(t, _)| t == token) {
                    Some((_, at)) => at.push((i, loc)),
                    None => found.push((token.to_string(), vec![(i, loc)])),
                }
            });
        }
        let mut first = None;
        for (token, at) in &found {
            let (verified, rule) = match self.verify(token, at).await {
                Ok(v) => v,
                Err(f) => {
                    metrics::denied(f);
                    tracing::debug!(reason = f.message(), "JWT refused");
                    return Err(Refused(f));
                }
            };
            rule.output(token, &verified, headers);
            if !rule.forward {
                for (i, loc) in at {
                    if let (true, Location::Header(h)) = (std::ptr::eq(&self.rules[*i], rule), loc)
                    {
                        headers.remove(h);
                    }
                }
            }
            first.get_or_insert(verified);
        }
        if first.is_some() {
            metrics::allowed();
        }
        Ok(first)
    }

    /// The token checked against the rules that found it, in Envoy's order:
    /// format, issuer, time, audiences, keys, signature.
    async fn verify(
        &self,
        token: &str,
        at: &[(usize, Location)],
    ) -> Result<(Arc<Verified>, &Rule), Failure> {
        let jwt = Jwt::parse(token)?;
        // A plain loop, not an iterator of closures: it is held across awaits.
        let mut candidates: Vec<&Rule> = Vec::with_capacity(at.len());
        for (i, _) in at {
            let rule = &self.rules[*i];
            if rule.issuer == jwt.iss && !candidates.iter().any(|r| std::ptr::eq(*r, rule)) {
                candidates.push(rule);
            }
        }
        let Some(first) = candidates.first().copied() else {
            return Err(Failure::UnknownIssuer);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        jwt.check_time(now)?;
        let mut error = None;
        for rule in candidates {
            match rule.check(&jwt, token, now).await {
                Ok(()) => return Ok((Verified::new(jwt, &rule.space_delimited), rule)),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        tracing::trace!(rule = %first.name, "no rule validated the token");
        Err(error.unwrap_or(Failure::VerificationFails))
    }
}

impl Rule {
    /// Calls `found` with each token at this rule's locations.
    fn extract(&self, headers: &HeaderMap, uri: &Uri, mut found: impl FnMut(&str, Location)) {
        for (name, prefix) in &self.headers {
            for v in headers.get_all(name) {
                let Ok(v) = v.to_str() else { continue };
                let token = if prefix.is_empty() {
                    Some(v)
                } else {
                    v.get(..prefix.len())
                        .filter(|p| p.eq_ignore_ascii_case(prefix))
                        .map(|_| &v[prefix.len()..])
                };
                if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
                    found(t, Location::Header(name.clone()));
                }
            }
        }
        if !self.params.is_empty()
            && let Some(q) = uri.query()
        {
            for pair in q.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if !v.is_empty() && self.params.iter().any(|p| p == k) {
                    found(v, Location::Elsewhere);
                }
            }
        }
        if !self.cookies.is_empty() {
            for v in headers.get_all(COOKIE) {
                let Ok(v) = v.to_str() else { continue };
                for c in v.split(';') {
                    let (k, val) = c.trim().split_once('=').unwrap_or((c, ""));
                    let val = val.trim_matches('"');
                    if !val.is_empty() && self.cookies.iter().any(|n| n == k) {
                        found(val, Location::Elsewhere);
                    }
                }
            }
        }
    }

    /// Audiences, then the signature (or the memory of it).
    async fn check(&self, jwt: &Jwt<'_>, token: &str, now: u64) -> Result<(), Failure> {
        if !self.audiences.is_empty() {
            let auds = jwt.audiences();
            if !auds.iter().any(|a| self.audiences.contains(a)) {
                return Err(Failure::AudienceNotAllowed);
            }
        }
        let keys = match &self.keys {
            Keys::Inline(k) => k.clone(),
            Keys::Remote(r) => r.keys().await.ok_or(Failure::JwksFetchFailed)?,
            Keys::Unusable => return Err(Failure::NoMatchingKey),
        };
        if self.verified.contains(token, &keys, now) {
            return Ok(());
        }
        keys.verify(jwt)?;
        let exp = jwt.claims.get("exp").and_then(Value::as_f64);
        self.verified.insert(token, &keys, exp, now);
        Ok(())
    }

    fn output(&self, token: &str, v: &Verified, headers: &mut HeaderMap) {
        if let Some(h) = &self.payload_header
            && let Some(payload) = token.split('.').nth(1)
            && let Ok(value) = HeaderValue::from_str(payload)
        {
            headers.insert(h.clone(), value);
        }
        for (h, claim) in &self.claim_headers {
            let text = match v.claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => continue,
            };
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(h.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
