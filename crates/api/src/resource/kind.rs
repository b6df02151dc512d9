//! `Kind`: the resource kinds Trellis understands, and the kubectl-style
//! names users type for them (`vs`, `dr`, `svc`, `pods`, ...).

use std::fmt;

macro_rules! kinds {
    ($( $variant:ident => $name:literal, $plural:literal, $api_version:literal, [$($alias:literal),*] ;)+) => {
        /// A resource kind. `Unsupported` stands for every kind Trellis
        /// recognises in a file but does not act on.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
        pub enum Kind {
            $( $variant, )+
            Unsupported,
        }

        impl Kind {
            /// Every supported kind (everything but `Unsupported`), in a stable order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),+];

            /// The canonical `kind:` value, e.g. `VirtualService`.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( Kind::$variant => $name, )+
                    Kind::Unsupported => "Unsupported",
                }
            }

            /// Lowercase plural, as in a REST path or `kubectl get virtualservices`.
            pub fn plural(&self) -> &'static str {
                match self {
                    $( Kind::$variant => $plural, )+
                    Kind::Unsupported => "unsupported",
                }
            }

            /// The apiVersion Trellis writes for new objects of this kind
            /// (the newest one the kind is served at).
            pub fn default_api_version(&self) -> &'static str {
                match self {
                    $( Kind::$variant => $api_version, )+
                    Kind::Unsupported => "",
                }
            }

            /// Parses a kind the way kubectl does: the kind itself in any case,
            /// its plural, its short names, optionally qualified with the
            /// group (`virtualservices.networking.istio.io`).
            pub fn parse(s: &str) -> Option<Kind> {
                let lower = s.trim().to_ascii_lowercase();
                // `vs.networking.istio.io` → `vs`; the group is informative only.
                let base = lower.split('.').next().unwrap_or_default();
                $(
                    if base == $name.to_ascii_lowercase() || base == $plural $(|| base == $alias)* {
                        return Some(Kind::$variant);
                    }
                )+
                None
            }
        }
    };
}

kinds! {
    VirtualService => "VirtualService", "virtualservices", "networking.istio.io/v1", ["vs"];
    DestinationRule => "DestinationRule", "destinationrules", "networking.istio.io/v1", ["dr"];
    Gateway => "Gateway", "gateways", "networking.istio.io/v1", ["gw"];
    ServiceEntry => "ServiceEntry", "serviceentries", "networking.istio.io/v1", ["se"];
    Sidecar => "Sidecar", "sidecars", "networking.istio.io/v1", [];
    WorkloadEntry => "WorkloadEntry", "workloadentries", "networking.istio.io/v1", ["we"];
    WorkloadGroup => "WorkloadGroup", "workloadgroups", "networking.istio.io/v1", ["wg"];
    PeerAuthentication => "PeerAuthentication", "peerauthentications", "security.istio.io/v1", ["pa"];
    RequestAuthentication => "RequestAuthentication", "requestauthentications", "security.istio.io/v1", ["ra"];
    AuthorizationPolicy => "AuthorizationPolicy", "authorizationpolicies", "security.istio.io/v1", ["ap"];
    Telemetry => "Telemetry", "telemetries", "telemetry.istio.io/v1", [];
    Namespace => "Namespace", "namespaces", "v1", ["ns"];
    ServiceAccount => "ServiceAccount", "serviceaccounts", "v1", ["sa"];
    Secret => "Secret", "secrets", "v1", [];
    Service => "Service", "services", "v1", ["svc"];
    Deployment => "Deployment", "deployments", "apps/v1", ["deploy"];
    Pod => "Pod", "pods", "v1", ["po"];
    EndpointSlice => "EndpointSlice", "endpointslices", "discovery.k8s.io/v1", [];
}

impl Kind {
    /// True for the Istio CRD kinds (as opposed to core Kubernetes kinds).
    pub fn is_istio(&self) -> bool {
        self.api_group().ends_with(".istio.io")
    }

