//! An HTTPS Gateway server's TLS and a DestinationRule's client credential
//! at a gateway: both come from Secrets in the gateway's namespace, read the
//! same way, so they live together.

use api::networking::{Server, ServerTlsMode};
use k8s_openapi::api::core::v1::Secret;
use wire::pb;

use crate::mesh::Mesh;

/// Why an HTTPS server cannot be served; it is skipped, as Istio skips it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error(
        "tls.mode {0} is not supported on an HTTPS server (SIMPLE, MUTUAL and ISTIO_MUTUAL are)"
    )]
    Mode(String),
    #[error("no tls settings: an HTTPS server needs tls.mode and tls.credentialName")]
    NoTls,
    #[error("tls.credentialName is not set (certificate files on the gateway are not supported)")]
    NoCredential,
    #[error("Secret {namespace}/{name} (tls.credentialName) not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no {what} (keys tls.crt/tls.key, or cert/key)")]
    SecretIncomplete {
        namespace: String,
        name: String,
        what: &'static str,
    },
    #[error("Secret {namespace}/{name}: {what} is not PEM")]
    NotPem {
        namespace: String,
        name: String,
        what: &'static str,
    },
    #[error(
        "MUTUAL needs a CA: none in Secret {namespace}/{name} (ca.crt or cacert) nor in Secret {namespace}/{name}-cacert"
    )]
    NoClientCa { namespace: String, name: String },
    #[error("tls.maxProtocolVersion {0}: the gateway speaks TLS 1.2 and 1.3 only")]
    MaxVersion(String),
    #[error("tls.minProtocolVersion is above tls.maxProtocolVersion")]
    VersionRange,
}

/// The certificate, key and (MUTUAL) client CA of an HTTPS server, from the
/// Secret its `credentialName` names in the gateway workload's namespace.
pub fn server_tls(
    mesh: &Mesh,
    node: &pb::Node,
    server: &Server,
) -> Result<pb::GatewayTls, TlsError> {
    let settings = server.tls.as_ref().ok_or(TlsError::NoTls)?;
    let sni: Vec<String> = server
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
        .collect();
    let mutual = match settings.mode {
        Some(ServerTlsMode::Simple) => false,
        Some(ServerTlsMode::Mutual) => true,
        // Mesh mTLS with the gateway's own workload certificate (what
        // sidecars send an egress gateway): nothing to look up here.
        Some(ServerTlsMode::IstioMutual) => {
            let (min_protocol_version, max_protocol_version) = protocol_versions(settings)?;
            return Ok(pb::GatewayTls {
                sni,
                istio_mutual: true,
                min_protocol_version,
                max_protocol_version,
                cipher_suites: settings.cipher_suites.clone(),
                ..Default::default()
            });
        }
        Some(other) => return Err(TlsError::Mode(format!("{other:?}").to_ascii_uppercase())),
        None => return Err(TlsError::Mode("PASSTHROUGH (the default)".into())),
    };
    let name = settings
        .credential_name
        .as_deref()
        .or(settings.credential_names.first().map(String::as_str))
        .filter(|n| !n.is_empty())
        .ok_or(TlsError::NoCredential)?;
    let namespace = if node.namespace.is_empty() {
        "default"
    } else {
        node.namespace.as_str()
    };
    let lookup = |n: &str| mesh.secrets.get(&(namespace.to_string(), n.to_string()));
    let missing = |what| TlsError::SecretIncomplete {
        namespace: namespace.into(),
        name: name.into(),
        what,
    };
    let secret = lookup(name).ok_or_else(|| TlsError::SecretNotFound {
        namespace: namespace.into(),
        name: name.into(),
    })?;
    let cert_chain =
        secret_value(secret, &["tls.crt", "cert"]).ok_or_else(|| missing("certificate"))?;
    let private_key =
        secret_value(secret, &["tls.key", "key"]).ok_or_else(|| missing("private key"))?;
    // Only the shape is checked here (the proxy parses them): an obvious
    // mistake skips this server rather than making the gateway refuse the
    // whole listener update.
    let not_pem = |what| TlsError::NotPem {
        namespace: namespace.into(),
        name: name.into(),
        what,
    };
    if !cert_chain.contains("-----BEGIN CERTIFICATE-----") {
        return Err(not_pem("the certificate"));
    }
    if !private_key.contains("PRIVATE KEY-----") {
        return Err(not_pem("the private key"));
    }
    let client_ca = if mutual {
        let own = secret_value(secret, &["ca.crt", "cacert"]);
        let separate = settings
            .ca_cert_credential_name
            .clone()
            .unwrap_or_else(|| format!("{name}-cacert"));
        own.or_else(|| lookup(&separate).and_then(|s| secret_value(s, &["ca.crt", "cacert"])))
            .ok_or_else(|| TlsError::NoClientCa {
                namespace: namespace.into(),
                name: name.into(),
            })?
    } else {
        String::new()
    };
    let (min_protocol_version, max_protocol_version) = protocol_versions(settings)?;
    Ok(pb::GatewayTls {
        sni,
        cert_chain,
        private_key,
        client_ca,
        route_config: String::new(),
        min_protocol_version,
        max_protocol_version,
        cipher_suites: settings.cipher_suites.clone(),
        istio_mutual: false,
    })
}

