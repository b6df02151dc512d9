//! Validation of DestinationRule.

use super::run;

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr}}\nspec:\n  host: reviews\n{spec}"
    )
}

#[test]
fn destination_rule() {
    run(vec![
        (
            "subsets",
            dr(
                "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
            ),
            None,
        ),
        (
            "missing host",
            dr("").replace(
                "  host: reviews\n",
                "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
            ),
            Some(("spec.host", "host is required")),
        ),
        (
            "bad host",
            dr("").replace("host: reviews", "host: 'a b'"),
            Some(("spec.host", "not a valid DNS label")),
        ),
        (
            "duplicate subset",
            dr(
                "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}\n",
            ),
            Some(("spec.subsets[1].name", "duplicate subset name")),
        ),
        (
            "empty subset name",
            dr("  subsets:\n  - {labels: {version: v1}}\n"),
            Some(("spec.subsets[0].name", "subset name is required")),
        ),
        (
            // Istio's egress-gateway tasks: a subset only for routes to name.
            "subset without labels",
            dr("  subsets:\n  - {name: cnn}\n"),
            None,
        ),
        (
            "subset labels via policy",
            dr(
                "  subsets:\n  - name: sni\n    trafficPolicy: {tls: {mode: SIMPLE, sni: a.example.com}}\n",
            ),
            None,
        ),
        (
            "empty policy",
            dr("  trafficPolicy: {}\n"),
            Some(("spec.trafficPolicy", "at least one field")),
        ),
        (
            "consistent hash ok",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}\n",
            ),
            None,
        ),
        (
            "consistent hash two keys",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "exactly one hash key",
            )),
        ),
        (
            "consistent hash no key",
            dr("  trafficPolicy:\n    loadBalancer: {consistentHash: {minimumRingSize: 1024}}\n"),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "exactly one hash key",
            )),
        ),
        (
            "maglev prime",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "prime",
            )),
        ),
        (
            "maglev huge",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 9223372036854775783}}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "at most 5000011",
            )),
        ),
        (
            "simple and hash",
            dr(
                "  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer",
                "only one of simple or consistentHash",
            )),
        ),
        (
            "locality distribute",
            dr(
                "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute: [{from: us-west/zone1/*, to: {'us-west/zone1/*': 80, 'us-west/zone2/*': 10}}]\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                "add up to 100",
            )),
        ),
        (
            "locality failover",
            dr(
                "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting: {failover: [{from: us-east, to: us-east}]}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
                "different region",
            )),
        ),
        (
            "pool ok",
            dr(
                "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}\n      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, h2UpgradePolicy: UPGRADE}\n",
            ),
            None,
        ),
        (
            "pool negative",
            dr("  trafficPolicy:\n    connectionPool: {http: {http1MaxPendingRequests: -1}}\n"),
            Some((
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                "must not be negative",
            )),
        ),
        (
            "pool empty",
            dr("  trafficPolicy:\n    connectionPool: {}\n"),
            Some((
                "spec.trafficPolicy.connectionPool",
                "at least one of tcp or http",
            )),
        ),
        (
            "outlier ok",
            dr(
                "  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100}\n",
            ),
            None,
        ),
        (
            "outlier percent",
            dr("  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 120}\n"),
            Some((
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "0..100",
            )),
        ),
        (
            "outlier interval",
            dr("  trafficPolicy:\n    outlierDetection: {interval: 0s}\n"),
            Some((
                "spec.trafficPolicy.outlierDetection.interval",
                "at least 1ms",
            )),
        ),
        (
            "port level",
            dr(
                "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: LEAST_REQUEST}\n    - port: {number: 80}\n      tls: {mode: DISABLE}\n",
            ),
            Some((
                "spec.trafficPolicy.portLevelSettings[1].port.number",
                "duplicate",
            )),
        ),
        (
            "port level no port",
            dr("  trafficPolicy:\n    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n"),
            Some((
                "spec.trafficPolicy.portLevelSettings[0].port",
                "port is required",
            )),
        ),
        (
            "tls mutual files",
            dr("  trafficPolicy:\n    tls: {mode: MUTUAL, clientCertificate: /c.pem}\n"),
            Some(("spec.trafficPolicy.tls.privateKey", "required for MUTUAL")),
        ),
        (
            "tls mutual credential",
            dr("  trafficPolicy:\n    tls: {mode: MUTUAL, credentialName: client-creds}\n"),
            None,
        ),
        (
            "istio mutual with certs",
            dr("  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, caCertificates: /ca.pem}\n"),
            Some((
                "spec.trafficPolicy.tls",
                "ISTIO_MUTUAL uses the mesh's certificates",
            )),
        ),
        (
            "tunnel",
            dr(
                "  trafficPolicy:\n    tunnel: {protocol: GET, targetHost: 10.0.0.1, targetPort: 443}\n",
            ),
            Some(("spec.trafficPolicy.tunnel.protocol", "CONNECT or POST")),
        ),
        (
            "workload selector",
            dr(
                "  workloadSelector: {matchLabels: {app: a}}\n  trafficPolicy: {tls: {mode: DISABLE}}\n",
            ),
            None,
        ),
    ]);
}
