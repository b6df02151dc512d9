//! Interoperability with strict, real servers and clients. Applications
//! behind sidecars: nginx (with its echo module, so that it says what it
//! received) over HTTP/1.1 and HTTP/2 (h2c), Envoy over HTTP/2 (its access
//! log says what it received), and a Python WebSocket server. Clients: curl,
//! nghttp and h2load through a client pod's sidecar (STRICT mTLS between the
//! sidecars), through the ingress gateway, and Envoy's own HTTP/1.1 and
//! HTTP/2 codecs in front of a sidecar. What the application received —
//! method, path, authority, protocol, headers, body bytes, trailers — is
//! checked, not only the status: nginx refuses an HTTP/2 request whose Host
//! differs from its `:authority` (issue 21) where a lenient server would not.

mod apps;
mod clients;

use anyhow::{Context, Result, ensure};
use e2e::{Mesh, eventually};
use std::path::Path;
use std::time::Duration;

use apps::{Envoy, WS_SERVER, envoy_app_conf, envoy_bin, nginx_conf};
use clients::{curl, field, grpc_calls, run, websocket};

fn resources(dir: &Path, envoy: &Path) -> String {
    let conf = dir.join("nginx.conf");
    let template = dir.join("nginx.conf.in");
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 8080}}
  - {{name: http2, port: 8081}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx
        command: [sh]
        args: ["-c", "sed \"s/BIND/$TRELLIS_BIND_ADDR/g\" {template} > {conf} && exec nginx -c {conf}"]
        ports: [{{containerPort: 8080}}, {{containerPort: 8081}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec:
  mtls: {{mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: web, port: {{number: 8080}}}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web2}}
spec:
  hosts: [web2.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: web, port: {{number: 8081}}}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ws}}
spec:
  hosts: [ws.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: ws, port: {{number: 8080}}}}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ws}}
spec:
  selector: {{app: ws}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ws}}
spec:
  selector: {{matchLabels: {{app: ws}}}}
  template:
    metadata:
      labels: {{app: ws}}
    spec:
      containers:
      - name: ws
        image: python
        command: [python3]
        args: [{ws}]
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: envoy-app}}
spec:
  selector: {{app: envoy-app}}
  ports: [{{name: http2, port: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: envoy-app}}
spec:
  selector: {{matchLabels: {{app: envoy-app}}}}
  template:
    metadata:
      labels: {{app: envoy-app}}
    spec:
      containers:
      - name: envoy
        image: envoy
        command: [sh]
        args: ["-c", "sed \"s/BIND/$TRELLIS_BIND_ADDR/g\" {envoy_template} > {envoy_conf} && exec {envoy} -c {envoy_conf} --concurrency 1 --disable-hot-restart --file-flush-interval-msec 20 --log-level warn"]
        ports: [{{containerPort: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: envoy-app}}
spec:
  hosts: [envoy.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: envoy-app, port: {{number: 8080}}}}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: grpc-app}}
spec:
  selector: {{app: grpc-app}}
  ports: [{{name: grpc, port: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: grpc-app}}
spec:
  selector: {{matchLabels: {{app: grpc-app}}}}
  template:
    metadata:
      labels: {{app: grpc-app}}
    spec:
      containers:
      - name: grpc
        image: bench
        command: [sh]
        args: ["-c", "exec {bench} --serve-upstream $TRELLIS_BIND_ADDR:8080"]
        ports: [{{containerPort: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc-app}}
spec:
  hosts: [grpc.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: grpc-app, port: {{number: 8080}}}}}}]}}]
"#,
        template = template.display(),
        conf = conf.display(),
        ws = dir.join("ws.py").display(),
        envoy = envoy.display(),
        envoy_template = dir.join("envoy-app.json.in").display(),
        envoy_conf = dir.join("envoy-app.json").display(),
        bench = e2e::bin("bench-data-plane").display(),
    )
}

