//! Server-side files an API request may import (`/api/create` and `/api/pull` with a path):
//! only regular files inside a `serve.import_dirs` entry, after every symlink is resolved.
//!
//! A path that does not exist and a path that is not allowed get the same answer
//! ([`NotImportable`]), so the API cannot be used to probe the file system. The file is opened
//! from the canonical path that was checked, without following a final symlink and without
//! blocking on a FIFO, and on Linux the opened file's real path (`/proc/self/fd`) is checked
//! again, so swapping a directory for a symlink between check and open gains nothing. The
//! caller reads (hashes, copies) only from the returned handle, never from the path again.
//! Files given on the command line (`--model`, `[serve.model]`) are not subject to this.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The one answer for a path that is missing, not a regular file, or outside the import
/// directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotImportable;

/// An importable file, open.
#[derive(Debug)]
pub struct Importable {
    pub file: File,
    /// The canonical path that was checked (symlinks resolved).
    pub path: PathBuf,
    pub len: u64,
}

/// `~/…` → `$HOME/…`; anything else as given (relative paths are relative to the server's
/// working directory).
pub fn expand_home(text: &str) -> PathBuf {
    match (text.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(text),
    }
}

/// Canonical forms of the import directories that exist now.
fn canonical_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect()
}

fn inside(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// The path the kernel has for an open file (Linux); `None` where that cannot be asked.
#[cfg(target_os = "linux")]
fn opened_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

#[cfg(not(target_os = "linux"))]
fn opened_path(_file: &File) -> Option<PathBuf> {
    None
}

/// Opens `text` (a path as a client sent it) when it names a regular file inside one of
/// `dirs`; blocking (file system calls).
pub fn open_importable(text: &str, dirs: &[PathBuf]) -> Result<Importable, NotImportable> {
    let dirs = canonical_dirs(dirs);
    if dirs.is_empty() || text.is_empty() {
        return Err(NotImportable);
    }
    let path = std::fs::canonicalize(expand_home(text)).map_err(|_| NotImportable)?;
    if !inside(&path, &dirs) {
        return Err(NotImportable);
    }
    let file = open_no_follow(&path).map_err(|_| NotImportable)?;
    let meta = file.metadata().map_err(|_| NotImportable)?;
    if !meta.is_file() {
        return Err(NotImportable);
    }
    if let Some(real) = opened_path(&file) {
        if !inside(&real, &dirs) {
            return Err(NotImportable);
        }
    }
    Ok(Importable {
        file,
        path,
        len: meta.len(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_regular_files_inside_the_import_dirs_open() {
        let root = std::env::temp_dir().join(format!("rawrxd-imports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let allowed = root.join("allowed");
        let outside = root.join("outside");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(allowed.join("sub/m.gguf"), b"GGUF").unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        let dirs = vec![allowed.clone()];
        let show = |p: PathBuf| p.display().to_string();

        let ok = open_importable(&show(allowed.join("sub/../sub/m.gguf")), &dirs).unwrap();
        assert_eq!(
            ok.path,
            std::fs::canonicalize(allowed.join("sub/m.gguf")).unwrap()
        );
        assert_eq!(ok.len, 4);
        for refused in [
            show(outside.join("secret")),
            show(allowed.join("../outside/secret")),
            show(allowed.join("missing.gguf")),
            show(allowed.join("sub")),
            "/etc/passwd".to_string(),
            "~/.bashrc".to_string(),
            String::new(),
        ] {
            assert_eq!(
                open_importable(&refused, &dirs).unwrap_err(),
                NotImportable,
                "{refused}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outside.join("secret"), allowed.join("escape")).unwrap();
            std::os::unix::fs::symlink(&outside, allowed.join("dir-escape")).unwrap();
            std::os::unix::fs::symlink(allowed.join("sub/m.gguf"), allowed.join("alias")).unwrap();
            assert!(open_importable(&show(allowed.join("escape")), &dirs).is_err());
            assert!(open_importable(&show(allowed.join("dir-escape/secret")), &dirs).is_err());
            let alias = open_importable(&show(allowed.join("alias")), &dirs).unwrap();
            assert!(alias.path.ends_with("sub/m.gguf"));
        }
        assert!(open_importable(&show(allowed.join("sub/m.gguf")), &[]).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
