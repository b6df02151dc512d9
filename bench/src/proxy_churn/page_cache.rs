//! The proxy binary's state in the page cache when it starts. On Linux 6.16+
//! (ext4, and other filesystems with large folios) a fault maps the whole
//! page-cache folio it lands in, and a file's folios are as large as the
//! I/O that brought it in: 4 KiB pages where the linker wrote it through a
//! mapping, up to 1 MiB where something `read` or `cp` it, 16-64 KiB where
//! the proxy's own faults read it from disk. The same binary then holds
//! 8.7, 11.4 or 9.4 MiB of its file resident (measured, docs/benchmarks.md),
//! so each run puts it in one stated state first.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PageCache {
    /// Dropped: the proxy's own faults read it from disk, as on a node that
    /// has not run it since boot.
    Cold,
    /// Dropped, then read whole: as after a copy, an image layer's
    /// extraction or anything else that reads the file.
    Read,
    /// As it is (depends on how the file was written and read before).
    Keep,
}

/// Puts `binary`'s pages in the page cache into `state`. Pages that a
/// running process maps stay cached whatever the advice.
pub fn prepare(binary: &Path, state: PageCache) -> Result<()> {
    if let PageCache::Keep = state {
        return Ok(());
    }
    let mut file = File::open(binary).with_context(|| format!("opening {}", binary.display()))?;
    // Dirty pages (a binary just linked) are not dropped: write them first.
    file.sync_data()
        .with_context(|| format!("syncing {}", binary.display()))?;
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .with_context(|| format!("dropping {} from the page cache", binary.display()))?;
    if let PageCache::Read = state {
        std::io::copy(&mut file.by_ref(), &mut std::io::sink())
            .with_context(|| format!("reading {}", binary.display()))?;
    }
    Ok(())
}
