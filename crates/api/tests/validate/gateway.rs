//! Validation of Gateway.

use super::run;

fn gw(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

#[test]
fn gateway() {
    run(vec![
        (
            "http",
            gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"),
            None,
        ),
        (
            "ns/host",
            gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [bookinfo/reviews.example.com, './*', '*/foo.com']\n",
            ),
            None,
        ),
        (
            "https credential",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert}\n",
            ),
            None,
        ),
        (
            "https redirect",
            gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n    tls: {httpsRedirect: true}\n",
            ),
            None,
        ),
        (
            "passthrough",
            gw(
                "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.example.com]\n    tls: {mode: PASSTHROUGH}\n",
            ),
            None,
        ),
        (
            "no servers",
            gw("  []\n").replace("  servers:\n  []\n", "  servers: []\n"),
            Some(("spec.servers", "at least one server")),
        ),
        (
            "no hosts",
            gw("  - port: {number: 80, name: http, protocol: HTTP}\n"),
            Some(("spec.servers[0].hosts", "at least one host")),
        ),
        (
            "bad port",
            gw("  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: [a]\n"),
            Some(("spec.servers[0].port.number", "1..65535")),
        ),
        (
            "no port name",
            gw("  - port: {number: 80, protocol: HTTP}\n    hosts: [a]\n"),
            Some(("spec.servers[0].port.name", "port name is required")),
        ),
        (
            "bad protocol",
            gw("  - port: {number: 80, name: http, protocol: HTTPX}\n    hosts: [a]\n"),
            Some(("spec.servers[0].port.protocol", "unknown protocol")),
        ),
        (
            "bad ns/host",
            gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a/b/c]\n"),
            Some((
                "spec.servers[0].hosts[0]",
                "expected `host` or `namespace/host`",
            )),
        ),
        (
            "https without tls",
            gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n"),
            Some(("spec.servers[0].tls", "TLS settings are required")),
        ),
        (
            "simple without cert",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n    tls: {mode: SIMPLE, privateKey: /k.pem}\n",
            ),
            Some((
                "spec.servers[0].tls.serverCertificate",
                "required for SIMPLE",
            )),
        ),
        (
            "mutual without ca",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}\n",
            ),
            Some(("spec.servers[0].tls.caCertificates", "required for MUTUAL")),
        ),
        (
            "duplicate port name",
            gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a]\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [b]\n",
            ),
            Some(("spec.servers[1].port.name", "already used (by port 80)")),
        ),
        (
            // As Istio: unique even on one port number.
            "duplicate port name on one port",
            gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a]\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [b]\n",
            ),
            Some(("spec.servers[1].port.name", "must be unique")),
        ),
        (
            "tls versions",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}\n",
            ),
            Some((
                "spec.servers[0].tls.maxProtocolVersion",
                "must not be lower",
            )),
        ),
    ]);
}
