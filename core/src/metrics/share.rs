//! Sharing snapshots between processes (PHP-FPM workers) through a directory: each process
//! writes its snapshot to `<dir>/ck-<pid>.json` (atomically: a temporary file renamed), and
//! one scrape endpoint adds up the files written within the last `max_age`; older files
//! (workers that exited) are removed. A directory on tmpfs (`/dev/shm/...`) keeps this in
//! memory.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::MetricsSnapshot;
use crate::error::{Error, Result};

fn io(what: &str, dir: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("metrics directory {}: {what}: {e}", dir.display()))
}

/// Writes `snapshot` as this process's file in `dir` (created if missing, mode 0700).
/// Fails with `invalid_argument` (field `dir`) on an empty path, `unavailable` on an I/O error.
pub fn publish(dir: &Path, snapshot: &MetricsSnapshot) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid("dir", "must not be empty"));
    }
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let pid = std::process::id();
    let tmp = dir.join(format!(".ck-{pid}.tmp"));
    let dst = dir.join(format!("ck-{pid}.json"));
    let body = serde_json::to_vec(snapshot)
        .map_err(|e| Error::Internal(format!("metrics snapshot: {e}")))?;
    std::fs::write(&tmp, body).map_err(|e| io("write", dir, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| io("rename", dir, e))?;
    Ok(())
}

/// Adds up the snapshots in `dir` written within `max_age`, plus `own` (this process's,
/// which replaces its own file if there is one). Files older than `max_age` are removed;
/// unreadable files are skipped. Fails like [`publish`] when `dir` cannot be read.
pub fn aggregate(
    dir: &Path,
    max_age: Duration,
    own: Option<&MetricsSnapshot>,
) -> Result<MetricsSnapshot> {
    let mut total = MetricsSnapshot::default();
    let own_name = format!("ck-{}.json", std::process::id());
    if let Some(o) = own {
        total.merge(o);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(total),
        Err(e) => return Err(io("read", dir, e)),
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("ck-") && name.ends_with(".json")) {
            continue;
        }
        if own.is_some() && name == own_name {
            continue;
        }
        let path = entry.path();
        let fresh = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() <= max_age)
            .unwrap_or(false);
        if !fresh {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if let Ok(s) = serde_json::from_slice::<MetricsSnapshot>(&bytes) {
            total.merge(&s);
        }
    }
    Ok(total)
}
