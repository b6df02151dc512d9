//! Files that hold a secret (the API token, the bootstrap-token secret):
//! created with mode 0600 from the start, so they are never even briefly
//! readable by others, kept once written, and read with a warning when
//! someone loosened their mode.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads the secret's text, trimmed. `what` names it in the warning logged
/// when group or others may read the file.
pub fn read(path: &Path, what: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "{what} is readable by other users; it should be 0600"
        );
    }
    Ok(text.trim().to_string())
}

/// Writes `text` to a new file at `path`, mode 0600, synced. `Ok(false)`:
/// a file was already there and is kept as it is.
pub fn create_new(path: &Path, text: &str) -> io::Result<bool> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}