/// A DestinationRule's `tls.credentialName` at a gateway (Istio resolves it
/// there only): the Secret `name` in the gateway's `namespace` gives the CA
/// that verifies the server (`ca.crt`/`cacert`, else the Secret
/// `<name>-cacert`) and, for MUTUAL, the client certificate and key
/// (`tls.crt`/`tls.key` or `cert`/`key`), used instead of any files. A
/// Secret that cannot be used makes the cluster refuse its connections,
/// saying why, rather than fall back to other roots.
pub(crate) fn client_credential(
    mesh: &Mesh,
    namespace: &str,
    name: &str,
    tls: &mut pb::UpstreamTls,
) {
    let lookup = |n: &str| mesh.secrets.get(&(namespace.to_string(), n.to_string()));
    let mutual = tls.mode == pb::UpstreamTlsMode::Mutual as i32;
    let resolved = (|| {
        let own = lookup(name);
        let ca = own
            .and_then(|s| secret_value(s, &["ca.crt", "cacert"]))
            .or_else(|| {
                lookup(&format!("{name}-cacert"))
                    .and_then(|s| secret_value(s, &["ca.crt", "cacert"]))
            });
        if own.is_none() && ca.is_none() {
            return Err(format!("Secret {namespace}/{name} not found"));
        }
        let ca = ca.ok_or_else(|| {
            format!("no CA (ca.crt or cacert) in Secret {namespace}/{name} nor in {namespace}/{name}-cacert")
        })?;
        let (mut cert, mut key) = (String::new(), String::new());
        if mutual {
            let secret = own.ok_or_else(|| format!("Secret {namespace}/{name} not found"))?;
            cert = secret_value(secret, &["tls.crt", "cert"]).ok_or_else(|| {
                format!("Secret {namespace}/{name} has no client certificate (tls.crt or cert)")
            })?;
            key = secret_value(secret, &["tls.key", "key"]).ok_or_else(|| {
                format!("Secret {namespace}/{name} has no private key (tls.key or key)")
            })?;
        }
        Ok((ca, cert, key))
    })();
    match resolved {
        Ok((ca, cert, key)) => {
            tls.ca_certificates_pem = ca;
            tls.client_certificate_pem = cert;
            tls.private_key_pem = key;
        }
        Err(why) => tls.credential_error = format!("tls.credentialName {name}: {why}"),
    }
}

/// Istio's min/maxProtocolVersion as the proxy takes them: TLSV1_2 or
/// TLSV1_3, empty for "any". A minimum below 1.2 (or TLS_AUTO) is 1.2 (the
/// proxy has no older TLS); a maximum below 1.2 leaves no version at all.
fn protocol_versions(
    settings: &api::networking::ServerTlsSettings,
) -> Result<(String, String), TlsError> {
    use api::networking::TlsProtocol as P;
    let min = match settings.min_protocol_version {
        Some(P::TlsV1_3) => "TLSV1_3",
        _ => "",
    };
    let max = match settings.max_protocol_version {
        Some(P::TlsV1_2) => "TLSV1_2",
        Some(v @ (P::TlsV1_0 | P::TlsV1_1)) => {
            return Err(TlsError::MaxVersion(format!("{v:?}").to_ascii_uppercase()));
        }
        _ => "",
    };
    if (min, max) == ("TLSV1_3", "TLSV1_2") {
        return Err(TlsError::VersionRange);
    }
    Ok((min.to_string(), max.to_string()))
}

/// The first of `keys` the Secret holds, non-empty; `stringData` wins over
/// `data` as the API server merges it.
fn secret_value(secret: &Secret, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| {
        let from_string = secret.string_data.as_ref().and_then(|d| d.get(*k)).cloned();
        let from_data = || {
            let bytes = secret.data.as_ref()?.get(*k)?;
            String::from_utf8(bytes.0.clone()).ok()
        };
        from_string
            .or_else(from_data)
            .filter(|v| !v.trim().is_empty())
    })
}
