//! Validation of ServiceEntry, Sidecar, WorkloadEntry and WorkloadGroup.

use super::kind;
use super::run;

#[test]
fn service_entry_sidecar_workloads() {
    run(vec![
        (
            "se dns",
            kind(
                "ServiceEntry",
                "  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: https, protocol: TLS}]\n",
            ),
            None,
        ),
        (
            "se static",
            kind(
                "ServiceEntry",
                "  hosts: [db.internal]\n  addresses: [10.1.0.0/16]\n  resolution: STATIC\n  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]\n  endpoints: [{address: 10.1.2.3, ports: {tcp-pg: 15432}}]\n",
            ),
            None,
        ),
        (
            "se no hosts",
            kind("ServiceEntry", "  ports: [{number: 80, name: http}]\n"),
            Some(("spec.hosts", "at least one host")),
        ),
        (
            "se star",
            kind("ServiceEntry", "  hosts: ['*']\n"),
            Some(("spec.hosts[0]", "host `*` is not allowed")),
        ),
        (
            "se wildcard dns",
            kind(
                "ServiceEntry",
                "  hosts: ['*.example.com']\n  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]\n",
            ),
            Some(("spec.hosts[0]", "cannot be resolved with DNS")),
        ),
        (
            "se static needs ip",
            kind(
                "ServiceEntry",
                "  hosts: [a.b]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: foo.bar}]\n",
            ),
            Some(("spec.endpoints[0].address", "need an IP address")),
        ),
        (
            "se dup port",
            kind(
                "ServiceEntry",
                "  hosts: [a.b]\n  ports: [{number: 80, name: http}, {number: 80, name: http2}]\n",
            ),
            Some(("spec.ports[1].number", "duplicate port number")),
        ),
        (
            "se endpoint port name",
            kind(
                "ServiceEntry",
                "  hosts: [a.b]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 1.2.3.4, ports: {grpc: 81}}]\n",
            ),
            Some((
                "spec.endpoints[0].ports.grpc",
                "not one of the service entry's port names",
            )),
        ),
        (
            "se bad address",
            kind("ServiceEntry", "  hosts: [a.b]\n  addresses: [not-an-ip]\n"),
            Some(("spec.addresses[0]", "invalid IP")),
        ),
        (
            "sidecar",
            kind(
                "Sidecar",
                "  egress:\n  - hosts: ['./*', 'istio-system/*']\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
            ),
            None,
        ),
        (
            "sidecar empty",
            kind("Sidecar", "  {}\n").replace("spec:\n  {}\n", "spec: {}\n"),
            Some(("spec", "empty Sidecar")),
        ),
        (
            "sidecar host form",
            kind("Sidecar", "  egress:\n  - hosts: [reviews]\n"),
            Some(("spec.egress[0].hosts[0]", "expected `namespace/host`")),
        ),
        (
            "sidecar catch-all order",
            kind(
                "Sidecar",
                "  egress:\n  - hosts: ['./*']\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['./*']\n",
            ),
            Some(("spec.egress[0]", "must be the last one")),
        ),
        (
            "sidecar ingress",
            kind(
                "Sidecar",
                "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n",
            ),
            None,
        ),
        (
            "sidecar bad endpoint",
            kind(
                "Sidecar",
                "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 10.0.0.1:8080\n",
            ),
            Some(("spec.ingress[0].defaultEndpoint", "invalid defaultEndpoint")),
        ),
        (
            "egress proxy mode",
            kind(
                "Sidecar",
                "  outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress, port: {number: 80}}}\n",
            ),
            Some((
                "spec.outboundTrafficPolicy.egressProxy",
                "requires mode ALLOW_ANY",
            )),
        ),
        (
            "workload entry",
            kind(
                "WorkloadEntry",
                "  address: 10.0.0.5\n  labels: {app: vm}\n  serviceAccount: vm-sa\n  ports: {http: 8080}\n",
            ),
            None,
        ),
        (
            "workload entry no address",
            kind("WorkloadEntry", "  labels: {app: vm}\n"),
            Some(("spec.address", "address is required")),
        ),
        (
            "workload entry port",
            kind("WorkloadEntry", "  address: 10.0.0.5\n  ports: {http: 0}\n"),
            Some(("spec.ports.http", "1..65535")),
        ),
        (
            "workload group",
            kind(
                "WorkloadGroup",
                "  metadata: {labels: {app: vm}}\n  template: {serviceAccount: vm-sa}\n  probe: {periodSeconds: 5, httpGet: {path: /ready, port: 8080}}\n",
            ),
            None,
        ),
        (
            "workload group probe",
            kind(
                "WorkloadGroup",
                "  template: {}\n  probe: {periodSeconds: 5}\n",
            ),
            Some(("spec.probe", "exactly one of httpGet")),
        ),
    ]);
}
