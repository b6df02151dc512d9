//! `kubectl exec`: the kubelet's remote command protocol,
//! `v4.channel.k8s.io`, over SPDY. The client opens a stream per standard
//! stream it asked for (header `streamType`: `error`, `stdin`, `stdout`,
//! `stderr`, `resize`); the command runs in the container's network and
//! mount namespaces as its user with its environment; its output goes
//! back on the streams, each half-closed at its end, and its outcome is a
//! `metav1.Status` on the error stream — exit code in a `NonZeroExitCode`
//! cause — from which kubectl takes its own exit code.
//!
//! No terminal is made: with `-t` the command's stderr joins its stdout
//! (a TTY has only one) and window sizes are read and dropped.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::connection::{CHUNK, Connection, Stream, StreamWriter};
use super::container::Process;

pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// How long the client has to open the streams it asked for.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

/// What the API server asks for, from the query (`command` repeated;
/// `input`, `output`, `error`, `tty` set to `1` when wanted).
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn from_query(query: &str) -> Result<Options, String> {
        let mut o = Options::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let on = v == "1" || v.eq_ignore_ascii_case("true");
            match &*k {
                "command" => o.command.push(v.into_owned()),
                "input" => o.stdin = on,
                "output" => o.stdout = on,
                "error" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        if o.command.is_empty() {
            return Err("no command given (query parameter `command`)".into());
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("at least one of stdin, stdout and stderr must be asked for".into());
        }
        Ok(o)
    }
}

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, o: &Options) -> bool {
        self.error.is_some()
            && (!o.stdin || self.stdin.is_some())
            && (!o.stdout || self.stdout.is_some())
            && (!o.stderr || o.tty || self.stderr.is_some())
            && (!o.tty || self.resize.is_some())
    }
}

/// Serves one exec on `conn` for the container whose process is `target`.
pub async fn run(mut conn: Connection, target: Process, options: Options) {
    let mut streams = Streams::default();
    let gathered = tokio::time::timeout(STREAMS_TIMEOUT, async {
        while !streams.complete(&options) {
            let Some(stream) = conn.streams.recv().await else {
                return false;
            };
            let slot = match stream.header("streamtype") {
                Some("error") => &mut streams.error,
                Some("stdin") => &mut streams.stdin,
                Some("stdout") => &mut streams.stdout,
                Some("stderr") => &mut streams.stderr,
                Some("resize") => &mut streams.resize,
                other => {
                    tracing::debug!(stream_type = ?other, "exec: unexpected stream; ignored");
                    continue;
                }
            };
            *slot = Some(stream);
        }
        true
    })
    .await;
    if gathered != Ok(true) {
        if let Some(error) = &streams.error {
            let status = failure(&format!(
                "timed out waiting for the client to open its streams ({}s)",
                STREAMS_TIMEOUT.as_secs()
            ));
            report(&error.out, &status).await;
        }
        conn.close().await;
        return;
    }
    let Some(error) = streams.error.take() else {
        return;
    };
    let status = execute(&conn, &target, &options, streams).await;
    report(&error.out, &status).await;
    conn.close().await;
}

async fn execute(
    conn: &Connection,
    target: &Process,
    options: &Options,
    mut streams: Streams,
) -> serde_json::Value {
    let (uid, gid) = (target.uid.to_string(), target.gid.to_string());
    let mut command = Command::new("nsenter");
    command
        .args([
            "--target",
            &target.pid.to_string(),
            "--net",
            "--mount",
            "--",
        ])
        .args([
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--clear-groups",
            "--",
        ])
        .args(&options.command)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(if options.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return failure(&format!(
                "error executing command in container: starting nsenter: {e}"
            ));
        }
    };
    let mut pumps = Vec::new();
    if let (Some(mut input), Some(mut stdin)) = (streams.stdin.take(), child.stdin.take()) {
        pumps.push(tokio::spawn(async move {
            while let Some(data) = input.incoming.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: the command sees the end of its input.
        }));
    }
    // Without a stdout stream the output is read and dropped, so the command never blocks.
    let stdout = streams.stdout.take().map(|s| s.out);
    let stderr = if options.tty {
        stdout.clone()
    } else {
        streams.stderr.take().map(|s| s.out)
    };
    let mut outputs = Vec::new();
    if let Some(out) = child.stdout.take() {
        outputs.push(tokio::spawn(copy_out(out, stdout.clone())));
    }
    if let Some(err) = child.stderr.take() {
        outputs.push(tokio::spawn(copy_out(err, stderr.clone())));
    }
    if let Some(mut resize) = streams.resize.take() {
        pumps.push(tokio::spawn(async move {
            while resize.incoming.recv().await.is_some() {}
        }));
    }
    let exit = tokio::select! {
        s = child.wait() => s,
        () = conn.hung_up() => {
            let _ = child.kill().await;
            child.wait().await
        }
    };
    for o in outputs {
        let _ = o.await;
    }
    // Each stream ends once: stdout also carries stderr under a TTY.
    if let Some(out) = &stdout {
        out.finish().await;
    }
    if let (Some(err), false) = (&stderr, options.tty) {
        err.finish().await;
    }
    for p in pumps {
        p.abort();
    }
    match exit {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            // Killed by a signal: 128 + its number, as container runtimes report it.
            let code = s
                .code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(1);
            if code == 0 {
                json!({"metadata": {}, "status": "Success"})
            } else {
                json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": format!(
                        "command terminated with non-zero exit code: error executing command {:?}, exit code {code}",
                        options.command
                    ),
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                })
            }
        }
        Err(e) => failure(&format!("error executing command in container: {e}")),
    }
}

async fn copy_out<R: AsyncRead + Unpin>(mut from: R, to: Option<StreamWriter>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(to) = &to
                    && !to.send(&buf[..n]).await
                {
                    return;
                }
            }
        }
    }
}

/// A failure that is not the command's exit code (kubectl prints its message).
fn failure(message: &str) -> serde_json::Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

async fn report(error: &StreamWriter, status: &serde_json::Value) {
    error.send(status.to_string().as_bytes()).await;
    error.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_api_servers_query() {
        let o = Options::from_query(
            "command=sh&command=-c&command=echo+a%20b&input=1&output=1&error=1",
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo a b"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        assert!(
            Options::from_query("output=1")
                .unwrap_err()
                .contains("no command")
        );
        assert!(
            Options::from_query("command=ls")
                .unwrap_err()
                .contains("at least one")
        );
    }
}
