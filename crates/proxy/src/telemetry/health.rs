//! The proxy's own health, as series beside the standard metrics: config
//! updates accepted and rejected (NACKs) per type and how old the accepted
//! config is. Connections and certificate expiry are read where they live
//! when scraped (see `admin::stats`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Per resource type (in [`wire::types::ALL`]'s order).
#[derive(Debug, Default)]
pub struct ConfigUpdates {
    accepted: [AtomicU64; wire::types::ALL.len()],
    rejected: [AtomicU64; wire::types::ALL.len()],
    /// When the type was last accepted, in Unix seconds (0: never).
    accepted_at: [AtomicU64; wire::types::ALL.len()],
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ConfigUpdates {
    pub fn record(&self, type_url: &str, accepted: bool) {
        let Some(i) = wire::types::ALL.iter().position(|t| *t == type_url) else {
            return;
        };
        if accepted {
            self.accepted[i].fetch_add(1, Ordering::Relaxed);
            self.accepted_at[i].store(now_unix(), Ordering::Relaxed);
        } else {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `versions`: the accepted version of each type, by type URL.
    pub fn encode(&self, out: &mut String, versions: &dyn Fn(&str) -> Option<String>) {
        let now = now_unix();
        let _ = writeln!(
            out,
            "# HELP trellis_proxy_config_updates_total Config updates from the control plane, by type and result (rejected: NACKed, the previous config stays).\n# TYPE trellis_proxy_config_updates_total counter"
        );
        for (i, t) in wire::types::ALL.iter().enumerate() {
            let short = wire::types::short_name(t);
            for (result, v) in [
                ("accepted", &self.accepted[i]),
                ("rejected", &self.rejected[i]),
            ] {
                let _ = writeln!(
                    out,
                    "trellis_proxy_config_updates_total{{type=\"{short}\",result=\"{result}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP trellis_proxy_config_age_seconds Seconds since the type's config was last accepted.\n# TYPE trellis_proxy_config_age_seconds gauge"
        );
        for (i, t) in wire::types::ALL.iter().enumerate() {
            let at = self.accepted_at[i].load(Ordering::Relaxed);
            if at > 0 {
                let _ = writeln!(
                    out,
                    "trellis_proxy_config_age_seconds{{type=\"{}\"}} {}",
                    wire::types::short_name(t),
                    now.saturating_sub(at)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP trellis_proxy_config_version_info The accepted config version of each type.\n# TYPE trellis_proxy_config_version_info gauge"
        );
        for t in wire::types::ALL {
            if let Some(v) = versions(t) {
                let v: String = v
                    .chars()
                    .filter(|c| !matches!(c, '"' | '\\' | '\n'))
                    .collect();
                let _ = writeln!(
                    out,
                    "trellis_proxy_config_version_info{{type=\"{}\",version=\"{v}\"}} 1",
                    wire::types::short_name(t)
                );
            }
        }
    }
}
