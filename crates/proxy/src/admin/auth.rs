//! Who may use the admin server's mutating endpoints (`POST /quitquitquit`,
//! `/healthcheck/fail`, ...). Envoy trusts whoever reaches its admin port,
//! which is safe only when the port is on a loopback that the pod alone
//! shares (its own network namespace). On one machine without namespaces
//! every local process shares 127.0.0.0/8, so there a caller must prove it
//! holds the proxy's admin token.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use http::HeaderMap;
use rand::TryRngCore;
use rand::rngs::OsRng;

/// How callers of the mutating endpoints are authenticated.
#[derive(Clone, Debug, Default)]
pub enum AdminAuth {
    /// Nobody may use them (the default: a proxy that was not told how to
    /// authenticate its operator trusts no one). Stop it with a signal.
    #[default]
    Closed,
    /// Callers send `Authorization: Bearer <token>`: for a proxy whose
    /// loopback other processes share (`trellis up` on one machine).
    Token(AdminToken),
    /// Callers must connect from 127.0.0.1 or ::1: for a proxy in its pod's
    /// own network namespace, whose loopback only the pod's containers reach.
    Loopback,
}

/// A secret proving the right to change a running proxy. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

/// Bytes of randomness in a generated token.
const TOKEN_BYTES: usize = 32;

impl AdminToken {
    /// A token given by whoever started the proxy; `None` if empty.
    pub fn new(token: String) -> Option<Self> {
        let token = token.trim().to_string();
        (!token.is_empty()).then_some(AdminToken(token))
    }

    /// A new random token (256 bits from the OS), hex.
    pub fn generate() -> std::io::Result<Self> {
        let mut bytes = [0u8; TOKEN_BYTES];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(std::io::Error::other)?;
        Ok(AdminToken(
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Writes the token to `path`, readable by its owner only (0600) from the
    /// moment it exists: written to a new private file beside it, then renamed
    /// over whatever was there, so a reader sees the old token or the new one.
    pub fn write_private(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        // A leftover of a crash may have any mode: never write into it.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(self.0.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why a mutating call was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the admin port's mutating endpoints are closed on this proxy")]
    Closed,
    #[error("an `Authorization: Bearer <admin token>` header is needed")]
    NoToken,
    #[error("the admin token is not this proxy's")]
    WrongToken,
    #[error("only callers on 127.0.0.1 or ::1 may do this, not {0}")]
    NotLoopback(IpAddr),
}

impl Refusal {
    /// 401 when presenting the right token would help, 403 when nothing would.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Refusal::NoToken | Refusal::WrongToken => http::StatusCode::UNAUTHORIZED,
            Refusal::Closed | Refusal::NotLoopback(_) => http::StatusCode::FORBIDDEN,
        }
    }
}

impl AdminAuth {
    /// Whether the caller at `peer` sending `headers` may use a mutating endpoint.
    pub fn check(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Refusal> {
        match self {
            AdminAuth::Closed => Err(Refusal::Closed),
            AdminAuth::Token(token) => {
                let presented = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, rest) = v.trim().split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                    })
                    .ok_or(Refusal::NoToken)?;
                if token.matches(presented) {
                    Ok(())
                } else {
                    Err(Refusal::WrongToken)
                }
            }
            AdminAuth::Loopback => {
                let ip = match peer.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                // Exactly the two addresses: on a shared loopback any local
                // process may bind 127.x.y.z, and a pod-local loopback has only these.
                if ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST) {
                    Ok(())
                } else {
                    Err(Refusal::NotLoopback(peer.ip()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            value.parse().expect("header value"),
        );
        h
    }

    #[test]
    fn token_mode_needs_this_proxys_token() {
        let token = AdminToken::generate().expect("random");
        assert_eq!(token.as_str().len(), 2 * TOKEN_BYTES);
        let auth = AdminAuth::Token(token.clone());
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        assert_eq!(auth.check(peer, &HeaderMap::new()), Err(Refusal::NoToken));
        assert_eq!(
            auth.check(peer, &with_auth(&format!("Bearer {}", token.as_str()))),
            Ok(())
        );
        assert_eq!(
            auth.check(peer, &with_auth(&format!("bearer  {} ", token.as_str()))),
            Ok(())
        );
        let other = AdminToken::generate().expect("random");
        assert_eq!(
            auth.check(peer, &with_auth(&format!("Bearer {}", other.as_str()))),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            auth.check(peer, &with_auth(token.as_str())),
            Err(Refusal::NoToken),
            "the scheme is required"
        );
        assert_eq!(
            auth.check(
                peer,
                &with_auth(&format!("Bearer {}", &token.as_str()[1..]))
            ),
            Err(Refusal::WrongToken)
        );
        assert!(!format!("{auth:?}").contains(token.as_str()));
    }

    #[test]
    fn loopback_mode_takes_only_localhost() {
        let auth = AdminAuth::Loopback;
        let h = HeaderMap::new();
        for ok in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert_eq!(auth.check(ok.parse().expect("addr"), &h), Ok(()), "{ok}");
        }
        for refused in ["127.10.2.1:1", "10.0.0.1:1", "[::2]:1"] {
            let peer: SocketAddr = refused.parse().expect("addr");
            assert_eq!(
                auth.check(peer, &h),
                Err(Refusal::NotLoopback(peer.ip())),
                "{refused}"
            );
        }
        assert_eq!(
            AdminAuth::Closed.check("127.0.0.1:1".parse().expect("addr"), &h),
            Err(Refusal::Closed)
        );
    }

    #[test]
    fn token_file_is_private_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        let a = AdminToken::generate().expect("random");
        a.write_private(&path).expect("write");
        let b = AdminToken::generate().expect("random");
        b.write_private(&path).expect("rewrite");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), b.as_str());
        assert_eq!(AdminToken::new(format!(" {}\n", b.as_str())), Some(b));
        assert_eq!(AdminToken::new("  ".into()), None);
    }
}
