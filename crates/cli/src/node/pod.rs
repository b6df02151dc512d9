//! One pod on this node, from start to teardown, as a kubelet runs it: its
//! network namespace and address, its volumes, its init containers in
//! order (a native sidecar — an init container with `restartPolicy:
//! Always` — is started and kept running, and the next one waits for its
//! startup probe), then its containers, each a supervised local process
//! (images mapped to programs as `trellis up` maps them); probes; and the
//! pod's status written back (phase, IPs, conditions, container statuses
//! with restart counts), from which the controller manager builds
//! EndpointSlices. Stopping the pod stops its processes and removes its
//! namespace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use serde_json::Value;
use tokio::sync::watch;

mod status;

use super::probe::ProbeState;
use super::services::{self, ServiceTable};
use super::volumes;
use crate::local::netns::{self, PodNetwork};
use crate::local::programs::program_for;
use crate::local::supervise::{Spec, StatusBoard, Supervisor};

/// What every pod of the node shares.
pub struct Node {
    pub client: kube::Client,
    pub name: String,
    /// The node's address (the host's end of the pod network).
    pub ip: Ipv4Addr,
    pub network: PodNetwork,
    /// Where pods' volumes and logs go.
    pub dir: PathBuf,
    /// The cluster's Services, once listed.
    pub services: watch::Receiver<Option<Arc<ServiceTable>>>,
}

/// The pod's place on the node: its veth's index and its address.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub index: usize,
    pub ip: Ipv4Addr,
}

