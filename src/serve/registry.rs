//! Named models in the models directory: Ollama-style `name:tag` manifests pointing at
//! content-addressed GGUF blobs, with the model's own template, system prompt and parameters.
//!
//! Layout under the models directory:
//!
//! ```text
//! *.gguf                         plain files, served as `<stem>:latest`
//! blobs/sha256-<hex>             model data by content (pulled, created, copied, uploaded)
//! blobs/partial-<key>            a download in progress, resumed by the next pull of its URL
//! blobs/partial-<key>.json       … its URL and validators (ETag, Last-Modified, size)
//! blobs/.import-<pid>-<n>        a file being copied in (create/pull from a path, copy)
//! blobs/.upload-<hex>            a blob being uploaded
//! manifests/<name>/<tag>.json    a named model: its blob and defaults
//! .<file>.tmp-<pid>              an atomic write in progress (next to its file)
//! ```
//!
//! Every manifest and blob appears by an atomic rename, so a crash never leaves a half-written
//! one that the server would list; what a crash does leave (the temporary names above) is
//! swept at the next start once it is a day old ([`sweep_abandoned`]). Imported files are
//! always copied, never hard-linked, so nobody can change a blob under its digest.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The tag a name without one gets.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed `name[:tag]` (`namespace/name:tag` allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName {
    pub name: String,
    pub tag: String,
}

fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 128
        && !part.starts_with('.')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl ModelName {
    /// Parses and validates a model name; the error says what is allowed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, tag) = match text.rsplit_once(':') {
            Some((name, tag)) => (name, tag),
            None => (text, DEFAULT_TAG),
        };
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) || !valid_part(tag) {
            return Err(format!(
                "invalid model name {text:?}: use name[:tag] (or namespace/name[:tag]) made of \
                 letters, digits, '-', '_' and '.'"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// `name:tag`, the key every model is known by.
    pub fn tagged(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// A name made from a file or URL stem (`Gemma 3.gguf` → `Gemma-3:latest`).
    pub fn from_stem(stem: &str) -> Result<Self, String> {
        let cleaned: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        Self::parse(cleaned.trim_start_matches('.'))
    }
}

/// The `name:tag` key of any request name (`x` → `x:latest`); unparsable names are kept as
/// given, so they simply match nothing.
pub fn key(text: &str) -> String {
    ModelName::parse(text).map_or_else(|_| text.to_string(), |n| n.tagged())
}

/// A named model's manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The GGUF file: relative to the models directory (`blobs/sha256-…`) or absolute.
    pub gguf: PathBuf,
    /// Hex sha256 of the GGUF file, when known (always for blobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A prompt template (Ollama `{{ .System }}`/`{{ .Prompt }}` form) used instead of the
    /// GGUF's chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The system prompt used when a request has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Default `options` (a request's own options win, key by key).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Where the model came from (URL or path), for `/api/show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Manifest {
    /// The GGUF file's full path.
    pub fn gguf_path(&self, dir: &Path) -> PathBuf {
        if self.gguf.is_absolute() {
            self.gguf.clone()
        } else {
            dir.join(&self.gguf)
        }
    }
}

pub fn blobs_dir(dir: &Path) -> PathBuf {
    dir.join("blobs")
}

pub fn blob_path(dir: &Path, hex: &str) -> PathBuf {
    blobs_dir(dir).join(format!("sha256-{hex}"))
}

fn manifests_dir(dir: &Path) -> PathBuf {
    dir.join("manifests")
}

pub fn manifest_path(dir: &Path, name: &ModelName) -> PathBuf {
    let mut path = manifests_dir(dir);
    for part in name.name.split('/') {
        path.push(part);
    }
    path.join(format!("{}.json", name.tag))
}

/// Every readable manifest; unreadable ones are logged and skipped.
pub fn read_manifests(dir: &Path) -> Vec<(ModelName, Manifest, std::time::SystemTime)> {
    let mut out = Vec::new();
    let root = manifests_dir(dir);
    let mut stack = vec![(root.clone(), Vec::<String>::new())];
    while let Some((folder, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.is_dir() {
                if prefix.len() < 2 {
                    let mut next = prefix.clone();
                    next.push(file_name.to_string());
                    stack.push((path, next));
                }
                continue;
            }
            let Some(tag) = file_name.strip_suffix(".json") else {
                continue;
            };
            if prefix.is_empty() {
                continue;
            }
            let Ok(name) = ModelName::parse(&format!("{}:{tag}", prefix.join("/"))) else {
                continue;
            };
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()))
            {
                Ok(manifest) => {
                    let modified = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                    out.push((name, manifest, modified));
                }
                Err(e) => tracing::warn!("skipping manifest {}: {e}", path.display()),
            }
        }
    }
    out
}

/// Writes `path` atomically (a temporary file in the same folder, synced, then renamed).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let tmp = folder.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut file = File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

pub fn write_manifest(dir: &Path, name: &ModelName, manifest: &Manifest) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    write_atomic(&manifest_path(dir, name), &data)
}

