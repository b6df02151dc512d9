//! The benchmark's mesh as files, and its timed changes as files too, so
//! that trellisd and istiod (bench/control-plane-vs-istiod.sh) are fed
//! exactly the same config:
//!
//! - `mesh/`: the services, one VirtualService and DestinationRule (with a
//!   subset) per ten services, one AuthorizationPolicy per namespace, and
//!   with `sidecars` a Sidecar per namespace that limits its proxies' egress
//!   to their own namespace (and istio-system), as Istio users scope theirs;
//! - `changes/endpoints/<n>/`: the files of the n-th endpoint change, each
//!   replacing the file of the same name in `mesh/` (one service gains an
//!   endpoint);
//! - `changes/vs/<n>/`: likewise, the n-th VirtualService change (a route
//!   timeout every proxy's routes carry).
//!
//! trellisd is given the changes through its API, istiod by copying the files
//! into its `--configDir`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

/// How the services and their endpoints are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// Kubernetes Services and Pods, one file per namespace (trellisd only:
    /// istiod reads Pods from an API server, not from files).
    Pods,
    /// One ServiceEntry per service (MESH_INTERNAL, STATIC, its endpoints
    /// inline), a file per service: what istiod's file config source reads.
    ServiceEntries,
}

pub struct Shape {
    pub format: Format,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub namespaces: usize,
    pub endpoint_changes: usize,
    pub vs_changes: usize,
    pub sidecars: bool,
}

impl Shape {
    /// The namespace of the service the n-th endpoint change is to.
    pub fn endpoint_change_namespace(&self, n: usize) -> usize {
        self.changed_service(n) % self.namespaces
    }

    /// The namespace of the VirtualService the VirtualService changes are to.
    pub fn vs_change_namespace(&self) -> usize {
        1 % self.namespaces
    }

    /// Changes spread over the services (7919 is prime).
    fn changed_service(&self, n: usize) -> usize {
        (n * 7919) % self.services
    }
}

/// Writes `dir/mesh` and `dir/changes`.
pub fn write(dir: &Path, shape: &Shape) -> Result<()> {
    let mesh = dir.join("mesh");
    std::fs::create_dir_all(&mesh)?;
    match shape.format {
        Format::Pods => write_pods(&mesh, shape)?,
        Format::ServiceEntries => {
            for s in 0..shape.services {
                let text = service_entry_file(shape, s, shape.endpoints_per_service);
                std::fs::write(mesh.join(format!("svc{s}.yaml")), text)?;
            }
            for ns in 0..shape.namespaces {
                std::fs::write(
                    mesh.join(format!("ns{ns}-policy.yaml")),
                    authorization_policy(ns),
                )?;
            }
        }
    }
    if shape.sidecars {
        for ns in 0..shape.namespaces {
            std::fs::write(mesh.join(format!("ns{ns}-sidecar.yaml")), sidecar(ns))?;
        }
    }
    for c in 0..shape.endpoint_changes {
        let change = dir.join(format!("changes/endpoints/{c}"));
        std::fs::create_dir_all(&change)?;
        let s = shape.changed_service(c);
        let (name, text) = match shape.format {
            Format::Pods => {
                let e = shape.endpoints_per_service + c;
                (
                    format!("{}.yaml", pod_name(s, e)),
                    pod_yaml(s, e, s % shape.namespaces),
                )
            }
            Format::ServiceEntries => (
                format!("svc{s}.yaml"),
                service_entry_file(shape, s, shape.endpoints_per_service + 1 + c),
            ),
        };
        std::fs::write(change.join(name), text)?;
    }
    for c in 0..shape.vs_changes {
        let change = dir.join(format!("changes/vs/{c}"));
        std::fs::create_dir_all(&change)?;
        let host = host(shape, 1);
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc1-timeout, namespace: ns{}}}\nspec:\n  hosts: [{host}]\n  http: [{{timeout: {}s, route: [{{destination: {{host: {host}}}}}]}}]\n",
            shape.vs_change_namespace(),
            c + 1
        );
        std::fs::write(change.join("svc1-timeout.yaml"), text)?;
    }
    Ok(())
}

/// The YAML documents of the n-th change of `kind` (`endpoints` or `vs`).
pub fn change(dir: &Path, kind: &str, n: usize) -> Result<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join(format!("changes/{kind}/{n}")))?
        .collect::<std::io::Result<_>>()?;
    files.sort_by_key(|f| f.file_name());
    let mut out = String::new();
    for f in files {
        writeln!(out, "{}\n---", std::fs::read_to_string(f.path())?)?;
    }
    Ok(out)
}

