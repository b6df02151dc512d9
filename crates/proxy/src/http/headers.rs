//! Header manipulation: per-route header operations, hop-by-hop headers, and
//! the request id.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use wire::pb;

/// A compiled `HeaderOps`. Like Envoy, removals happen before additions, so
/// a route can drop a header and set a new value of it in one go.
#[derive(Debug, Default)]
pub struct HeaderOps {
    /// `None` when there is nothing to do, as on most routes and targets:
    /// one pointer then, where three empty vectors took 72 bytes.
    ops: Option<Box<Ops>>,
}

#[derive(Debug)]
struct Ops {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl HeaderOps {
    pub fn compile(ops: Option<&pb::HeaderOps>) -> Result<Self, String> {
        let Some(ops) = ops else {
            return Ok(HeaderOps::default());
        };
        let pairs = |map: &std::collections::BTreeMap<String, String>| -> Result<Box<[_]>, String> {
            let mut v = map
                .iter()
                .map(|(k, v)| {
                    Ok((
                        name(k)?,
                        HeaderValue::from_str(v).map_err(|_| {
                            format!("header {k:?}: value {v:?} is not a valid header value")
                        })?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            Ok(v.into_boxed_slice())
        };
        let ops = Ops {
            remove: ops
                .remove
                .iter()
                .map(|k| name(k))
                .collect::<Result<_, _>>()?,
            set: pairs(&ops.set)?,
            add: pairs(&ops.add)?,
        };
        let empty = ops.remove.is_empty() && ops.set.is_empty() && ops.add.is_empty();
        Ok(HeaderOps {
            ops: (!empty).then(|| Box::new(ops)),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_none()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        let Some(ops) = &self.ops else { return };
        for k in &ops.remove {
            headers.remove(k);
        }
        for (k, v) in &ops.set {
            headers.insert(k.clone(), v.clone());
        }
        for (k, v) in &ops.add {
            headers.append(k.clone(), v.clone());
        }
    }
}

fn name(k: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{k:?} is not a valid header name"))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus `proxy-connection`, which explicit-proxy clients such as curl send.
/// A proxy must not forward them; HTTP/2 forbids them outright.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Returns the request id, generating a UUID v4 when the client sent none
/// (as Envoy does), so that every hop logs the same id.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        return v.clone();
    }
    let v = HeaderValue::from_str(&uuid_v4()).unwrap_or(HeaderValue::from_static("-"));
    headers.insert(X_REQUEST_ID, v.clone());
    v
}

/// A random (version 4) UUID in its canonical text form.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_remove_then_set_then_add() {
        let ops = HeaderOps::compile(Some(&pb::HeaderOps {
            set: [("X-A".to_string(), "1".to_string())].into(),
            add: [("x-b".to_string(), "2".to_string())].into(),
            remove: vec!["x-a".into(), "x-c".into()],
        }))
        .expect("valid");
        let mut h = HeaderMap::new();
        h.insert("x-a", "0".parse().expect("value"));
        h.insert("x-b", "1".parse().expect("value"));
        h.insert("x-c", "1".parse().expect("value"));
        ops.apply(&mut h);
        assert_eq!(h.get("x-a").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(h.get_all("x-b").iter().count(), 2);
        assert!(h.get("x-c").is_none());
    }

    #[test]
    fn bad_header_is_rejected() {
        let err = HeaderOps::compile(Some(&pb::HeaderOps {
            set: [("bad name".to_string(), "v".to_string())].into(),
            ..Default::default()
        }));
        assert!(err.is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "x-custom, keep-alive".parse().expect("value"));
        h.insert("x-custom", "1".parse().expect("value"));
        h.insert("proxy-connection", "keep-alive".parse().expect("value"));
        h.insert("x-keep", "1".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn uuid_shape() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(id, uuid_v4());
    }
}
