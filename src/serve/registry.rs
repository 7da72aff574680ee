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
//! manifests/<name>/<tag>.json    a named model: its blob and defaults
//! ```
//!
//! Every manifest and blob appears by an atomic rename, so a crash never leaves a half-written
//! one that the server would list.

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

/// Puts `src` into the blob store under its sha256 (a hard link when the file system allows,
/// else a copy) and returns the hex digest. `expected`, when given, must match or nothing is
/// stored.
pub fn import_file(
    dir: &Path,
    src: &Path,
    expected: Option<&str>,
    progress: impl FnMut(u64),
) -> Result<String, String> {
    let mut hasher = Sha256::new();
    hash_into(src, &mut hasher, progress)
        .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    let hex = hex(hasher);
    if let Some(expected) = expected {
        if expected != hex {
            return Err(format!(
                "sha256 digest mismatch for {}: expected {expected}, got {hex}",
                src.display()
            ));
        }
    }
    let blob = blob_path(dir, &hex);
    if blob.is_file() {
        return Ok(hex);
    }
    std::fs::create_dir_all(blobs_dir(dir))
        .map_err(|e| format!("cannot create {}: {e}", blobs_dir(dir).display()))?;
    let tmp = blobs_dir(dir).join(format!(".import-{hex}-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(src, &tmp)
        .or_else(|_| std::fs::copy(src, &tmp).map(|_| ()))
        .and_then(|()| std::fs::rename(&tmp, &blob))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot store {} as a blob: {e}", src.display())
        })?;
    Ok(hex)
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
        let hex = import_file(&dir, &src, None, |_| {}).unwrap();
        assert!(blob_path(&dir, &hex).is_file());
        assert!(import_file(&dir, &src, Some(&"0".repeat(64)), |_| {}).is_err());
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