/// Removes `name`'s manifest, and its blob when no other manifest uses it. False when there
/// was no manifest.
pub fn remove_manifest(dir: &Path, name: &ModelName) -> std::io::Result<bool> {
    let path = manifest_path(dir, name);
    let manifest: Option<Manifest> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some(manifest) = manifest {
        let blob = manifest.gguf_path(dir);
        let in_blobs = blob.parent() == Some(blobs_dir(dir).as_path());
        let used = read_manifests(dir)
            .iter()
            .any(|(_, m, _)| m.gguf_path(dir) == blob);
        if in_blobs && !used {
            std::fs::remove_file(&blob).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        }
    }
    Ok(true)
}

/// `sha256:<hex>`, `sha256-<hex>` or bare hex → lowercase hex.
pub fn parse_digest(text: &str) -> Result<String, String> {
    let hex = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("sha256-"))
        .unwrap_or(text);
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!(
            "invalid digest {text:?}: expected sha256:<64 hex digits>"
        ))
    }
}

/// Lowercase hex of a finished hash.
pub fn hex(hasher: Sha256) -> String {
    let digest = hasher.finalize();
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Feeds `path` into `hasher`, calling `progress(done)` every 64 MiB.
pub fn hash_into(
    path: &Path,
    hasher: &mut Sha256,
    mut progress: impl FnMut(u64),
) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        if done - reported >= 64 << 20 {
            reported = done;
            progress(done);
        }
    }
    progress(done);
    Ok(done)
}

/// Why a file could not be put into the blob store.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{0}")]
    Io(String),
}

/// A copy in the blob store under a temporary name (`blobs/.import-…`), hashed; removed when
/// dropped unless [`Staged::commit`] moved it to its blob.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    pub hex: String,
    pub len: u64,
}