/// How a service is named in routes: its short name where the registry
/// knows it from a Kubernetes Service in the namespace, else its host.
fn host(shape: &Shape, s: usize) -> String {
    match shape.format {
        Format::Pods => format!("svc{s}"),
        Format::ServiceEntries => format!("svc{s}.ns{}.svc.cluster.local", s % shape.namespaces),
    }
}

/// A pod of Deployment `svc{svc}-v1`, named as Kubernetes names them: its
/// ReplicaSet's name and a suffix.
pub fn pod_name(svc: usize, ep: usize) -> String {
    format!("{}-{ep:05}", replica_set(svc))
}

/// The ReplicaSet of Deployment `svc{svc}-v1` (its template hash fixed).
fn replica_set(svc: usize) -> String {
    format!("svc{svc}-v1-7f9c8d")
}

fn endpoint_ip(s: usize, e: usize) -> String {
    format!("10.{}.{}.{}", (s / 250) % 250, s % 250, e % 250 + 1)
}

/// Service `s` with `endpoints` endpoints, and its VirtualService and
/// DestinationRule if it has them.
fn service_entry_file(shape: &Shape, s: usize, endpoints: usize) -> String {
    let ns = s % shape.namespaces;
    let host = host(shape, s);
    let mut f = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{name: http, number: 8080, protocol: HTTP}}]\n  endpoints:\n"
    );
    for e in 0..endpoints {
        let _ = writeln!(
            f,
            "  - {{address: {}, labels: {{app: svc{s}, version: v1}}}}",
            endpoint_ip(s, e)
        );
    }
    let routing = routing(s, ns, &host);
    if !routing.is_empty() {
        f.push_str("---\n");
        f.push_str(&routing);
    }
    f
}

/// One service in ten has a VirtualService and a DestinationRule with a subset.
fn routing(s: usize, ns: usize, host: &str) -> String {
    if !s.is_multiple_of(10) {
        return String::new();
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  hosts: [{host}]\n  http: [{{retries: {{attempts: 3}}, route: [{{destination: {{host: {host}, subset: v1}}}}]}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  host: {host}\n  subsets: [{{name: v1, labels: {{version: v1}}}}]\n"
    )
}

/// The namespace's proxies see only its own services and istio-system's.
fn sidecar(ns: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: ns{ns}}}\nspec:\n  egress: [{{hosts: [\"./*\", \"istio-system/*\"]}}]\n"
    )
}

/// Each namespace admits calls from inside the mesh only.
fn authorization_policy(ns: usize) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: mesh-only, namespace: ns{ns}}}\nspec:\n  rules: [{{from: [{{source: {{principals: [\"cluster.local/*\"]}}}}]}}]\n"
    )
}

/// Services and their pods, one file per namespace.
fn write_pods(mesh: &Path, shape: &Shape) -> Result<()> {
    let mut files: Vec<String> = vec![String::new(); shape.namespaces];
    for s in 0..shape.services {
        let ns = s % shape.namespaces;
        let f = &mut files[ns];
        writeln!(
            f,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  selector: {{app: svc{s}}}\n  ports: [{{name: http, port: 8080}}]\n---"
        )?;
        for e in 0..shape.endpoints_per_service {
            writeln!(f, "{}---", pod_yaml(s, e, ns))?;
        }
        let routing = routing(s, ns, &host(shape, s));
        if !routing.is_empty() {
            writeln!(f, "{routing}---")?;
        }
    }
    for (ns, f) in files.iter_mut().enumerate() {
        writeln!(f, "{}---", authorization_policy(ns))?;
    }
    for (ns, text) in files.iter().enumerate() {
        std::fs::write(mesh.join(format!("ns{ns}.yaml")), text)?;
    }
    Ok(())
}

pub fn pod_yaml(s: usize, e: usize, ns: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: ns{ns}, labels: {{app: svc{s}, version: v1}}, annotations: {{sidecar.istio.io/status: \"{{}}\"}}, ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {}, uid: rs-{s}, controller: true}}]}}\nspec:\n  containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}]}}]\nstatus: {{podIP: {}}}\n",
        pod_name(s, e),
        replica_set(s),
        endpoint_ip(s, e)
    )
}