    /// The API group (`""` for the core group).
    pub fn api_group(&self) -> &'static str {
        match self.default_api_version().rsplit_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    /// Whether `api_version` is one this kind is served at. Istio serves one
    /// schema under several versions, so all of them are accepted.
    pub fn accepts_api_version(&self, api_version: &str) -> bool {
        let versions: &[&str] = match self.api_group() {
            "networking.istio.io" => &["v1alpha3", "v1beta1", "v1"],
            "security.istio.io" => &["v1beta1", "v1"],
            "telemetry.istio.io" => &["v1alpha1", "v1"],
            _ => return api_version == self.default_api_version(),
        };
        match api_version.split_once('/') {
            Some((group, version)) => group == self.api_group() && versions.contains(&version),
            None => false,
        }
    }

    /// Every apiVersion this kind is served at, newest first (for messages).
    pub fn api_versions(&self) -> Vec<String> {
        let versions: &[&str] = match self.api_group() {
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "security.istio.io" => &["v1", "v1beta1"],
            "telemetry.istio.io" => &["v1", "v1alpha1"],
            _ => return vec![self.default_api_version().to_string()],
        };
        versions
            .iter()
            .map(|v| format!("{}/{v}", self.api_group()))
            .collect()
    }

    /// Looks a kind up by its exact `kind:` value and API group, as found in
    /// a document. Different groups may reuse a kind name (Istio's `Gateway`
    /// vs the Kubernetes Gateway API's), so both must match.
    pub fn from_kind_and_group(kind: &str, group: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == kind && k.api_group() == group)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::parse(s).ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// Returned by `Kind::from_str` for a name that is no known kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource kind `{0}`")]
pub struct UnknownKind(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_names() {
        let cases = [
            ("VirtualService", Kind::VirtualService),
            ("virtualservice", Kind::VirtualService),
            ("virtualservices", Kind::VirtualService),
            ("vs", Kind::VirtualService),
            ("virtualservices.networking.istio.io", Kind::VirtualService),
            ("dr", Kind::DestinationRule),
            ("gw", Kind::Gateway),
            ("se", Kind::ServiceEntry),
            ("sidecars", Kind::Sidecar),
            ("we", Kind::WorkloadEntry),
            ("wg", Kind::WorkloadGroup),
            ("pa", Kind::PeerAuthentication),
            ("ra", Kind::RequestAuthentication),
            ("ap", Kind::AuthorizationPolicy),
            ("AuthorizationPolicies", Kind::AuthorizationPolicy),
            ("telemetry", Kind::Telemetry),
            ("telemetries", Kind::Telemetry),
            ("ns", Kind::Namespace),
            ("sa", Kind::ServiceAccount),
            ("svc", Kind::Service),
            ("service", Kind::Service),
            ("deploy", Kind::Deployment),
            ("deployments", Kind::Deployment),
            ("pods", Kind::Pod),
            ("pod", Kind::Pod),
            ("po", Kind::Pod),
            ("endpointslices", Kind::EndpointSlice),
        ];
        for (s, k) in cases {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
        }
        assert_eq!(Kind::parse("frobnicator"), None);
        assert_eq!(Kind::parse(""), None);
        assert_eq!(Kind::parse("unsupported"), None);
    }

    #[test]
    fn display_and_versions() {
        assert_eq!(Kind::VirtualService.to_string(), "VirtualService");
        assert!(Kind::VirtualService.accepts_api_version("networking.istio.io/v1alpha3"));
        assert!(Kind::VirtualService.accepts_api_version("networking.istio.io/v1beta1"));
        assert!(Kind::VirtualService.accepts_api_version("networking.istio.io/v1"));
        assert!(!Kind::VirtualService.accepts_api_version("networking.istio.io/v2"));
        assert!(Kind::Telemetry.accepts_api_version("telemetry.istio.io/v1alpha1"));
        assert!(!Kind::PeerAuthentication.accepts_api_version("security.istio.io/v1alpha1"));
        assert!(Kind::Deployment.accepts_api_version("apps/v1"));
        assert!(Kind::Namespace.accepts_api_version("v1"));
        assert!(Kind::Pod.api_group().is_empty());
        assert!(Kind::Sidecar.is_istio());
        assert!(!Kind::Service.is_istio());
    }
}
