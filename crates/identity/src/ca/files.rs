//! Durable, race-free creation of the CA's files.
//!
//! A file is written to a temporary name, fsynced, then *hard-linked* to its final
//! name. Unlike rename, a link never replaces an existing file, so two control planes
//! starting at once on the same directory cannot overwrite each other's root: the
//! loser finds the winner's file and uses it. A crash leaves either no file or a
//! complete one, never a torn key.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::CaError;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (mode 0700: it holds a private key) if it does not exist.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// The file's contents, or `None` if it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, CaError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The file's contents; a missing file is an error naming it.
pub(super) fn read_required(path: &Path, hint: &'static str) -> Result<String, CaError> {
    read_optional(path)?.ok_or_else(|| CaError::Missing {
        path: path.to_path_buf(),
        hint,
    })
}

/// Creates `path` with `contents` and exactly `mode`, unless it already exists.
/// Returns whether this call created it.
pub(super) fn create_new(path: &Path, contents: &str, mode: u32) -> Result<bool, CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_name(path);
    let result = write_then_link(&tmp, path, contents, mode);
    // The temporary name is never needed after this point, whatever happened.
    let _ = fs::remove_file(&tmp);
    let created = result?;
    if created {
        // Make the new directory entry itself durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(created)
}

fn write_then_link(tmp: &Path, path: &Path, contents: &str, mode: u32) -> Result<bool, CaError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io_err(tmp))?;
    // The umask may have removed bits from `mode` at creation; set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err(tmp))?;
    file.write_all(contents.as_bytes()).map_err(io_err(tmp))?;
    file.sync_all().map_err(io_err(tmp))?;
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce: u64 = rand::random();
    path.with_file_name(format!(".{name}.{}.{nonce:016x}.tmp", std::process::id()))
}

/// Warns when a private key file is readable by others than its owner.
pub(super) fn warn_if_key_exposed(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "CA private key file is accessible to group/others; expected mode 600"
            );
        }
    }
}
