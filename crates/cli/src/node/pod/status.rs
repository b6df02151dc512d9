//! A pod's status as a kubelet writes it: phase, addresses, conditions and
//! each container's state (running, waiting, terminated), restart count,
//! last state and resources — patched only when it changed.

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::{Runner, Running};
use crate::local::supervise::StatusBoard;
use crate::node;

impl Runner {
    pub(super) fn container_status(&self, r: &mut Running, board: &StatusBoard) -> Value {
        let now = node::now();
        let process = board.get(&self.process_name(&r.container));
        let running = r.long_running && process.as_ref().is_some_and(|s| s.running);
        let restarts = if r.long_running {
            process.as_ref().map_or(0, |s| s.restart_count)
        } else {
            r.restarts
        };
        let state = if r.completed {
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}})
        } else if running {
            let started = match &r.started_at {
                Some((n, at)) if *n == restarts => at.clone(),
                _ => {
                    r.started_at = Some((restarts, now.clone()));
                    now
                }
            };
            json!({"running": {"startedAt": started}})
        } else if process.as_ref().is_some_and(|s| s.backing_off) {
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": "the process exited; restarting with backoff"}})
        } else {
            let (reason, message) = r
                .waiting
                .clone()
                .unwrap_or_else(|| ("PodInitializing".into(), String::new()));
            json!({"waiting": {"reason": reason, "message": message}})
        };
        // How its previous run ended, as a kubelet reports it after a restart.
        let last_state = match process.as_ref().and_then(|s| s.last_exit) {
            Some(exit) => json!({"terminated": {
                "exitCode": exit.code,
                "reason": if exit.code == 0 { "Completed" } else { "Error" },
                "startedAt": node::rfc3339(exit.started),
                "finishedAt": node::rfc3339(exit.finished),
            }}),
            None => json!({}),
        };
        // What the container was given, as a kubelet reports it (requests
        // and limits as asked: trellis node does not enforce them).
        let resources = r.container.resources.clone().unwrap_or_default();
        json!({
            "name": r.container.name,
            "image": r.container.image.clone().unwrap_or_default(),
            "imageID": "",
            "ready": r.ready(running),
            "started": r.completed || r.started(running),
            "restartCount": restarts,
            "state": state,
            "lastState": last_state,
            "allocatedResources": resources.requests.clone().unwrap_or_default(),
            "resources": {
                "requests": resources.requests.unwrap_or_default(),
                "limits": resources.limits.unwrap_or_default(),
            },
        })
    }

    fn condition(&mut self, kind: &'static str, ok: bool) -> Value {
        let entry = self
            .conditions
            .entry(kind)
            .or_insert_with(|| (ok, node::now()));
        if entry.0 != ok {
            *entry = (ok, node::now());
        }
        let status = if ok { "True" } else { "False" };
        json!({"type": kind, "status": status, "lastTransitionTime": entry.1})
    }

    /// Writes the pod's status if it changed.
    pub(super) async fn write(
        &mut self,
        inits: &mut [Running],
        apps: &mut [Running],
        board: &StatusBoard,
        started: bool,
    ) {
        let init_statuses: Vec<Value> = inits
            .iter_mut()
            .map(|r| self.container_status(r, board))
            .collect();
        let statuses: Vec<Value> = apps
            .iter_mut()
            .map(|r| self.container_status(r, board))
            .collect();
        let ready_of = |v: &Value| v["ready"] == true;
        let initialized = started;
        let containers_ready = started
            && statuses.iter().all(ready_of)
            && init_statuses
                .iter()
                .zip(inits.iter())
                .filter(|(_, r)| r.long_running)
                .all(|(v, _)| ready_of(v));
        let ip = self.slot.ip.to_string();
        let host = self.node.ip.to_string();
        let conditions = vec![
            self.condition("PodReadyToStartContainers", !self.ns.is_empty()),
            self.condition("Initialized", initialized),
            self.condition("ContainersReady", containers_ready),
            self.condition("Ready", containers_ready),
            self.condition("PodScheduled", true),
        ];
        let phase = if started { "Running" } else { "Pending" };
        let status = json!({
            "phase": phase,
            "hostIP": host,
            "hostIPs": [{"ip": host}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": self.started_at,
            "conditions": conditions,
            "initContainerStatuses": init_statuses,
            "containerStatuses": statuses,
        });
        self.patch(status).await;
    }

    pub(super) async fn failed(&mut self, message: &str) {
        let status = json!({"phase": "Failed", "reason": "TrellisNode", "message": message});
        self.patch(status).await;
    }

    pub(super) async fn patch(&mut self, status: Value) {
        if self.last_written.as_ref() == Some(&status) {
            return;
        }
        match self
            .api
            .patch_status(
                &self.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(_) => self.last_written = Some(status),
            Err(e) => tracing::warn!(pod = %self.id, error = %e, "cannot write the pod's status"),
        }
    }
}