/// The client pod's sidecar: its explicit outbound proxy.
fn outbound_of(mesh: &Mesh, app: &str) -> Result<String> {
    let p = mesh.pod_of(app)?;
    let admin = p["metadata"]["annotations"]["proxy.trellis.io/admin"]
        .as_str()
        .context("no sidecar")?;
    let (ip, _) = admin.rsplit_once(':').context("admin address")?;
    Ok(format!("{ip}:15001"))
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_servers_and_clients_through_sidecars_and_the_gateway() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("nginx.conf.in"), nginx_conf(d))?;
    std::fs::write(d.join("ws.py"), WS_SERVER)?;
    std::fs::create_dir_all(d.join("www/dav"))?;
    let big = bytes(4 << 20, 7);
    std::fs::write(d.join("www/big.bin"), &big)?;
    let mesh_dir = d.join("mesh");
    std::fs::create_dir_all(&mesh_dir)?;
    std::fs::write(
        d.join("envoy-app.json.in"),
        envoy_app_conf(&d.join("envoy-app-access.log")),
    )?;
    std::fs::write(mesh_dir.join("web.yaml"), resources(d, &envoy_bin()?))?;
    std::fs::write(
        mesh_dir.join("client.yaml"),
        e2e::echo_workload("client", ""),
    )?;
    let mesh = Mesh::up(&mesh_dir)?;
    let proxy = outbound_of(&mesh, "client")?;
    let via = format!("http://{proxy}");
    let gateway = mesh.gateway.clone();

    // Up when nginx answers through the mesh on both ports.
    eventually(Duration::from_secs(30), || async {
        for port in [8080, 8081] {
            let (code, body) = curl(&["-x", &via, &format!("http://web:{port}/echo")])?;
            ensure!(code == 200, "web:{port}: {code} {body}");
        }
        Ok(())
    })
    .await?;

    // HTTP/1.1 client, HTTP/1.1 app: the authority the client asked for,
    // headers and cookies as sent, no connection-specific headers.
    let (code, echo) = curl(&[
        "-x",
        &via,
        "http://web:8080/echo?q=1",
        "-H",
        "x-test: one",
        "-H",
        "cookie: a=1",
        "-H",
        "te: trailers, deflate",
    ])?;
    ensure!(code == 200, "{code} {echo}");
    ensure!(field(&echo, "method") == "GET", "{echo}");
    ensure!(field(&echo, "uri") == "/echo?q=1", "{echo}");
    ensure!(field(&echo, "http_host") == "web:8080", "{echo}");
    ensure!(field(&echo, "proto") == "HTTP/1.1", "{echo}");
    ensure!(field(&echo, "x_test") == "one", "{echo}");
    ensure!(field(&echo, "cookie") == "a=1", "{echo}");
    ensure!(
        field(&echo, "te") == "trailers",
        "only `te: trailers` goes on: {echo}"
    );

    // HTTP/1.1 client, HTTP/2 (h2c) app: nginx refuses a Host that differs
    // from `:authority`, so a 200 with the client's host is the proof.
    let (code, echo) = curl(&[
        "-x",
        &via,
        "http://web:8081/echo",
        "-H",
        "cookie: a=1",
        "-H",
        "cookie: b=2",
    ])?;
    ensure!(code == 200, "{code} {echo}");
    ensure!(field(&echo, "proto") == "HTTP/2.0", "{echo}");
    ensure!(field(&echo, "host") == "web", "{echo}");
    ensure!(field(&echo, "connection").is_empty(), "{echo}");

    // HTTP/2 clients (prior knowledge) to the sidecar, both app protocols.
    for (port, proto) in [(8080, "HTTP/1.1"), (8081, "HTTP/2.0")] {
        let (code, echo) = curl(&[
            "--http2-prior-knowledge",
            &format!("http://{proxy}/echo"),
            "-H",
            &format!("host: web:{port}"),
            "-H",
            "cookie: a=1",
            "-H",
            "cookie: b=2",
        ])?;
        ensure!(code == 200, "h2 to web:{port}: {code} {echo}");
        ensure!(field(&echo, "proto") == proto, "{echo}");
        ensure!(field(&echo, "host") == "web", "{echo}");
        if proto == "HTTP/1.1" {
            ensure!(field(&echo, "http_host") == format!("web:{port}"), "{echo}");
            ensure!(
                field(&echo, "cookie") == "a=1; b=2",
                "cookies joined for HTTP/1.1: {echo}"
            );
        }
    }

    // The path nginx receives is the one routing and authorization used.
    let (code, echo) = curl(&[
        "--path-as-is",
        "-x",
        &via,
        "http://web:8080/static/../echo/%2e%2e/echo",
    ])?;
    ensure!(code == 200, "{code} {echo}");
    ensure!(
        field(&echo, "uri") == "/echo",
        "normalised once, forwarded so: {echo}"
    );
    let (code, _) = curl(&["-x", &via, "http://web:8080/echo%00"])?;
    ensure!(code == 400, "%00 refused at the sidecar: {code}");

    // Response trailers over HTTP/2 end to end, seen by nghttp.
    let out = run(
        "nghttp",
        &[
            "-v",
            "-H",
            ":authority: web:8081",
            &format!("http://{proxy}/trailer"),
        ],
    )?;
    ensure!(out.contains("x-trailer: done"), "no trailer:\n{out}");
    ensure!(out.contains(":status: 200"), "{out}");

    // Bodies: a 4 MiB download over each protocol, byte for byte.
    for port in [8080, 8081] {
        let file = d.join(format!("down-{port}"));
        let (code, _) = curl(&[
            "-x",
            &via,
            &format!("http://web:{port}/big.bin"),
            "-o",
            &file.display().to_string(),
        ])?;
        ensure!(code == 200, "download {port}: {code}");
        ensure!(std::fs::read(&file)? == big, "download over {port} differs");
    }
    // Uploads: content-length (curl adds `Expect: 100-continue` above 1 MiB),
    // chunked, and over HTTP/2; what nginx stored is what was sent.
    let upload = bytes(3 << 20, 42);
    let src = d.join("upload.bin");
    std::fs::write(&src, &upload)?;
    let src_s = src.display().to_string();
    let uploads: [(&str, Vec<&str>); 3] = [
        (
            "length",
            vec![
                "-x",
                &via,
                "-H",
                "expect: 100-continue",
                "http://web:8080/dav/length",
            ],
        ),
        (
            "chunked",
            vec![
                "-x",
                &via,
                "-H",
                "transfer-encoding: chunked",
                "http://web:8080/dav/chunked",
            ],
        ),
        ("h2", vec!["-x", &via, "http://web:8081/dav/h2"]),
    ];
    for (name, args) in uploads {
        let mut all = vec!["-T", src_s.as_str()];
        all.extend(args);
        let (code, body) = curl(&all)?;
        ensure!(code == 201 || code == 204, "upload {name}: {code} {body}");
        let stored = std::fs::read(d.join("www/dav").join(name))?;
        ensure!(
            stored == upload,
            "upload {name}: nginx stored {} bytes that differ",
            stored.len()
        );
    }

    // HEAD: the length of the body that is not sent.
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "-I",
            "-x",
            &via,
            "http://web:8081/big.bin",
        ],
    )?;
    ensure!(out.starts_with("HTTP/1.1 200"), "{out}");
    ensure!(
        out.to_ascii_lowercase()
            .contains(&format!("content-length: {}", big.len())),
        "{out}"
    );

    // h2load: many streams on few connections, each answered by nginx.
    let out = run(
        "h2load",
        &[
            "-n",
            "400",
            "-c",
            "2",
            "-m",
            "20",
            "-H",
            ":authority: web:8081",
            &format!("http://{proxy}/echo"),
        ],
    )?;
    ensure!(out.contains("400 succeeded, 0 failed"), "{out}");
    ensure!(out.contains("status codes: 400 2xx"), "{out}");

    // The ingress gateway: the client's host reaches nginx, over each protocol.
    for (host, proto) in [
        ("web.example.com", "HTTP/1.1"),
        ("web2.example.com", "HTTP/2.0"),
    ] {
        for h2 in [false, true] {
            let mut args = vec!["-H", "x-test: gw"];
            let hdr = format!("host: {host}");
            args.extend(["-H", hdr.as_str()]);
            if h2 {
                args.push("--http2-prior-knowledge");
            }
            let url = format!("{gateway}/echo");
            args.push(&url);
            let (code, echo) = curl(&args)?;
            ensure!(code == 200, "gateway {host} h2={h2}: {code} {echo}");
            ensure!(field(&echo, "host") == host, "{echo}");
            ensure!(field(&echo, "proto") == proto, "{echo}");
            ensure!(field(&echo, "x_test") == "gw", "{echo}");
        }
    }

    // Envoy as the client side: its HTTP/1.1 and HTTP/2 codecs (strict ones)
    // send to the client pod's sidecar; nginx sees the client's authority.
    let envoy = Envoy::start(d, &mesh, &proxy)?;
    for (cluster, port, proto) in [
        ("h1", 8081, "HTTP/2.0"),
        ("h2", 8080, "HTTP/1.1"),
        ("h2", 8081, "HTTP/2.0"),
    ] {
        let host = format!("web:{port}");
        let (code, echo) = curl(&[
            &format!("http://{}/echo?via=envoy", envoy.addr),
            "-H",
            &format!("host: {host}"),
            "-H",
            &format!("x-cluster: {cluster}"),
        ])?;
        ensure!(code == 200, "envoy {cluster} to {host}: {code} {echo}");
        ensure!(field(&echo, "host") == "web", "{echo}");
        ensure!(field(&echo, "proto") == proto, "{echo}");
        ensure!(field(&echo, "uri") == "/echo?via=envoy", "{echo}");
    }
    drop(envoy);

    // Envoy as the application, HTTP/2 only: what it received, from an
    // HTTP/1.1 client, an HTTP/2 client and through the gateway.
    let sends: [(Vec<String>, &str); 3] = [
        (
            vec![
                "-x".into(),
                via.clone(),
                "http://envoy-app:8080/e1?q=1".into(),
            ],
            "envoy-app:8080",
        ),
        (
            vec![
                "--http2-prior-knowledge".into(),
                format!("http://{proxy}/e2"),
                "-H".into(),
                "host: envoy-app:8080".into(),
            ],
            "envoy-app:8080",
        ),
        (
            vec![
                format!("{gateway}/e3"),
                "-H".into(),
                "host: envoy.example.com".into(),
            ],
            "envoy.example.com",
        ),
    ];
    for (args, _) in &sends {
        let mut all: Vec<&str> = vec!["-H", "x-test: envoy"];
        all.extend(args.iter().map(String::as_str));
        eventually(Duration::from_secs(20), || async {
            let (code, body) = curl(&all)?;
            ensure!(
                code == 200 && body == "envoy app",
                "{args:?}: {code} {body}"
            );
            Ok(())
        })
        .await?;
    }
    let log = d.join("envoy-app-access.log");
    let seen = eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        ensure!(lines.len() >= 3, "{text}");
        Ok(lines)
    })
    .await?;
    for ((_, authority), (entry, path)) in
        sends.iter().zip(seen.iter().zip(["/e1?q=1", "/e2", "/e3"]))
    {
        ensure!(entry["method"] == "GET" && entry["path"] == path, "{entry}");
        ensure!(entry["authority"] == *authority, "{entry}");
        ensure!(
            entry["protocol"] == "HTTP/2" && entry["x_test"] == "envoy",
            "{entry}"
        );
    }

    // gRPC: tonic's client (the benchmark's gRPC load client, for a second)
    // to a gRPC app, through the sidecars and through the gateway; a call
    // succeeds only when its `grpc-status` trailer arrives.
    let gw_addr = gateway.trim_start_matches("http://").to_string();
    for (addr, authority) in [
        (proxy.as_str(), "grpc-app:8080"),
        (gw_addr.as_str(), "grpc.example.com"),
    ] {
        eventually(Duration::from_secs(20), || grpc_calls(d, addr, authority)).await?;
    }

    // WebSocket over HTTP/1.1: through the sidecars (mTLS between them) and
    // through the gateway, the handshake and frames both ways.
    eventually(Duration::from_secs(20), || {
        websocket(&proxy, "http://ws:8080/chat?room=1", "ws:8080")
    })
    .await?;
    let gw = gateway.trim_start_matches("http://").to_string();
    websocket(&gw, "/chat?room=1", "ws.example.com").await?;
    Ok(())
}
