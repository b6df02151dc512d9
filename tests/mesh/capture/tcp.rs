//! Raw TCP through capture: a line-echo server that knows nothing of the
//! mesh, reached by short name through both sidecars, and a VirtualService
//! `tcp` route splitting the connections.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::lab::{Lab, wait_for};
use super::pods::Running;

/// Half of the connections to `lines` go to `lines-alt` instead.
const TCP_ROUTE: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: lines, namespace: default}
spec:
  hosts: [lines]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: lines, port: {number: 9000}}
      weight: 50
    - destination: {host: lines-alt, port: {number: 9001}}
      weight: 50
";

/// A raw TCP line-echo server that knows nothing of the mesh, on `port` in
/// the network namespace `netns` (a thread of this test moved into it):
/// each line comes back as "<port>: <line>"; the line `quit` closes.
pub fn line_echo(netns: &str, port: u16) -> Result<()> {
    use std::io::{BufRead, Write};
    let path = format!("/var/run/netns/{netns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let bound = (|| -> Result<std::net::TcpListener> {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(std::net::TcpListener::bind(("0.0.0.0", port))?)
        })();
        let listener = match bound {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone()?;
                for line in std::io::BufReader::new(conn).lines() {
                    let line = line?;
                    if line == "quit" {
                        break;
                    }
                    writeln!(out, "{port}: {line}")?;
                }
                std::io::Result::Ok(())
            });
        }
    });
    rx.recv()?
}

/// 1c. Raw TCP by short name: b's line-echo servers are reachable only
///     through b's sidecar (captured, STRICT), so an answer means both
///     sidecars carried it over mTLS. A VirtualService `tcp` route then
///     sends half the connections to lines-alt.
pub fn line_echo_by_short_name_and_tcp_route(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let lines = |lab: &Lab| lab.raw_tcp("a", "lines", 9000, "hello\\nquit\\n");
    let mut reply = String::new();
    wait_for(Duration::from_secs(15), "a reaches lines:9000", || {
        reply = lines(lab)?;
        Ok(!reply.is_empty())
    })
    .with_context(|| {
        format!(
            "{}\n---\n{}",
            lab.log("proxy-a.log"),
            lab.log("proxy-b.log")
        )
    })?;
    ensure!(
        reply == "9000: hello\n",
        "no route yet: lines itself: {reply:?}"
    );
    m.apply("tcp-route.yaml", TCP_ROUTE)?;
    wait_for(
        Duration::from_secs(15),
        "the TCP route sends to lines-alt",
        || Ok(lines(lab)? == "9001: hello\n"),
    )?;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        *seen.entry(lines(lab)?).or_insert(0) += 1;
    }
    ensure!(
        seen.len() == 2 && seen.contains_key("9000: hello\n") && seen.contains_key("9001: hello\n"),
        "50/50 over both destinations: {seen:?}"
    );
    Ok(())
}
