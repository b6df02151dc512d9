//! The clients of the interop test: curl, nghttp and h2load as programs,
//! a raw WebSocket exchange, and gRPC calls through the benchmark's client.

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs a client program; its stdout, or an error with its stderr.
pub(super) fn run(program: &str, args: &[&str]) -> Result<String> {
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
pub(super) fn curl(args: &[&str]) -> Result<(u16, String)> {
    let mut all = vec!["-sS", "--max-time", "20", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = run("curl", &all)?;
    let (body, code) = out.rsplit_once('\n').context("no status")?;
    Ok((code.trim().parse()?, body.to_string()))
}

/// The `key=value` lines nginx's /echo returned.
pub(super) fn field<'a>(echo: &'a str, key: &str) -> &'a str {
    echo.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("<missing>")
}

/// A WebSocket exchange through `addr`: the server's handshake (RFC 6455's
/// sample key, so the accept value is known), then a masked frame and its
/// echo, then a close.
pub(super) async fn websocket(addr: &str, target: &str, host: &str) -> Result<()> {
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

/// gRPC unary calls (64 KiB requests) for half a second: all must succeed.
pub(super) async fn grpc_calls(dir: &Path, addr: &str, authority: &str) -> Result<()> {
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
