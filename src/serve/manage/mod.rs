//! Model management: `/api/pull` (a local GGUF path or an http(s) URL: resumable ranged
//! download, NDJSON progress, sha256 verified before the model is registered), `/api/create`
//! (a GGUF path, blob or existing model plus template/system/parameters), `/api/copy`,
//! `/api/delete`, blob upload (`/api/blobs/:digest`, which the official clients use for
//! `create` with `files`), `/api/push` (refused with a clear error), and live weight patches
//! (`/rawrxd/models/{name}/patch|revert`, [`live`]).
//!
//! What is stored, and where, is the [`registry`]'s business; this module turns requests into
//! registry changes and reports progress the way Ollama does: NDJSON `{"status": …}` lines
//! (with `total`/`completed` while bytes move), ending in `{"status":"success"}` or, once the
//! stream has started, one `{"error": …}` line.
//!
//! What it may touch is bounded by [`Files`]: server-side paths only inside
//! `serve.import_dirs` ([`imports`]; a refused path and a missing one get the same answer),
//! pulls only to addresses the [`egress`] policy allows (checked at connect time and on every
//! redirect), at most `serve.max_model_size` per model (413), and only while the models
//! directory keeps `serve.min_free_space` free (507). Imported files are always copied into
//! the blob store, never linked.

mod blobs;
mod create;
mod live;
mod names;
mod pull;

pub use blobs::{blob_exists, upload_blob};
pub use create::create;
pub use live::live;
pub use names::{copy, delete, push};
pub use pull::pull;

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::api::{line, model_name, NDJSON};
use super::http::{full, json, read_json, stream, ChannelBody, ServeBody, ServeError};
use super::imports::{self, expand_home, Importable};
use super::options::Options;
use super::registry::{self, Manifest, ModelName};
use super::{egress, template, ServeState};
use crate::gguf::read_meta;

/// Attempts at a download (the first and the resumed ones) before a pull gives up.
const DOWNLOAD_ATTEMPTS: u32 = 4;
/// Least time between two progress lines for the same transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What model management may read, reach and write.
pub struct Files {
    /// `serve.import_dirs`: the only places server-side paths are imported from.
    pub import_dirs: Vec<PathBuf>,
    /// The pull policy and its HTTP client.
    pub puller: egress::Puller,
    /// Largest model a pull, blob upload or path import may store.
    pub max_model_size: u64,
    /// Free space kept in the models directory.
    pub min_free_space: u64,
}

/// The one answer for a server-side path that is missing or not allowed (the same for both,
/// so the API cannot probe the file system).
const NOT_IMPORTABLE: &str = "model source not found or not allowed: a server-side path \
    must name a GGUF file inside one of serve.import_dirs (the default allows none); or upload \
    the file with POST /api/blobs/sha256:<digest> and create the model from that blob";

/// `1536` → "1.5 KiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Files {
    /// 413 when `size` is over `serve.max_model_size`.
    fn cap(&self, what: &str, size: u64) -> Result<(), ServeError> {
        if size > self.max_model_size {
            return Err(self.over_limit(what, Some(size)));
        }
        Ok(())
    }

    fn over_limit(&self, what: &str, size: Option<u64>) -> ServeError {
        let limit = format!(
            "serve.max_model_size ({} bytes, {})",
            self.max_model_size,
            human(self.max_model_size)
        );
        ServeError::OverLimit(match size {
            Some(size) => format!(
                "{what} is {size} bytes ({}), more than {limit}",
                human(size)
            ),
            None => format!("{what} is larger than {limit}"),
        })
    }

    /// 507 unless the file system of `dir` has `need` bytes free beyond
    /// `serve.min_free_space`. When the free space cannot be read, the write goes ahead
    /// (and a full disk fails it).
    fn ensure_space(&self, dir: &Path, need: u64) -> Result<(), ServeError> {
        match fs4::available_space(dir) {
            Ok(available) if available >= need.saturating_add(self.min_free_space) => Ok(()),
            Ok(available) => Err(ServeError::NoSpace(format!(
                "not enough disk space in the models directory: {} needed plus \
                 serve.min_free_space ({}) kept free, {} available",
                human(need),
                human(self.min_free_space),
                human(available)
            ))),
            Err(e) => {
                tracing::warn!("cannot read the free space of {}: {e}", dir.display());
                Ok(())
            }
        }
    }

    /// Opens a server-side path a request names, when it is importable; else 404 with
    /// [`NOT_IMPORTABLE`] (whatever the reason).
    async fn open_source(&self, text: &str) -> Result<Importable, ServeError> {
        let (text, dirs) = (text.to_string(), self.import_dirs.clone());
        tokio::task::spawn_blocking(move || imports::open_importable(&text, &dirs))
            .await
            .map_err(internal)?
            .map_err(|imports::NotImportable| ServeError::NotFound(NOT_IMPORTABLE.into()))
    }
}

