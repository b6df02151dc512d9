//! The CA that signs workload certificates, replaceable while trellisd
//! runs (as istiod's since 1.22): when the plug-in material changes — the
//! `cacerts` Secret on a cluster ([`crate::ca_secret::follow_plugged`]),
//! the plug-in files in `--ca-dir` ([`follow_files`]) — the new CA signs
//! every certificate from then on, and the root bundle it publishes keeps
//! the old roots beside the new ones while they are valid, so workloads
//! whose certificates chain to the old root are trusted until they rotate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use identity::{CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, Ca, CaError, ROOT_CERT_FILE};
use tokio::sync::watch;

/// How often the plug-in files are read for changes.
const FILE_POLL: Duration = Duration::from_secs(5);

pub struct LiveCa {
    current: ArcSwap<Ca>,
    /// The root bundle (concatenated PEM), for those who publish it.
    roots: watch::Sender<String>,
}

impl LiveCa {
    pub fn new(ca: Ca) -> Arc<LiveCa> {
        let (roots, _) = watch::channel(ca.roots().concat());
        Arc::new(LiveCa {
            current: ArcSwap::from_pointee(ca),
            roots,
        })
    }

    /// The CA now.
    pub fn current(&self) -> Arc<Ca> {
        self.current.load_full()
    }

    /// The root bundle now, and after each replacement.
    pub fn roots(&self) -> watch::Receiver<String> {
        self.roots.subscribe()
    }

    /// Signs with `next` from now on; its bundle keeps the current roots
    /// that have not expired.
    pub fn replace(&self, next: Ca) -> Result<(), CaError> {
        let next = next.with_previous_roots(&self.current.load())?;
        let roots = next.roots();
        tracing::info!(
            roots = roots.len(),
            "CA reloaded: new certificates are signed by the new CA"
        );
        self.current.store(Arc::new(next));
        self.roots.send_replace(roots.concat());
        Ok(())
    }
}

/// Reloads `live` from the plug-in files in `dir` whenever they change,
/// until `live` is dropped. Files that do not make a CA (half-copied, a
/// key that does not match) are reported and the running CA is kept.
pub async fn follow_files(live: std::sync::Weak<LiveCa>, dir: PathBuf) {
    let mut seen = read_plugged(&dir);
    loop {
        tokio::time::sleep(FILE_POLL).await;
        if live.strong_count() == 0 {
            return;
        }
        let now = read_plugged(&dir);
        if now == seen {
            continue;
        }
        seen = now;
        let Some(live) = live.upgrade() else { return };
        match Ca::from_cacerts(&dir).and_then(|ca| live.replace(ca)) {
            Ok(()) => tracing::info!(dir = %dir.display(), "plug-in CA files changed: reloaded"),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "plug-in CA files changed but do not make a CA; still signing with the previous one");
            }
        }
    }
}

/// The plug-in files' contents (a missing one as `None`).
fn read_plugged(dir: &Path) -> Vec<Option<Vec<u8>>> {
    [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).ok())
        .collect()
}
