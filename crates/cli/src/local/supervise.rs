//! Keeps child processes running: restarts a child that exits, with
//! exponential backoff, and stops all of them cleanly. What each child is
//! doing (running, restarts) is kept in a [`StatusBoard`], written to a file
//! the control plane reads for `trellis get pods`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One process to keep running.
#[derive(Clone, Debug)]
pub struct Spec {
    /// How logs and messages name it: `default/reviews-v1-7f9c…/reviews`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Start from an empty environment (but PATH), as a container does,
    /// rather than this process's.
    pub clear_env: bool,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
}

/// A group of supervised processes, stopped together.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    board: Option<StatusBoard>,
}

/// One child's state, as `trellis get pods` shows it (Kubernetes' names).
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    pub running: bool,
    pub restart_count: u32,
    /// Waiting to be restarted after exiting (`CrashLoopBackOff`).
    pub backing_off: bool,
    /// The running process (the leader of its own process group).
    #[serde(skip)]
    pub pid: Option<u32>,
    /// How the previous run ended, once one has (a kubelet's `lastState`).
    #[serde(skip)]
    pub last_exit: Option<Exit>,
}

/// One run of a child that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit status, or 128 + the signal that ended it (as container runtimes report it).
    pub code: i32,
    pub started: std::time::SystemTime,
    pub finished: std::time::SystemTime,
}

impl Exit {
    fn of(status: std::process::ExitStatus, started: std::time::SystemTime) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Exit {
            code,
            started,
            finished: std::time::SystemTime::now(),
        }
    }
}

/// Every child's [`ProcessStatus`] by name, rewritten (atomically) to a JSON
/// file on each change, so that a child that dies shows as not ready at once.
#[derive(Clone)]
pub struct StatusBoard {
    file: Arc<PathBuf>,
    state: Arc<Mutex<BTreeMap<String, ProcessStatus>>>,
}

impl StatusBoard {
    pub fn new(file: &Path) -> StatusBoard {
        StatusBoard {
            file: Arc::new(file.to_path_buf()),
            state: Arc::default(),
        }
    }

    /// The state of the child named `name`, once it has been started.
    pub fn get(&self, name: &str) -> Option<ProcessStatus> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.get(name).cloned()
    }

    fn set(&self, name: &str, f: impl FnOnce(&mut ProcessStatus)) {
        let json = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            f(state.entry(name.to_string()).or_default());
            serde_json::to_vec(&*state).unwrap_or_default()
        };
        let tmp = self.file.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &*self.file))
        {
            tracing::warn!(file = %self.file.display(), error = %e, "cannot write the process status file");
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting starts over at the shortest backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            board: None,
        }
    }

    /// Reports every child's state on `board`.
    pub fn with_status(board: StatusBoard) -> Self {
        Supervisor {
            board: Some(board),
            ..Self::new()
        }
    }

    pub fn spawn(&mut self, spec: Spec) {
        let stop = self.stop.subscribe();
        self.tasks
            .push(tokio::spawn(keep_running(spec, stop, self.board.clone())));
    }

    /// Asks every child to stop (SIGTERM, then SIGKILL after a grace period) and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn command(spec: &Spec) -> std::io::Result<Command> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut cmd = Command::new(&spec.program);
    if spec.clear_env {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    }
    cmd.args(&spec.args)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in the terminal reaches only
        // `trellis up`, which then stops the children in order.
        .process_group(0)
        .kill_on_drop(true);
    // Children die with `trellis up`, even when it is killed with SIGKILL.
    sys::terminate_with_parent(&mut cmd);
    Ok(cmd)
}

async fn keep_running(spec: Spec, mut stop: watch::Receiver<bool>, board: Option<StatusBoard>) {
    let report = |f: &dyn Fn(&mut ProcessStatus)| {
        if let Some(b) = &board {
            b.set(&spec.name, f);
        }
    };
    let mut backoff = Duration::from_secs(1);
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        let outcome = match command(&spec).and_then(|mut c| c.spawn()) {
            Ok(mut child) => {
                let pid = child.id();
                report(&|s| {
                    s.running = true;
                    s.backing_off = false;
                    s.pid = pid;
                });
                tokio::select! {
                    status = child.wait() => Ok(status),
                    _ = stopped(&mut stop) => {
                        terminate(&spec.name, &mut child).await;
                        return;
                    }
                }
            }
            Err(e) => Err(e),
        };
        if *stop.borrow() {
            return;
        }
        if started.elapsed() > HEALTHY_RUN {
            backoff = Duration::from_secs(1);
        }
        restarts += 1;
        let exit = match &outcome {
            Ok(Ok(status)) => Some(Exit::of(*status, started_at)),
            _ => None,
        };
        report(&|s| {
            s.running = false;
            s.backing_off = true;
            s.restart_count = restarts;
            s.pid = None;
            if exit.is_some() {
                s.last_exit = exit;
            }
        });
        match outcome {
            Ok(status) => tracing::warn!(
                process = %spec.name, status = %describe(status), restart = restarts, backoff_s = backoff.as_secs(),
                log = %spec.log.display(), "process exited; restarting"
            ),
            Err(e) => {
                tracing::error!(process = %spec.name, program = %spec.program.display(), error = %e, "cannot start; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Map at once: the guard `wait_for` returns must not live across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

async fn terminate(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(process = %name, "did not stop after SIGTERM; killing");
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str, log: &Path) -> Spec {
        Spec {
            name: name.into(),
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            clear_env: false,
            log: log.to_path_buf(),
        }
    }

    /// What `get pods` shows comes from here: a process that keeps exiting
    /// is not running and counts restarts; one that runs is running.
    #[tokio::test]
    async fn the_status_file_shows_running_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("processes.json");
        let log = dir.path().join("log");
        let mut sup = Supervisor::with_status(StatusBoard::new(&file));
        sup.spawn(sh("ns/pod/crashing", "exit 3", &log));
        sup.spawn(sh("ns/pod/steady", "sleep 30", &log));
        let mut seen = serde_json::Value::Null;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            seen = serde_json::from_slice(&bytes).unwrap_or_default();
            if seen["ns/pod/crashing"]["restartCount"].as_u64() >= Some(1)
                && seen["ns/pod/steady"]["running"] == true
            {
                break;
            }
        }
        assert_eq!(seen["ns/pod/crashing"]["running"], false, "{seen}");
        assert_eq!(seen["ns/pod/crashing"]["backingOff"], true, "{seen}");
        assert!(
            seen["ns/pod/crashing"]["restartCount"].as_u64() >= Some(1),
            "{seen}"
        );
        assert_eq!(seen["ns/pod/steady"]["running"], true, "{seen}");
        assert_eq!(seen["ns/pod/steady"]["restartCount"], 0, "{seen}");
        sup.stop().await;
    }
}
