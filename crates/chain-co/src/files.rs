//! Writing our own files durably, the one way every writer uses: the bytes are fsynced before
//! a file takes its name, and the directory after, so that neither a crash nor a power cut
//! leaves half a file, an empty one, or a rename that did not happen.

use std::io::Write as _;
use std::path::Path;

/// Creates `path` with `mode` (never over an existing file: `AlreadyExists`), writes `bytes`
/// and fsyncs them.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates or truncates `path` with `mode`, writes `bytes` and fsyncs them.
pub(crate) fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::File::create(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` atomically: a temp file beside it (`tmp`), written and fsynced, renamed over
/// it, then the directory fsynced.
pub(crate) fn write_atomic(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    write_synced(tmp, bytes, mode)?;
    std::fs::rename(tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Makes a rename in `path`'s directory durable. Best effort: some filesystems cannot fsync a
/// directory.
pub(crate) fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Renames a damaged file of ours out of the way (`<name>.damaged-<unix time>`), so that a
/// start goes on without it and the operator can still read it. Says what happened, in words.
pub(crate) fn set_aside(path: &Path) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{stamp}"));
    let aside = std::path::PathBuf::from(aside);
    match std::fs::rename(path, &aside) {
        Ok(()) => format!("kept the damaged copy as {}", aside.display()),
        Err(r) => format!("could not set it aside ({r})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_new_files_never_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        let tmp = dir.path().join("state.json.tmp");
        write_atomic(&p, &tmp, b"one", 0o600).expect("write");
        write_atomic(&p, &tmp, b"two", 0o600).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert!(!tmp.exists());
        let e = write_new(&p, b"three", 0o600).expect_err("exists");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
    }
}
