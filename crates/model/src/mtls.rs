//! Mutual TLS, both ends:
//! - the server side: PeerAuthentication → each inbound port's mode, with
//!   Istio's precedence (workload selector, its `portLevelMtls` first → the
//!   workload's namespace → the mesh, i.e. the root namespace), UNSET
//!   inheriting from the next level and PERMISSIVE at the top;
//! - the client side: DestinationRule `trafficPolicy.tls` → the cluster's
//!   upstream TLS, merged as Istio merges it (subset over top level; a
//!   port-level entry for the port replaces it), and auto mTLS
//!   (`enableAutoMtls`) when the rule says nothing.

use api::Object;
use api::networking::{ClientTlsMode, ClientTlsSettings, TrafficPolicy};
use api::security::{MtlsMode, PeerAuthentication};
use wire::pb;

use crate::mesh::Mesh;
use crate::registry::Workload;

/// The mode of `port` (a workload port: what the listener binds) on `w`.
pub fn inbound_mode(mesh: &Mesh, w: &Workload, port: u32) -> pb::MtlsMode {
    inbound_mode_from(mesh, w, port).0
}

/// Where a port's mode came from: the level of Istio's precedence that set
/// it, and the PeerAuthentication (`None`: no policy sets one, PERMISSIVE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeLevel {
    /// The workload policy's `portLevelMtls` entry for the port.
    Port,
    /// A policy whose selector matches the workload.
    Workload,
    /// The workload's namespace's policy without selector.
    Namespace,
    /// The root namespace's policy without selector.
    Mesh,
}

/// [`inbound_mode`], and the level and policy that decided it.
pub fn inbound_mode_from<'a>(
    mesh: &'a Mesh,
    w: &'a Workload,
    port: u32,
) -> (
    pb::MtlsMode,
    Option<(ModeLevel, &'a Object<PeerAuthentication>)>,
) {
    let selects = |pa: &&Object<PeerAuthentication>| {
        pa.spec.selector.as_ref().is_some_and(|s| {
            !s.match_labels.is_empty()
                && s.match_labels
                    .iter()
                    .all(|(k, v)| w.labels.get(k) == Some(v))
        })
    };
    let wide = |pa: &&Object<PeerAuthentication>| {
        pa.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    // Istio takes the oldest policy of a level; files have no age, and the
    // mesh keeps them in namespace/name order, so the first one wins.
    let workload = in_ns(mesh, &w.namespace).find(selects);
    let namespace = in_ns(mesh, &w.namespace).find(wide);
    let root = in_ns(mesh, &mesh.config.root_namespace).find(wide);
    let levels = [
        (
            ModeLevel::Port,
            workload,
            workload
                .and_then(|pa| pa.spec.port_level_mtls.as_ref()?.get(&port))
                .and_then(|t| t.mode),
        ),
        (ModeLevel::Workload, workload, workload.and_then(mode_of)),
        (ModeLevel::Namespace, namespace, namespace.and_then(mode_of)),
        (ModeLevel::Mesh, root, root.and_then(mode_of)),
    ];
    let decided = levels.into_iter().find_map(|(level, pa, mode)| {
        let mode = mode.filter(|m| *m != MtlsMode::Unset)?;
        Some((mode, level, pa?))
    });
    match decided {
        Some((mode, level, pa)) => {
            let mode = match mode {
                MtlsMode::Strict => pb::MtlsMode::Strict,
                MtlsMode::Disable => pb::MtlsMode::Disable,
                _ => pb::MtlsMode::Permissive,
            };
            (mode, Some((level, pa)))
        }
        None => (pb::MtlsMode::Permissive, None),
    }
}

/// The modes of captured inbound connections to ports with no inbound
/// listener (passed through): the workload's mode, and its portLevelMtls
/// modes for such ports, as Istio's passthrough filter chains have them.
pub fn passthrough_modes(
    mesh: &Mesh,
    w: &Workload,
    listened: &std::collections::BTreeSet<u32>,
) -> (pb::MtlsMode, std::collections::BTreeMap<u32, pb::MtlsMode>) {
    // Port 0 is no port: no portLevelMtls entry applies, the workload's does.
    let workload_mode = inbound_mode(mesh, w, 0);
    let per_port = in_ns(mesh, &w.namespace)
        .filter(|pa| {
            pa.spec.selector.as_ref().is_some_and(|s| {
                !s.match_labels.is_empty()
                    && s.match_labels
                        .iter()
                        .all(|(k, v)| w.labels.get(k) == Some(v))
            })
        })
        .take(1)
        .flat_map(|pa| {
            pa.spec
                .port_level_mtls
                .iter()
                .flat_map(|m| m.keys().copied())
        })
        .filter(|port| *port != 0 && !listened.contains(port))
        .map(|port| (port, inbound_mode(mesh, w, port)))
        .filter(|(_, mode)| *mode != workload_mode)
        .collect();
    (workload_mode, per_port)
}

fn in_ns<'a>(
    mesh: &'a Mesh,
    ns: &'a str,
) -> impl Iterator<Item = &'a Object<PeerAuthentication>> + 'a {
    mesh.peer_authentications
        .iter()
        .filter(move |pa| pa.metadata.namespace.as_deref().unwrap_or("default") == ns)
}

fn mode_of(pa: &Object<PeerAuthentication>) -> Option<MtlsMode> {
    pa.spec.mtls.as_ref().and_then(|t| t.mode)
}

/// The upstream TLS of the cluster of a subset (its own policy, if any) on `port`.
/// `None` means auto mTLS; with `enableAutoMtls` off, a rule-less cluster is DISABLE.
pub fn upstream_tls(
    mesh: &Mesh,
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u32,
) -> Option<pb::UpstreamTls> {
    match effective(top, subset, port) {
        Some(tls) => Some(to_pb(tls)),
        None if mesh.config.enable_auto_mtls => None,
        None => Some(pb::UpstreamTls {
            mode: pb::UpstreamTlsMode::Disable as i32,
            ..Default::default()
        }),
    }
}

/// The effective `tls.credentialName` for `port`, if any (merged as
/// [`upstream_tls`] merges the rest).
pub(crate) fn credential_name<'a>(
    top: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: u32,
) -> Option<&'a str> {
    effective(top, subset, port)?
        .credential_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Istio's merge: the top level (or its port-level entry for `port`), then
