//! Upstream TLS without verification (analyze/upstream_tls.rs), ServiceEntry
//! addresses (analyze/service_entry.rs) and competing Telemetry resources
//! (analyze/telemetry.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "IST0128",
            resource: "DestinationRule api-tls.default",
            text: "DestinationRule default/api-tls in namespace default has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: api.example.com",
            triggers: tls_dr("  trafficPolicy: {tls: {mode: SIMPLE}}"),
            clean: tls_dr("  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}}"),
        },
        Case {
            code: "IST0129",
            resource: "DestinationRule api-tls.default",
            text: "has TLS mode set to MUTUAL but no caCertificates are set to validate server identity for host: api.example.com at port number:443",
            triggers: tls_dr(
                "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}",
            ),
            clean: tls_dr(
                "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: ISTIO_MUTUAL}",
            ),
        },
        Case {
            code: "IST0134",
            resource: "ServiceEntry db.default",
            text: "ServiceEntry addresses are required for this protocol.",
            triggers: service_entry(""),
            clean: service_entry("  addresses: [10.0.0.5]\n"),
        },
        Case {
            code: "IST0177",
            resource: "ServiceEntry db.default",
            text: "Multiple ServiceEntries (default/db, default/db-http) define the same host \"db.example.com\" and port 5432 with conflicting protocols (HTTP, TCP).",
            triggers: format!(
                "{}---\n{}",
                service_entry("  addresses: [10.0.0.5]\n"),
                service_entry("  addresses: [10.0.0.5]\n")
                    .replace("name: db}", "name: db-http}")
                    .replace("protocol: TCP", "protocol: HTTP")
            ),
            clean: format!(
                "{}---\n{}",
                service_entry("  addresses: [10.0.0.5]\n"),
                service_entry("  addresses: [10.0.0.5]\n").replace("name: db}", "name: db-http}")
            ),
        },
        Case {
            code: "IST0160",
            resource: "Telemetry second.default",
            text: "The Telemetries [first second] in namespace \"default\" have no workload selector, which can lead to undefined behavior.",
            triggers: format!("{}---{}", telemetry("first", ""), telemetry("second", "")),
            clean: format!(
                "{}---{}",
                telemetry("first", ""),
                telemetry("second", "  selector: {matchLabels: {app: ratings}}\n")
            ),
        },
        Case {
            code: "IST0159",
            resource: "Telemetry first.default",
            text: "The Telemetries [first second] in namespace \"default\" select the same workload pod",
            triggers: format!(
                "{}---{}",
                telemetry("first", "  selector: {matchLabels: {app: reviews}}\n"),
                telemetry("second", "  selector: {matchLabels: {version: v1}}\n")
            ),
            clean: format!(
                "{}---{}",
                telemetry("first", "  selector: {matchLabels: {app: reviews}}\n"),
                telemetry("second", "  selector: {matchLabels: {version: v9}}\n")
            ),
        },
    ]
}

fn tls_dr(policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api-tls}}\nspec:\n  host: api.example.com\n{policy}\n---\n{}",
        service_entry("  addresses: [10.0.0.6]\n").replace("db", "api")
    )
}

fn service_entry(addresses: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.example.com]\n{addresses}  ports: [{{number: 5432, name: tcp, protocol: TCP}}]\n  resolution: DNS\n"
    )
}

fn telemetry(name: &str, selector: &str) -> String {
    format!(
        "\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}}}\nspec:\n{selector}  tracing: [{{randomSamplingPercentage: 10}}]\n"
    )
}