impl Staged {
    /// The temporary copy (to check before committing).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the copy to `blobs/sha256-<hex>` (or drops it when that blob already exists)
    /// and returns the hex digest.
    pub fn commit(self, dir: &Path) -> std::io::Result<String> {
        let blob = blob_path(dir, &self.hex);
        if !blob.is_file() {
            std::fs::rename(&self.tmp, &blob)?;
        }
        Ok(self.hex.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the temporary name is gone (renamed) or a duplicate: either way
        // there is nothing left to keep.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Temporary names in `blobs/` that only one writer ever uses.
fn temp_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Copies `src` (an open file: the caller checked what it is) into the blob store, hashing
/// as it goes, and returns the staged copy. Always a copy, never a hard link: a link would
/// let whoever can write the source change the blob under its digest. `what` names the
/// source in errors; more than `limit` bytes (the file grew) stops the copy.
pub fn copy_in(
    dir: &Path,
    src: &mut impl Read,
    what: &str,
    limit: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<Staged, ImportError> {
    let blobs = blobs_dir(dir);
    std::fs::create_dir_all(&blobs)
        .map_err(|e| ImportError::Io(format!("cannot create {}: {e}", blobs.display())))?;
    let mut staged = Staged {
        tmp: blobs.join(temp_name("import")),
        hex: String::new(),
        len: 0,
    };
    let write_error = |e: std::io::Error| ImportError::Io(format!("cannot store {what}: {e}"));
    let mut out = File::create(&staged.tmp).map_err(write_error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut reported = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| ImportError::Io(format!("cannot read {what}: {e}")))?;
        if n == 0 {
            break;
        }
        staged.len += n as u64;
        if let Some(limit) = limit.filter(|l| staged.len > *l) {
            return Err(ImportError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(write_error)?;
        if staged.len - reported >= 64 << 20 {
            reported = staged.len;
            progress(staged.len);
        }
    }
    progress(staged.len);
    out.sync_all().map_err(write_error)?;
    staged.hex = hex(hasher);
    Ok(staged)
}

/// Files in the models directory nothing owns any more, left by a process that stopped
/// mid-way: `blobs/partial-*` downloads and their `.json` sidecars, `blobs/.import-*` and
/// `blobs/.upload-*` copies, and [`write_atomic`]'s `.<name>.tmp-<pid>` files (in `blobs/`
/// and under `manifests/`). Only those last modified more than `age` ago are removed (a pull
/// resumes a recent partial download; another server may be writing a fresh one). Returns
/// what was removed, with sizes.
pub fn sweep_abandoned(dir: &Path, age: std::time::Duration) -> Vec<(PathBuf, u64)> {
    let is_temp = |name: &str| name.starts_with('.') && name.contains(".tmp-");
    let mut candidates = Vec::new();
    if let Ok(entries) = std::fs::read_dir(blobs_dir(dir)) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("partial-")
                || name.starts_with(".import-")
                || name.starts_with(".upload-")
                || is_temp(&name)
            {
                candidates.push(entry.path());
            }
        }
    }
    let mut folders = vec![(manifests_dir(dir), 0)];
    while let Some((folder, depth)) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && depth < 2 {
                folders.push((path, depth + 1));
            } else if !is_dir && is_temp(&entry.file_name().to_string_lossy()) {
                candidates.push(path);
            }
        }
    }
    let now = std::time::SystemTime::now();
    let mut removed = Vec::new();
    for path in candidates {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|elapsed| elapsed > age);
        if old && meta.is_file() && std::fs::remove_file(&path).is_ok() {
            removed.push((path, meta.len()));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_parse_with_default_tag_and_reject_paths() {
        let n = ModelName::parse("gemma3:270m").unwrap();
        assert_eq!((n.name.as_str(), n.tag.as_str()), ("gemma3", "270m"));
        assert_eq!(ModelName::parse("x").unwrap().tagged(), "x:latest");
        assert_eq!(ModelName::parse("me/x:v1").unwrap().tagged(), "me/x:v1");
        for bad in ["", "../x", "a/b/c", ".x", "x:", "x y", "x:../y", "/x"] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ModelName::from_stem("Gemma 3 (q4)").unwrap().tagged(),
            "Gemma-3--q4-:latest"
        );
        assert_eq!(key("x"), "x:latest");
    }

    #[test]
    fn digests_parse_in_three_spellings() {
        let hex = "a".repeat(64);
        assert_eq!(parse_digest(&format!("sha256:{hex}")).unwrap(), hex);
        assert_eq!(parse_digest(&format!("sha256-{hex}")).unwrap(), hex);
        assert_eq!(parse_digest(&hex.to_uppercase()).unwrap(), hex);
        assert!(parse_digest("sha256:abc").is_err());
    }

    #[test]
    fn manifests_round_trip_and_blobs_are_collected_with_the_last_user() {
        let dir = std::env::temp_dir().join(format!("rawrxd-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.gguf");
        std::fs::write(&src, b"GGUF data").unwrap();
        let staged = copy_in(&dir, &mut File::open(&src).unwrap(), "src", None, |_| {}).unwrap();
        let tmp = staged.path().to_path_buf();
        assert!(tmp.is_file());
        let hex = staged.commit(&dir).unwrap();
        assert_eq!(hex, super::hex(Sha256::new_with_prefix(b"GGUF data")));
        assert!(blob_path(&dir, &hex).is_file() && !tmp.exists());
        // A copy, not a link: changing the source leaves the blob as it was.
        std::fs::write(&src, b"GGUF changed").unwrap();
        assert_eq!(std::fs::read(blob_path(&dir, &hex)).unwrap(), b"GGUF data");
        let dropped = copy_in(&dir, &mut &b"abc"[..], "x", None, |_| {}).unwrap();
        let tmp = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!tmp.exists(), "an uncommitted copy is removed");
        let over = copy_in(&dir, &mut &[0u8; 10][..], "ten bytes", Some(9), |_| {});
        assert_eq!(
            over.unwrap_err().to_string(),
            "ten bytes is larger than 9 bytes"
        );
        let manifest = Manifest {
            gguf: PathBuf::from(format!("blobs/sha256-{hex}")),
            sha256: Some(hex.clone()),
            system: Some("be brief".into()),
            ..Manifest::default()
        };
        let a = ModelName::parse("a").unwrap();
        let b = ModelName::parse("ns/b:v2").unwrap();
        write_manifest(&dir, &a, &manifest).unwrap();
        write_manifest(&dir, &b, &manifest).unwrap();
        let mut names: Vec<String> = read_manifests(&dir)
            .into_iter()
            .map(|(n, m, _)| {
                assert_eq!(m, manifest);
                n.tagged()
            })
            .collect();
        names.sort();
        assert_eq!(names, vec!["a:latest", "ns/b:v2"]);
        assert!(remove_manifest(&dir, &a).unwrap());
        assert!(blob_path(&dir, &hex).is_file(), "still used by b");
        assert!(remove_manifest(&dir, &b).unwrap());
        assert!(!blob_path(&dir, &hex).exists(), "last user gone");
        assert!(!remove_manifest(&dir, &b).unwrap());
        assert_eq!(
            std::fs::read_dir(blobs_dir(&dir)).unwrap().count(),
            0,
            "no temporary file is left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abandoned_downloads_and_temporary_files_are_swept_when_old() {
        let dir = std::env::temp_dir().join(format!("rawrxd-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::create_dir_all(dir.join("manifests/ns/m")).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        let write = |rel: &str, stale: bool| {
            let path = dir.join(rel);
            std::fs::write(&path, b"x").unwrap();
            if stale {
                File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
            path
        };
        let gone = [
            write("blobs/partial-aaaa", true),
            write("blobs/partial-aaaa.json", true),
            write("blobs/.import-1-0", true),
            write("blobs/.upload-abc", true),
            write("blobs/.partial-aaaa.json.tmp-77", true),
            write("manifests/ns/m/.v1.json.tmp-77", true),
        ];
        let kept = [
            write("blobs/partial-bbbb", false),
            write("blobs/.import-1-1", false),
            write("blobs/sha256-0000", true),
            write("manifests/ns/m/v1.json", true),
            write("old.gguf", true),
        ];
        let removed = sweep_abandoned(&dir, std::time::Duration::from_secs(86_400));
        let mut removed: Vec<PathBuf> = removed.into_iter().map(|(p, _)| p).collect();
        removed.sort();
        let mut expected = gone.to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        assert!(gone.iter().all(|p| !p.exists()));
        assert!(kept.iter().all(|p| p.exists()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
