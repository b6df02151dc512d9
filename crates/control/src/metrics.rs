//! The control plane's own metrics, served on the monitoring port's
//! `/metrics` with istiod's names, so that Istio's control-plane dashboard
//! and alerts read them unchanged: pushes and rejects per xDS type, proxies
//! connected, how long a config change takes to reach a proxy, and config
//! refused by validation; and the process series (process.rs).

mod process;

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// istiod's buckets for `pilot_proxy_convergence_time` (seconds).
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// Istio's xDS type label values, in `wire::types::ALL`'s order.
fn xds_type(type_url: &str) -> Option<usize> {
    wire::types::ALL.iter().position(|t| *t == type_url)
}

fn xds_label(type_url: &str) -> &'static str {
    match wire::types::short_name(type_url) {
        "clusters" => "cds",
        "endpoints" => "eds",
        "listeners" => "lds",
        "routes" => "rds",
        _ => "unknown",
    }
}

#[derive(Default)]
pub struct Metrics {
    pushes: [AtomicU64; wire::types::ALL.len()],
    rejects: [AtomicU64; wire::types::ALL.len()],
    convergence: Mutex<Histogram>,
    validation_passed: AtomicU64,
    validation_failed: AtomicU64,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; CONVERGENCE_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// A response of `type_url` was sent to a proxy.
    pub fn pushed(&self, type_url: &str) {
        if let Some(i) = xds_type(type_url) {
            self.pushes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A proxy NACKed a response of `type_url`.
    pub fn rejected(&self, type_url: &str) {
        if let Some(i) = xds_type(type_url) {
            self.rejects[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A config change reached a proxy `delay` after it was made.
    pub fn converged(&self, delay: Duration) {
        let s = delay.as_secs_f64();
        let mut h = self.convergence.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = CONVERGENCE_BUCKETS.iter().position(|b| s <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += s;
    }

    /// Resources submitted through the API passed or failed validation.
    pub fn validated(&self, passed: bool) {
        let c = if passed {
            &self.validation_passed
        } else {
            &self.validation_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition (Prometheus format 0.0.4). `connected`: proxies
    /// with a discovery stream open now.
    pub fn encode(&self, connected: usize) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, values: &[AtomicU64]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (t, v) in wire::types::ALL.iter().zip(values) {
                let _ = writeln!(
                    out,
                    "{name}{{type=\"{}\"}} {}",
                    xds_label(t),
                    v.load(Ordering::Relaxed)
                );
            }
        };
        counter(
            &mut out,
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds.",
            &self.pushes,
        );
        counter(
            &mut out,
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy.",
            &self.rejects,
        );
        let _ = writeln!(
            out,
            "# HELP pilot_xds Number of endpoints connected to this pilot using XDS.\n# TYPE pilot_xds gauge\npilot_xds{{version=\"{}\"}} {connected}",
            env!("CARGO_PKG_VERSION")
        );
        let h = self.convergence.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP pilot_proxy_convergence_time Delay in seconds between config change and a proxy receiving all required configuration.\n# TYPE pilot_proxy_convergence_time histogram"
        );
        let mut cumulative = 0;
        for (le, n) in CONVERGENCE_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "pilot_proxy_convergence_time_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "pilot_proxy_convergence_time_bucket{{le=\"+Inf\"}} {}\npilot_proxy_convergence_time_sum {}\npilot_proxy_convergence_time_count {}",
            h.count, h.sum, h.count
        );
        drop(h);
        for (name, help, v) in [
            (
                "galley_validation_passed",
                "Resource is valid.",
                &self.validation_passed,
            ),
            (
                "galley_validation_failed",
                "Resource validation failed.",
                &self.validation_failed,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        // Istio's "Istio Components by Version" panels (mesh, performance and
        // control-plane dashboards) read this; every istiod reports it.
        let _ = writeln!(
            out,
            "# HELP istio_build Istio component build info\n# TYPE istio_build gauge\nistio_build{{component=\"pilot\",tag=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        process::encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istiod_names_and_values() {
        let m = Metrics::default();
        m.pushed(wire::types::CLUSTER);
        m.pushed(wire::types::CLUSTER);
        m.rejected(wire::types::ROUTE_CONFIG);
        m.converged(Duration::from_millis(300));
        m.validated(false);
        let text = m.encode(3);
        for line in [
            "pilot_xds_pushes{type=\"cds\"} 2",
            "pilot_xds_pushes{type=\"eds\"} 0",
            "pilot_total_xds_rejects{type=\"rds\"} 1",
            "pilot_proxy_convergence_time_bucket{le=\"0.1\"} 0",
            "pilot_proxy_convergence_time_bucket{le=\"0.5\"} 1",
            "pilot_proxy_convergence_time_count 1",
            "galley_validation_failed 1",
            concat!(
                "istio_build{component=\"pilot\",tag=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
            "# TYPE pilot_proxy_convergence_time histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("pilot_xds{version="), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("pilot_xds{") && l.ends_with(" 3"))
        );
    }
}
