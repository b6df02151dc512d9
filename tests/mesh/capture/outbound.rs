//! Outbound capture: an unmodified client in pod a reaches b by its short
//! name through both sidecars over mTLS (curl, and a tonic gRPC client);
//! destinations the mesh does not know pass through under ALLOW_ANY and are
//! refused under REGISTRY_ONLY; an excluded outbound port bypasses the sidecar.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::lab::{check, run, wait_for};
use super::pods::Running;

const REGISTRY_ONLY: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

/// 1. An unmodified curl in pod a reaches b by its short name, through
///    both sidecars, with mTLS between the namespaces.
pub fn curl_by_short_name_over_mtls(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let pcap_path = lab.dir.path().join("wire.pcap");
    let mut capture = lab
        .exec(
            "hub",
            &[
                "tcpdump",
                "-i",
                "vb",
                // Each packet as it comes (not in blocks), so none is pending at the stop.
                "--immediate-mode",
                "-U",
                "-w",
                &pcap_path.display().to_string(),
                "tcp",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // tcpdump says "listening on vb" once it captures.
    let mut tcpdump_err = std::io::BufReader::new(capture.stderr.take().context("stderr")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut tcpdump_err, &mut line)?;
    ensure!(line.contains("listening"), "tcpdump: {line}");
    let mut got = (0, String::new());
    wait_for(Duration::from_secs(15), "a calls http://b:8080", || {
        got = lab.curl("a", "http://b:8080/hello")?;
        Ok(got.1.ends_with("\n200"))
    })
    .with_context(|| format!("last: {got:?}\n{}", lab.log("proxy-a.log")))?;
    let reply = got.1.clone();
    ensure!(
        reply.contains("/hello"),
        "the echo shows the request: {reply}"
    );
    // b's sidecar saw a-s identity: the request came over mesh mTLS.
    ensure!(
        reply.contains("spiffe://cluster.local/ns/default/sa/a"),
        "b's app is told the caller's identity (X-Forwarded-Client-Cert): {reply}"
    );
    let (_, body) = lab.curl("a", "http://b.default.svc.cluster.local:8080/fqdn")?;
    ensure!(
        body.ends_with("\n200"),
        "the FQDN resolves and routes: {body}"
    );
    // Routed by the port the connection was sent to, not the Host header's.
    let out = check(&mut lab.exec(
        "a",
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Host: b",
            "-w",
            "\n%{http_code}",
            "http://b:8080/hostnoport",
        ],
    ))?;
    ensure!(
        out.ends_with("\n200") && out.contains("/hostnoport"),
        "Host without port: {out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(capture.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = capture.wait();
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut tcpdump_err, &mut summary)?;
    let pcap = std::fs::read(&pcap_path)?;
    ensure!(
        pcap.len() > 200,
        "the packet capture saw the traffic ({} bytes): {summary}",
        pcap.len()
    );
    let wire = String::from_utf8_lossy(&pcap);
    for plain in ["GET /hello", "HTTP/1.1", "/fqdn", "user-agent"] {
        ensure!(
            !wire.contains(plain),
            "plaintext {plain:?} between the namespaces"
        );
    }
    Ok(())
}

/// 1b. An unmodified gRPC client (tonic) in pod a calls grpc-b:50051 by
///     its short name: resolved by a's DNS proxy, captured, and counted
///     by both sidecars.
pub fn grpc_by_short_name(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let b = |name: &str| m.bin(name);
    let job = serde_json::json!({
        "kind": "grpc", "addr": "grpc-b:50051", "authority": "grpc-b:50051", "secs": 0.5,
        "concurrency": 1, "connections": 1, "request_bytes": 100, "tls": null
    });
    let result = lab.dir.path().join("grpc-result.json");
    let out = run(&mut lab.exec(
        "a",
        &[
            &b("bench-data-plane"),
            "--client-job",
            &job.to_string(),
            "--client-out",
            &result.display().to_string(),
        ],
    ))?;
    ensure!(
        out.status.success(),
        "the gRPC client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&result)?)?;
    ensure!(
        r["requests"].as_u64().unwrap_or(0) > 0 && r["errors"] == 0,
        "gRPC calls from pod a to grpc-b: {r}"
    );
    // a's sidecar saw the calls to grpc-b; b's got them over mTLS from a.
    let counted = |pod: &str, labels: &[(&str, &str)]| -> Result<()> {
        let stats = check(&mut lab.exec(
            pod,
            &["curl", "-s", "http://127.0.0.1:15000/stats/prometheus"],
        ))?;
        ensure!(
            e2e::counter_sum(&stats, "istio_requests_total", labels) >= 1.0,
            "{pod}'s sidecar counted the gRPC calls ({labels:?}): {stats:.3000}"
        );
        Ok(())
    };
    counted(
        "a",
        &[
            ("reporter", "source"),
            ("destination_service_name", "grpc-b"),
            ("request_protocol", "grpc"),
        ],
    )?;
    counted(
        "b",
        &[
            ("reporter", "destination"),
            ("request_protocol", "grpc"),
            ("source_principal", "spiffe://cluster.local/ns/default/sa/a"),
            ("connection_security_policy", "mutual_tls"),
        ],
    )?;
    Ok(())
}

/// 5. ALLOW_ANY (the default): a destination the mesh does not know is
///    passed through; REGISTRY_ONLY refuses it, with a log line.
pub fn unknown_destinations(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let (status, body) = lab.curl("a", "http://10.77.0.4:7070/any")?;
    ensure!(
        status == 0 && body.contains("/any") && body.ends_with("\n200"),
        "ALLOW_ANY passes: {status} {body}"
    );
    // Raw TCP (not HTTP) passes through too: the server's own answer comes back.
    let reply = lab.raw_tcp("a", "10.77.0.4", 7070, "hello\\r\\n\\r\\n")?;
    ensure!(
        reply.starts_with("HTTP/1.1 400"),
        "raw TCP passes through under ALLOW_ANY: {reply:?}"
    );
    let tcp_to = |cluster: &str| -> Result<f64> {
        let stats = check(&mut lab.exec(
            "a",
            &["curl", "-s", "http://127.0.0.1:15000/stats/prometheus"],
        ))?;
        Ok(e2e::counter_sum(
            &stats,
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", "source"),
                ("destination_service_name", cluster),
            ],
        ))
    };
    // Metered as Istio's PassthroughCluster (Kiali draws it so), and logged.
    ensure!(
        tcp_to("PassthroughCluster")? >= 1.0,
        "the passed-through TCP connection is not counted"
    );
    m.apply("registry-only.yaml", REGISTRY_ONLY)?;
    wait_for(
        Duration::from_secs(15),
        "REGISTRY_ONLY blocks the unknown destination",
        || {
            let (_, body) = lab.curl("a", "http://10.77.0.4:7070/blocked")?;
            Ok(body.ends_with("\n502"))
        },
    )?;
    ensure!(
        lab.log("proxy-a.log").contains("BlackHoleCluster"),
        "the refusal is logged: {}",
        lab.log("proxy-a.log")
    );
    let stats = check(&mut lab.exec(
        "a",
        &["curl", "-s", "http://127.0.0.1:15000/stats/prometheus"],
    ))?;
    ensure!(
        e2e::counter_sum(
            &stats,
            "istio_requests_total",
            &[
                ("destination_service_name", "BlackHoleCluster"),
                ("response_code", "502")
            ]
        ) >= 1.0,
        "the refusal is counted as BlackHoleCluster: {stats}"
    );
    // Raw TCP to it is closed; the mesh service still works.
    let reply = lab.raw_tcp("a", "10.77.0.4", 7070, "hello\\r\\n\\r\\n")?;
    ensure!(
        reply.is_empty(),
        "TCP to an unknown destination is closed under REGISTRY_ONLY: {reply:?}"
    );
    ensure!(
        lab.log("proxy-a.log")
            .contains("TCP destination not in the mesh registry"),
        "the TCP refusal is logged"
    );
    ensure!(
        tcp_to("BlackHoleCluster")? >= 1.0,
        "the refused TCP connection is not counted as BlackHoleCluster"
    );
    let (_, body) = lab.curl("a", "http://b:8080/still")?;
    ensure!(
        body.ends_with("\n200"),
        "mesh services still reachable: {body}"
    );
    Ok(())
}

/// 6. An excluded outbound port bypasses the sidecar: REGISTRY_ONLY,
///    which refuses 7070 on the same host, does not see 7075.
pub fn excluded_outbound_port(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let (status, body) = lab.curl("a", "http://10.77.0.4:7075/excluded-out")?;
    ensure!(
        status == 0 && body.contains("/excluded-out") && body.ends_with("\n200"),
        "port 7075 is not captured outbound: {status} {body}"
    );
    Ok(())
}
