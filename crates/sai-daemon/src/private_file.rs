//! Writing a secret a daemon makes for itself (a signing key): a new file
//! that only its owner can read, on disk before it is used.

use std::path::Path;

/// Create `path` (it must not exist) with mode 0600, write `bytes` and
/// fsync it. Where there are no Unix modes, the file is written plainly.
#[cfg(unix)]
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Create `path` (it must not exist) with mode 0600, write `bytes` and
/// fsync it. Where there are no Unix modes, the file is written plainly.
#[cfg(not(unix))]
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_private_file_is_mode_0600_and_never_replaces_one() {
        let dir = tempfile_dir();
        let path = dir.join("key");
        super::write_new(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = super::write_new(&path, b"other").unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sai-daemon-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