/// the subset's `tls`, then the subset's port-level entry. A port-level entry
/// replaces the setting even where it leaves `tls` out (as cluster_policy).
fn effective<'a>(
    top: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: u32,
) -> Option<&'a ClientTlsSettings> {
    let port_level = |p: &'a TrafficPolicy| {
        p.port_level_settings
            .iter()
            .find(|s| s.port.as_ref().is_some_and(|sel| sel.number == port))
    };
    let mut tls = top.and_then(|t| match port_level(t) {
        Some(pl) => pl.tls.as_ref(),
        None => t.tls.as_ref(),
    });
    if let Some(s) = subset {
        tls = s.tls.as_ref().or(tls);
        if let Some(pl) = port_level(s) {
            tls = pl.tls.as_ref();
        }
    }
    tls
}

fn to_pb(tls: &ClientTlsSettings) -> pb::UpstreamTls {
    // A `tls` block without a mode is Istio's default mode, DISABLE.
    let mode = match tls.mode.unwrap_or(ClientTlsMode::Disable) {
        ClientTlsMode::Disable => pb::UpstreamTlsMode::Disable,
        ClientTlsMode::IstioMutual => pb::UpstreamTlsMode::IstioMutual,
        ClientTlsMode::Simple => pb::UpstreamTlsMode::Simple,
        ClientTlsMode::Mutual => pb::UpstreamTlsMode::Mutual,
    };
    pb::UpstreamTls {
        mode: mode as i32,
        sni: tls.sni.clone().unwrap_or_default(),
        ca_certificates: tls.ca_certificates.clone().unwrap_or_default(),
        client_certificate: tls.client_certificate.clone().unwrap_or_default(),
        private_key: tls.private_key.clone().unwrap_or_default(),
        subject_alt_names: tls.subject_alt_names.clone(),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_config::MeshConfig;

    const WORKLOADS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: cart}}