/// Runs `pod` until `stop` turns true, then tears it down.
pub async fn run(node: Arc<Node>, pod: Pod, slot: Slot, mut stop: watch::Receiver<bool>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let id = format!("{name}.{namespace}");
    let dir = node.dir.join("pods").join(&id);
    let mut runner = Runner {
        api: Api::namespaced(node.client.clone(), &namespace),
        node: node.clone(),
        id: id.clone(),
        ns: String::new(),
        slot,
        dir: dir.clone(),
        pod,
        conditions: BTreeMap::new(),
        last_written: None,
        started_at: super::now(),
        service_env: Vec::new(),
        services_task: None,
    };
    let board = StatusBoard::new(&dir.join("processes.json"));
    let mut sup = Supervisor::with_status(board.clone());
    let outcome = tokio::select! {
        r = runner.run(&mut sup, &board) => r,
        () = stopped(&mut stop) => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::warn!(pod = %id, error = %format!("{e:#}"), "pod cannot run");
        runner.failed(&format!("{e:#}")).await;
        stopped(&mut stop).await;
    }
    if let Some(task) = runner.services_task.take() {
        task.abort();
    }
    sup.stop().await;
    if let Err(e) = node.network.remove_pod(&id) {
        tracing::warn!(pod = %id, error = %format!("{e:#}"), "cannot remove the pod's network namespace");
    }
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(pod = %id, "pod stopped");
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Map at once: the guard `wait_for` returns must not live across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

struct Runner {
    api: Api<Pod>,
    node: Arc<Node>,
    id: String,
    ns: String,
    slot: Slot,
    dir: PathBuf,
    /// The pod as the API server sent it, with this node's IPs filled in.
    pod: Pod,
    /// Each condition's status and when it last changed.
    conditions: BTreeMap<&'static str, (bool, String)>,
    last_written: Option<Value>,
    started_at: String,
    /// What every container is given of the cluster's Services (`KUBERNETES_SERVICE_HOST`...).
    service_env: Vec<(String, String)>,
    /// Keeps the pod's Service rules and names up to date.
    services_task: Option<tokio::task::JoinHandle<()>>,
}

/// Where a pod's view of the Services is written.
struct PodPlace {
    node: Arc<Node>,
    id: String,
    /// The pod's network namespace.
    ns: String,
    /// The pod's Kubernetes namespace.
    namespace: String,
    ip: Ipv4Addr,
    hostname: String,
    aliases: Vec<String>,
}

impl PodPlace {
    async fn sync(&self, table: &ServiceTable) -> Result<()> {
        services::apply(&self.ns, table).await?;
        let mut lines = self.aliases.clone();
        lines.extend(table.hosts_lines(&self.namespace));
        self.node
            .network
            .write_hosts(&self.id, &self.hostname, self.ip, &lines)
    }
}

/// A container as it is run: its probes and what became of it.
struct Running {
    container: Container,
    /// A native sidecar or an application container (supervised); else a
    /// run-to-completion init container.
    long_running: bool,
    startup: Option<ProbeState>,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
    /// A run-to-completion init container that finished.
    completed: bool,
    /// Why it is not running, for a waiting state.
    waiting: Option<(String, String)>,
    restarts: u32,
    uid: u32,
    started_at: Option<(u32, String)>,
}

impl Running {
    fn new(container: &Container, long_running: bool, uid: u32) -> Running {
        Running {
            container: container.clone(),
            long_running,
            startup: container
                .startup_probe
                .as_ref()
                .map(|p| ProbeState::new(p, container)),
            readiness: container
                .readiness_probe
                .as_ref()
                .map(|p| ProbeState::new(p, container)),
            liveness: container
                .liveness_probe
                .as_ref()
                .map(|p| ProbeState::new(p, container)),
            completed: false,
            waiting: Some(("ContainerCreating".into(), String::new())),
            restarts: 0,
            uid,
            started_at: None,
        }
    }

    fn started(&self, running: bool) -> bool {
        running && self.startup.as_ref().is_none_or(|p| p.passing)
    }

    fn ready(&self, running: bool) -> bool {
        if !self.long_running {
            return self.completed;
        }
        self.started(running) && self.readiness.as_ref().is_none_or(|p| p.passing)
    }
}

impl Runner {
    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    fn namespace(&self) -> String {
        self.pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    async fn run(&mut self, sup: &mut Supervisor, board: &StatusBoard) -> Result<()> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        if spec.host_network == Some(true) {
            tracing::warn!(pod = %self.id, "hostNetwork is not supported by trellis node: the pod gets its own network namespace");
        }
        // The node's addresses, which env and downward API references read.
        let status = self.pod.status.get_or_insert_with(Default::default);
        status.pod_ip = Some(self.slot.ip.to_string());
        status.host_ip = Some(self.node.ip.to_string());

        let net = &self.node.network;
        self.ns = net.add_pod(self.slot.index, &self.id, &self.namespace(), self.slot.ip)?;
        let hostname = spec.hostname.clone().unwrap_or_else(|| self.name());
        let aliases: Vec<String> = spec
            .host_aliases
            .iter()
            .flatten()
            .map(|a| {
                format!(
                    "{}\t{}",
                    a.ip,
                    a.hostnames.clone().unwrap_or_default().join(" ")
                )
            })
            .collect();
        net.write_hosts(&self.id, &hostname, self.slot.ip, &aliases)?;
        for s in spec
            .security_context
            .iter()
            .flat_map(|c| c.sysctls.iter().flatten())
        {
            net.sysctl(&self.id, &s.name, &s.value)?;
        }
        self.follow_services(hostname, aliases).await?;
        let mut inits: Vec<Running> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                Running::new(c, sidecar, self.uid_of(c))
            })
            .collect();
        let mut apps: Vec<Running> = spec
            .containers
            .iter()
            .map(|c| Running::new(c, true, self.uid_of(c)))
            .collect();
        self.write(&mut inits, &mut apps, board, false).await;

        // Volumes: retried until they can be made (e.g. a ConfigMap not yet written).
        let volumes = loop {
            match volumes::materialise(&self.node.client, &self.pod, &self.dir.join("volumes"))
                .await
            {
                Ok(v) => break v,
                Err(e) => {
                    let message = format!("{e:#}");
                    for r in inits.iter_mut().chain(apps.iter_mut()) {
                        r.waiting = Some(("ContainerCreating".into(), message.clone()));
                    }
                    self.write(&mut inits, &mut apps, board, false).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let logs = self.node.dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

        for i in 0..inits.len() {
            let process = self.process(&inits[i].container, &volumes, &logs);
            let process = match process {
                Ok(p) => p,
                Err(e) => {
                    inits[i].waiting =
                        Some(("CreateContainerConfigError".into(), format!("{e:#}")));
                    self.write(&mut inits, &mut apps, board, false).await;
                    return Err(e);
                }
            };
            if inits[i].long_running {
                inits[i].waiting = None;
                sup.spawn(process);
                // The next container starts once this one has started.
                loop {
                    let running = board
                        .get(&self.process_name(&inits[i].container))
                        .is_some_and(|s| s.running);
                    if running {
                        let (ip, ns) = (self.slot.ip, self.ns.clone());
                        let uid = inits[i].uid;
                        if let Some(p) = inits[i].startup.as_mut() {
                            p.tick(ip, &ns, uid).await;
                        }
                        if inits[i].started(true) {
                            break;
                        }
                    }
                    self.write(&mut inits, &mut apps, board, false).await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            } else {
                self.run_to_completion(i, &mut inits, &mut apps, board, process)
                    .await?;
            }
        }
        for (i, app) in apps.iter_mut().enumerate() {
            match self.process(&spec.containers[i], &volumes, &logs) {
                Ok(p) => {
                    app.waiting = None;
                    sup.spawn(p);
                }
                Err(e) => {
                    app.waiting = Some(("CreateContainerConfigError".into(), format!("{e:#}")));
                }
            }
        }
        // Tokens are renewed at 80 % of their lifetime, as a kubelet does.
        let lifetime = volumes::token_lifetime(&self.pod);
        let renew_after = |d: Duration| tokio::time::Instant::now() + d * 4 / 5;
        let mut renew_at = lifetime.map(renew_after);
        loop {
            if let (Some(at), Some(life)) = (renew_at, lifetime)
                && tokio::time::Instant::now() >= at
            {
                let volumes_dir = self.dir.join("volumes");
                renew_at = match volumes::refresh_tokens(&self.node.client, &self.pod, &volumes_dir)
                    .await
                {
                    Ok(()) => Some(renew_after(life)),
                    Err(e) => {
                        tracing::warn!(pod = %self.id, error = %format!("{e:#}"), "cannot renew the pod's tokens; retrying");
                        Some(tokio::time::Instant::now() + Duration::from_secs(30))
                    }
                };
            }
            let (ip, ns) = (self.slot.ip, self.ns.clone());
            for r in inits.iter_mut().chain(apps.iter_mut()) {
                let running = r.long_running
                    && board
                        .get(&format!("{}/{}", self.id, r.container.name))
                        .is_some_and(|s| s.running);
                if !running {
                    continue;
                }
                let failed = if let Some(p) = r.startup.as_mut().filter(|p| !p.passing) {
                    p.tick(ip, &ns, r.uid).await;
                    p.failed().then(|| ("startup", p.last_error.clone()))
                } else {
                    if let Some(p) = r.readiness.as_mut() {
                        p.tick(ip, &ns, r.uid).await;
                    }
                    match r.liveness.as_mut() {
                        Some(p) => {
                            p.tick(ip, &ns, r.uid).await;
                            p.failed().then(|| ("liveness", p.last_error.clone()))
                        }
                        None => None,
                    }
                };
                if let Some((kind, error)) = failed {
                    self.restart(r, board, kind, error.unwrap_or_default());
                }
            }
            self.write(&mut inits, &mut apps, board, true).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Gives the pod the cluster's Services before any container starts
    /// (their rules, names and the `kubernetes` Service's variables), then
    /// keeps the rules and names up to date while the pod runs.
    async fn follow_services(&mut self, hostname: String, aliases: Vec<String>) -> Result<()> {
        let mut rx = self.node.services.clone();
        let table = rx
            .wait_for(Option::is_some)
            .await
            .context("the node stopped following Services")?
            .clone()
            .unwrap_or_default();
        let place = PodPlace {
            node: self.node.clone(),
            id: self.id.clone(),
            ns: self.ns.clone(),
            namespace: self.namespace(),
            ip: self.slot.ip,
            hostname,
            aliases,
        };
        place.sync(&table).await?;
        self.service_env = table.kubernetes_env();
        self.services_task = Some(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let table = rx.borrow_and_update().clone().unwrap_or_default();
                if let Err(e) = place.sync(&table).await {
                    tracing::warn!(pod = %place.id, error = %format!("{e:#}"), "cannot update the pod's Services");
                }
            }
        }));
        Ok(())
    }

    /// A kubelet's answer to a failed liveness or startup probe: the
    /// container is stopped (SIGTERM to its process group) and the
    /// supervisor starts it again, counting the restart; its probes start
    /// over, initial delays included.
    fn restart(&self, r: &mut Running, board: &StatusBoard, kind: &str, error: String) {
        let name = self.process_name(&r.container);
        tracing::warn!(pod = %self.id, container = %r.container.name, probe = kind, %error, "container failed its {kind} probe; restarting it");
        // The probe's own grace period, else the pod's (30 s by default):
        // then SIGKILL, as a kubelet does, if the same process still runs.
        let probe = match kind {
            "startup" => r.container.startup_probe.as_ref(),
            _ => r.container.liveness_probe.as_ref(),
        };
        let grace = probe
            .and_then(|p| p.termination_grace_period_seconds)
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0)
            .unsigned_abs();
        if let Some(pid) = board.get(&name).and_then(|s| s.pid) {
            use nix::sys::signal::{Signal, kill};
            let group = nix::unistd::Pid::from_raw(-(pid as i32));
            if let Err(e) = kill(group, Signal::SIGTERM) {
                tracing::warn!(pod = %self.id, container = %r.container.name, error = %e, "cannot stop the container");
            }
            let board = board.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(grace)).await;
                if board.get(&name).and_then(|s| s.pid) == Some(pid) {
                    tracing::warn!(container = %name, "still running {grace} s after SIGTERM; killing it");
                    let _ = kill(group, Signal::SIGKILL);
                }
            });
        }
        let fresh = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().map(|p| ProbeState::new(p, &r.container))
        };
        r.startup = fresh(&r.container.startup_probe);
        r.readiness = fresh(&r.container.readiness_probe);
        r.liveness = fresh(&r.container.liveness_probe);
    }

    /// Runs init container `i` until it exits 0, retrying with backoff
    /// (a pod with `restartPolicy: Never` fails instead).
    async fn run_to_completion(
        &mut self,
        i: usize,
        inits: &mut [Running],
        apps: &mut [Running],
        board: &StatusBoard,
        process: Spec,
    ) -> Result<()> {
        let never = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("Never");
        let mut backoff = Duration::from_secs(1);
        loop {
            inits[i].waiting = None;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&process.log)
                .with_context(|| format!("opening {}", process.log.display()))?;
            let status = tokio::process::Command::new(&process.program)
                .args(&process.args)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(process.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .status()
                .await;
            match status {
                Ok(s) if s.success() => {
                    inits[i].completed = true;
                    self.write(inits, apps, board, false).await;
                    return Ok(());
                }
                outcome => {
                    let why = match outcome {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    };
                    if never {
                        bail!(
                            "init container {} failed ({why}); see {}",
                            inits[i].container.name,
                            process.log.display()
                        );
                    }
                    inits[i].restarts += 1;
                    inits[i].waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!("{why}; see {}", process.log.display()),
                    ));
                    tracing::warn!(pod = %self.id, container = %inits[i].container.name, %why, "init container failed; retrying");
                    self.write(inits, apps, board, false).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn process_name(&self, c: &Container) -> String {
        format!("{}/{}", self.id, c.name)
    }

    /// The container's user: its `runAsUser`, the pod's, else an
    /// unprivileged one (never the proxy's, whose traffic is not captured).
    fn uid_of(&self, c: &Container) -> u32 {
        c.security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()?
                    .security_context
                    .as_ref()?
                    .run_as_user
            })
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(netns::APP_UID)
    }

    /// The process a container is: its program (from its command or
    /// image), environment and mounts, in the pod's network namespace.
    fn process(
        &self,
        c: &Container,
        volumes: &BTreeMap<String, PathBuf>,
        logs: &Path,
    ) -> Result<Spec> {
        let cname = &c.name;
        if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            bail!("container {cname}: envFrom is not supported by trellis node");
        }
        let mut env = vec![("HOSTNAME".to_string(), self.name())];
        env.extend(self.service_env.iter().cloned());
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => expand(v, &env),
                (None, None) => String::new(),
                (None, Some(from)) => {
                    let field = from.field_ref.as_ref().map(|f| f.field_path.as_str());
                    match field.and_then(|f| volumes::field_value(&self.pod, f)) {
                        Some(v) => v,
                        None => bail!(
                            "container {cname}: env {}: only fieldRef to metadata, spec.nodeName, spec.serviceAccountName, status.podIP and status.hostIP is supported by trellis node",
                            e.name
                        ),
                    }
                }
            };
            env.push((e.name.clone(), value));
        }
        let mut expanded = c.clone();
        for list in [&mut expanded.command, &mut expanded.args] {
            for item in list.iter_mut().flatten() {
                *item = expand(item, &env);
            }
        }
        let (program, args) = program_for(&expanded)?;
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(source) = volumes.get(&m.name) else {
                bail!(
                    "container {cname}: volumeMount {}: the pod has no such volume",
                    m.name
                );
            };
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) if sub.split('/').any(|p| p == "..") => {
                    bail!(
                        "container {cname}: volumeMount {}: subPath {sub:?} leaves the volume",
                        m.name
                    )
                }
                Some(sub) => source.join(sub),
                None => source.clone(),
            };
            mounts.push((source, m.mount_path.clone()));
        }
        let (program, args) =
            netns::in_pod_mounted(&self.ns, self.uid_of(c), &mounts, &program, &args);
        Ok(Spec {
            name: self.process_name(c),
            program,
            args,
            env,
            // A container sees its own environment, never the agent's.
            clear_env: true,
            log: logs.join(format!("{}.{}.{cname}.log", self.namespace(), self.name())),
        })
    }
}

/// Kubernetes' `$(VAR)` references in a container's command, args and env
/// values: replaced by the variable's value when it is defined (earlier in
/// the list), kept as written otherwise; `$$` is a literal `$`.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(k, _)| *k == inner[..close])
        {
            out.push_str(value);
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_references_expand_as_kubernetes_does() {
        let env = vec![("INSTANCE_IP".to_string(), "10.1.0.2".to_string())];
        assert_eq!(expand("$(INSTANCE_IP):15021", &env), "10.1.0.2:15021");
        assert_eq!(
            expand("$(UNKNOWN) $$(INSTANCE_IP) $", &env),
            "$(UNKNOWN) $(INSTANCE_IP) $"
        );
        assert_eq!(expand("a$(INSTANCE_IP", &env), "a$(INSTANCE_IP");
    }
}
