//! One mesh per loopback block and per state directory: `up` holds an
//! exclusive advisory lock (flock) on a per-block file and on its state
//! directory for as long as it runs, so a second `up` on either refuses at
//! once, before touching anything. The kernel drops the locks when the
//! process ends however it ends, so a crash never leaves a stale lock. The
//! holder writes who it is into the file, for the refusal message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

/// Held for the mesh's life; released when dropped or when the process ends.
pub struct MeshLock {
    _block: Flock<File>,
    _state: Option<Flock<File>>,
}

/// The per-block lock file: machine-wide, as the loopback block is.
pub fn block_lock_path(block: u8) -> PathBuf {
    std::env::temp_dir().join(format!("trellis-block-{block}.lock"))
}

const STATE_LOCK_FILE: &str = "up.lock";

/// Takes the block's lock, or says who holds it.
pub fn lock_block(block: u8) -> Result<MeshLock> {
    let path = block_lock_path(block);
    let lock = match take(&path)? {
        Ok(lock) => lock,
        Err(holder) => bail!(
            "refusing to start: loopback block 127.{block}.0.0/16 is held by a running `trellis up` \
             ({holder}). Stop that mesh (Ctrl-C in its terminal, or kill its pid) or choose another \
             `--block N`; nothing was changed"
        ),
    };
    Ok(MeshLock {
        _block: lock,
        _state: None,
    })
}

impl MeshLock {
    /// Also takes the state directory's lock (creating the directory).
    pub fn lock_state(&mut self, state: &Path) -> Result<()> {
        std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
        let lock = match take(&state.join(STATE_LOCK_FILE))? {
            Ok(lock) => lock,
            Err(holder) => bail!(
                "refusing to start: state directory {} is held by a running `trellis up` ({holder}). \
                 Stop that mesh or choose another --state-dir; nothing was changed",
                state.display()
            ),
        };
        self._state = Some(lock);
        Ok(())
    }

    /// Records who holds the locks: shown to whoever is refused.
    pub fn describe(&mut self, holder: &str) {
        for lock in [Some(&mut self._block), self._state.as_mut()]
            .into_iter()
            .flatten()
        {
            let file: &mut File = lock;
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = file.write_all(holder.as_bytes());
            let _ = file.sync_data();
        }
    }
}

/// The lock, or (inner `Err`) the description its holder wrote.
fn take(path: &Path) -> Result<Result<Flock<File>, String>> {
    // Opened without truncation: the holder's description stays readable.
    let file = match File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(f) => f,
        // Another user's lock file: a shared-lock-free read-only descriptor can still flock.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            File::open(path).with_context(|| format!("opening {}", path.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Ok(lock)),
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            Ok(Err(if holder.is_empty() {
                format!("lock {}", path.display())
            } else {
                holder.to_string()
            }))
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}