/// Work in progress that must not run twice at once (a download into the same partial file,
/// an upload of the same blob).
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

/// Holds one [`InFlight`] key; released on drop, also when the work is cancelled.
struct Claim<'a> {
    set: &'a InFlight,
    key: String,
}

impl InFlight {
    fn claim(&self, key: String, what: &str) -> Result<Claim<'_>, ServeError> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.clone()) {
            return Err(ServeError::Conflict(format!(
                "{what} is already in progress; wait for it to finish"
            )));
        }
        Ok(Claim { set: self, key })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Where status lines go: the NDJSON stream, or nowhere (`stream: false` answers once).
#[derive(Clone)]
struct Progress {
    tx: Option<mpsc::Sender<Bytes>>,
}

impl Progress {
    async fn send(&self, value: Value) -> Result<(), ServeError> {
        match &self.tx {
            Some(tx) => tx
                .send(line(&value))
                .await
                .map_err(|_| ServeError::BadRequest("the client went away".into())),
            None => Ok(()),
        }
    }

    async fn status(&self, status: impl Into<String>) -> Result<(), ServeError> {
        self.send(json!({ "status": status.into() })).await
    }

    /// From blocking code (hashing, copying): best effort, never waits.
    fn try_send(&self, value: Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(line(&value));
        }
    }
}

/// Runs `work` and answers as Ollama does: streamed (default) as NDJSON status lines ending
/// in `success` or an `error` line, else one JSON object (or the error with its status).
async fn respond<F, Fut>(streamed: bool, work: F) -> Result<Response<ServeBody>, ServeError>
where
    F: FnOnce(Progress) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), ServeError>> + Send + 'static,
{
    if !streamed {
        work(Progress { tx: None }).await?;
        return Ok(json(&json!({"status": "success"})));
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let progress = Progress {
            tx: Some(tx.clone()),
        };
        let last = match work(progress).await {
            Ok(()) => json!({"status": "success"}),
            Err(e) => {
                tracing::warn!("model management request failed: {e}");
                json!({"error": e.to_string()})
            }
        };
        let _ = tx.send(line(&last)).await;
    });
    Ok(stream(NDJSON, ChannelBody::new(rx)))
}

/// An empty answer (Ollama's copy, delete and blob endpoints have no body).
fn empty(status: StatusCode) -> Response<ServeBody> {
    full(status, "application/json; charset=utf-8", Bytes::new())
}

fn models_dir(state: &ServeState) -> Result<PathBuf, ServeError> {
    state
        .models
        .models_dir()
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            ServeError::BadRequest(
                "no models directory: start rawrxd serve with --models DIR (or set HOME)".into(),
            )
        })
}

fn parse_name(text: &str) -> Result<ModelName, ServeError> {
    ModelName::parse(text).map_err(ServeError::BadRequest)
}

fn internal(e: impl std::fmt::Display) -> ServeError {
    ServeError::Internal(e.to_string())
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(ServeError::Internal)
}

/// Checks that `path` is a GGUF file (its header parses); the error names what is wrong.
async fn check_gguf(path: PathBuf) -> Result<(), ServeError> {
    tokio::task::spawn_blocking(move || read_meta(&path).map(|_| ()))
        .await
        .map_err(internal)?
        .map_err(|e| ServeError::BadRequest(e.to_string()))
}