spec: {containers: [{name: c, image: x, ports: [{containerPort: 8080}, {containerPort: 9090}]}]}
status: {podIP: 10.0.0.1}
";

    fn mesh(policies: &str, config: MeshConfig) -> Mesh {
        let text = format!("{WORKLOADS}---\n{policies}");
        let resources = api::parse("test.yaml", &text).expect("parse");
        Mesh::build(&resources, config)
    }

    fn pa(ns: &str, name: &str, body: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n---\n"
        )
    }

    #[test]
    fn peer_authentication_precedence() {
        let mesh_strict = pa("istio-system", "default", "  mtls: {mode: STRICT}");
        let ns_disable = pa("shop", "default", "  mtls: {mode: DISABLE}");
        let ns_unset = pa("shop", "default", "  mtls: {mode: UNSET}");
        let wl_permissive = pa(
            "shop",
            "cart",
            "  selector: {matchLabels: {app: cart}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls:\n    9090: {mode: STRICT}",
        );
        let wl_other = pa(
            "shop",
            "other",
            "  selector: {matchLabels: {app: other}}\n  mtls: {mode: DISABLE}",
        );
        let wl_in_root = pa(
            "istio-system",
            "sel",
            "  selector: {matchLabels: {app: cart}}\n  mtls: {mode: DISABLE}",
        );
        use pb::MtlsMode::*;
        let cases: Vec<(&str, String, u32, pb::MtlsMode)> = vec![
            ("nothing: PERMISSIVE", String::new(), 8080, Permissive),
            ("mesh-wide STRICT", mesh_strict.clone(), 8080, Strict),
            (
                "namespace over mesh",
                format!("{mesh_strict}{ns_disable}"),
                8080,
                Disable,
            ),
            (
                "UNSET namespace inherits the mesh",
                format!("{mesh_strict}{ns_unset}"),
                8080,
                Strict,
            ),
            (
                "workload over namespace",
                format!("{ns_disable}{wl_permissive}"),
                8080,
                Permissive,
            ),
            (
                "port level over workload",
                format!("{ns_disable}{wl_permissive}"),
                9090,
                Strict,
            ),
            (
                "a selector for other workloads",
                format!("{mesh_strict}{wl_other}"),
                8080,
                Strict,
            ),
            (
                "a selector in the root namespace is not mesh-wide",
                wl_in_root,
                8080,
                Permissive,
            ),
        ];
        for (name, policies, port, want) in cases {
            let m = mesh(&policies, MeshConfig::default());
            let w = m.registry.workload("a", "shop").expect("workload");
            assert_eq!(inbound_mode(&m, w, port), want, "{name}");
        }
    }

    fn policy(json: serde_json::Value) -> TrafficPolicy {
        serde_json::from_value(json).expect("traffic policy")
    }

    #[test]
    fn destination_rule_tls_merge_and_auto_mtls() {
        let m = mesh("", MeshConfig::default());
        let mode = |t: Option<pb::UpstreamTls>| {
            t.map(|t| pb::UpstreamTlsMode::try_from(t.mode).expect("mode"))
        };
        let top = policy(serde_json::json!({
            "tls": {"mode": "ISTIO_MUTUAL"},
            "portLevelSettings": [{"port": {"number": 9090}, "tls": {"mode": "DISABLE"}}]
        }));
        let subset =
            policy(serde_json::json!({"tls": {"mode": "SIMPLE", "sni": "api.example.com"}}));
        use pb::UpstreamTlsMode::*;
        assert_eq!(mode(upstream_tls(&m, None, None, 80)), None, "auto mTLS");
        assert_eq!(
            mode(upstream_tls(&m, Some(&top), None, 80)),
            Some(IstioMutual)
        );
        assert_eq!(
            mode(upstream_tls(&m, Some(&top), None, 9090)),
            Some(Disable),
            "port level"
        );
        let simple = upstream_tls(&m, Some(&top), Some(&subset), 80).expect("set");
        assert_eq!(
            (simple.mode, simple.sni.as_str()),
            (Simple as i32, "api.example.com")
        );
        let no_mode = policy(serde_json::json!({"tls": {"sni": "x"}}));
        assert_eq!(
            mode(upstream_tls(&m, Some(&no_mode), None, 80)),
            Some(Disable),
            "Istio's default mode"
        );
        let no_auto = mesh(
            "",
            MeshConfig {
                enable_auto_mtls: false,
                ..MeshConfig::default()
            },
        );
        assert_eq!(
            mode(upstream_tls(&no_auto, None, None, 80)),
            Some(Disable),
            "auto mTLS off"
        );
    }
}