/// Copies the open file `src` (named `shown` in messages) into the blob store, reporting
/// progress, and returns its hex digest. Refused before anything is written when it is over
/// `serve.max_model_size` (`capped`: files a request brought, not `--model` files), when
/// the disk lacks the space, or when it does not start like a GGUF file; the copy is checked
/// (GGUF header, `expected` digest) before it becomes a blob, and removed when it fails.
async fn import(
    files: &Files,
    dir: &Path,
    mut src: File,
    shown: String,
    expected: Option<String>,
    capped: bool,
    progress: &Progress,
) -> Result<String, ServeError> {
    let total = src
        .metadata()
        .map_err(|e| ServeError::BadRequest(format!("cannot read {shown}: {e}")))?
        .len();
    if capped {
        files.cap(&shown, total)?;
    }
    let blobs = registry::blobs_dir(dir);
    std::fs::create_dir_all(&blobs)
        .map_err(|e| internal(format!("cannot create {}: {e}", blobs.display())))?;
    files.ensure_space(&blobs, total)?;
    let status = format!("importing {shown}");
    progress.status(status.clone()).await?;
    let limit = capped.then_some(files.max_model_size);
    let (dir, sink) = (dir.to_path_buf(), progress.clone());
    tokio::task::spawn_blocking(move || {
        let mut magic = [0u8; 4];
        let is_gguf = src.read_exact(&mut magic).is_ok() && &magic == b"GGUF";
        if !is_gguf {
            return Err(ServeError::BadRequest(format!(
                "{shown} is not a GGUF file: bad magic"
            )));
        }
        src.rewind()
            .map_err(|e| ServeError::BadRequest(format!("cannot read {shown}: {e}")))?;
        let staged = registry::copy_in(&dir, &mut src, &shown, limit, |done| {
            sink.try_send(json!({"status": status, "total": total, "completed": done}));
        })
        .map_err(|e| match e {
            registry::ImportError::TooLarge { .. } => ServeError::OverLimit(format!(
                "{e} (serve.max_model_size); it grew while it was copied"
            )),
            registry::ImportError::Io(e) => ServeError::Internal(e),
        })?;
        if let Err(e) = read_meta(staged.path()) {
            let tmp = staged.path().display().to_string();
            return Err(ServeError::BadRequest(e.to_string().replace(&tmp, &shown)));
        }
        if let Some(expected) = expected.filter(|e| *e != staged.hex) {
            return Err(ServeError::BadRequest(format!(
                "sha256 digest mismatch for {shown}: expected {expected}, got {}",
                staged.hex
            )));
        }
        staged
            .commit(&dir)
            .map_err(|e| internal(format!("cannot store {shown} as a blob: {e}")))
    })
    .await
    .map_err(internal)?
}

/// Opens a file given on the command line or found in the models directory (not subject to
/// `serve.import_dirs`) for [`import`].
fn open_own(path: &Path) -> Result<File, ServeError> {
    File::open(path).map_err(|e| internal(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::create::*;
    use super::pull::*;
    use super::*;

    #[test]
    fn modelfiles_parse_multiline_values_and_repeated_stops() {
        let text = "# a comment\nFROM ./x.gguf\nSYSTEM \"\"\"Be\nbrief.\"\"\"\n\
                    TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\nPARAMETER temperature 0.2\n\
                    PARAMETER stop \"<end>\"\nPARAMETER stop User:\nLICENSE MIT\n";
        let m = parse_modelfile(text).unwrap();
        assert_eq!(m.from.as_deref(), Some("./x.gguf"));
        assert_eq!(m.system.as_deref(), Some("Be\nbrief."));
        assert_eq!(m.template.as_deref(), Some("{{ .Prompt }}"));
        assert_eq!(m.license.as_deref(), Some("MIT"));
        assert_eq!(m.parameters["temperature"], json!(0.2));
        assert_eq!(m.parameters["stop"], json!(["<end>", "User:"]));
        assert!(parse_modelfile("ADAPTER x")
            .unwrap_err()
            .contains("ADAPTER"));
        assert!(parse_modelfile("SYSTEM \"\"\"never closed").is_err());
    }

    #[test]
    fn unknown_or_mistyped_parameters_are_refused() {
        check_parameters(
            json!({"temperature": 0.1, "stop": ["x"]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(check_parameters(json!({"num_gpu": 1}).as_object().unwrap()).is_err());
        assert!(check_parameters(json!({"top_k": "x"}).as_object().unwrap()).is_err());
    }

    #[test]
    fn urls_and_paths_are_told_from_names() {
        assert!(looks_like_url("https://h/x.gguf"));
        assert!(looks_like_path("/a/b.gguf") && looks_like_path("x.GGUF"));
        assert!(!looks_like_path("gemma3:270m") && !looks_like_url("gemma3"));
        assert_eq!(short_hash("a").len(), 16);
    }
}
