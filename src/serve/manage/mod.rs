//! Model management: `/api/pull` (a local GGUF path or an http(s) URL: resumable ranged
//! download, NDJSON progress, sha256 verified before the model is registered), `/api/create`
//! (a GGUF path, blob or existing model plus template/system/parameters), `/api/copy`,
//! `/api/delete`, blob upload (`/api/blobs/:digest`, which the official clients use for
//! `create` with `files`), and `/api/push` (refused with a clear error).
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
use super::gguf::read_meta;
use super::http::{full, json, read_json, stream, ChannelBody, ServeBody, ServeError};
use super::imports::{self, expand_home, Importable};
use super::options::Options;
use super::registry::{self, Manifest, ModelName};
use super::{egress, template, ServeState};

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

// ---------------------------------------------------------------------------------------
// /api/pull

#[derive(Debug, Deserialize, Default)]
struct PullRequest {
    model: Option<String>,
    name: Option<String>,
    /// rawrxd: where to pull `model` from (a URL or path), when `model` is the name to give it.
    from: Option<String>,
    /// rawrxd: the expected sha256 (`sha256:<hex>`); a URL may also carry `#sha256=<hex>`.
    digest: Option<String>,
    stream: Option<bool>,
    /// Accepted for compatibility; TLS certificates are always verified.
    #[allow(dead_code)]
    insecure: Option<bool>,
}

/// Where a pull reads from.
enum Source {
    Url(reqwest::Url),
    /// A server-side file inside `serve.import_dirs`, open, and the path the client gave.
    File(Importable, PathBuf),
}

fn looks_like_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

fn looks_like_path(text: &str) -> bool {
    text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || text.starts_with("~/")
        || text.to_ascii_lowercase().ends_with(".gguf")
}

/// `/api/pull`: a name that exists succeeds at once (clients pull before use); a URL or path,
/// as `model` (named after its file stem) or as `from` (named `model`), is fetched, verified
/// and registered. A URL's host must pass the pull policy (403 before the response starts,
/// when it can be told then), a path must be importable (404 otherwise).
pub async fn pull(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: PullRequest = read_json(request, state.max_body).await?;
    let model = model_name(body.model, body.name)?;
    let source_text = body
        .from
        .clone()
        .or_else(|| (looks_like_url(&model) || looks_like_path(&model)).then(|| model.clone()));
    let Some(source_text) = source_text else {
        if state.models.find(&model).is_ok() {
            return respond(body.stream.unwrap_or(true), |p| async move {
                p.status("pulling manifest").await
            })
            .await;
        }
        return Err(ServeError::NotFound(format!(
            "model \"{model}\" not found: rawrxd serve has no model registry; pull a GGUF file \
             by URL or path (\"model\": \"https://…/file.gguf\", or \"model\": \"{model}\" with \
             \"from\": URL or path), or put it in the models directory"
        )));
    };
    let mut expected = body
        .digest
        .as_deref()
        .map(registry::parse_digest)
        .transpose()
        .map_err(ServeError::BadRequest)?;
    let source = if looks_like_url(&source_text) {
        let mut url = reqwest::Url::parse(&source_text)
            .map_err(|e| ServeError::BadRequest(format!("invalid URL {source_text:?}: {e}")))?;
        if let Some(fragment) = url.fragment().and_then(|f| f.strip_prefix("sha256=")) {
            let from_url = registry::parse_digest(fragment).map_err(ServeError::BadRequest)?;
            if expected.as_ref().is_some_and(|e| *e != from_url) {
                return Err(ServeError::BadRequest(
                    "the digest and the URL's #sha256= disagree".into(),
                ));
            }
            expected = Some(from_url);
        }
        url.set_fragment(None);
        state
            .files
            .puller
            .precheck(&url)
            .await
            .map_err(ServeError::Forbidden)?;
        Source::Url(url)
    } else {
        let file = state.files.open_source(&source_text).await?;
        Source::File(file, expand_home(&source_text))
    };
    let name = if body.from.is_some() {
        parse_name(&model)?
    } else {
        let stem = match &source {
            Source::Url(url) => url
                .path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or("")
                .to_string(),
            Source::File(_, path) => path
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string(),
        };
        let stem = stem
            .strip_suffix(".gguf")
            .or_else(|| stem.strip_suffix(".GGUF"))
            .unwrap_or(&stem);
        ModelName::from_stem(stem).map_err(|e| {
            ServeError::BadRequest(format!(
                "cannot name the model after {source_text:?} ({e}); give \"model\" a name and \
                 the URL or path as \"from\""
            ))
        })?
    };
    let dir = models_dir(state)?;
    let state_pulls = state.in_flight.clone();
    let files = state.files.clone();
    respond(body.stream.unwrap_or(true), move |progress| async move {
        let (hex, source_text) = match source {
            Source::File(source, _) => {
                // Checked (GGUF header, digest) before it becomes a blob.
                let shown = source.path.display().to_string();
                let hex = import(
                    &files,
                    &dir,
                    source.file,
                    shown.clone(),
                    expected,
                    true,
                    &progress,
                )
                .await?;
                (hex, shown)
            }
            Source::Url(url) => {
                let partial = registry::blobs_dir(&dir)
                    .join(format!("partial-{}", &short_hash(url.as_str())));
                let _claim = state_pulls
                    .claim(partial.display().to_string(), &format!("a pull of {url}"))?;
                let hex = download(
                    &files,
                    &url,
                    &partial,
                    expected.as_deref(),
                    &name,
                    &progress,
                )
                .await?;
                (hex, url.to_string())
            }
        };
        let gguf = registry::blob_path(&dir, &hex);
        progress.status("verifying the GGUF header").await?;
        if let Err(e) = check_gguf(gguf.clone()).await {
            // A blob nothing uses is garbage: a pulled file that is not a model.
            let used = registry::read_manifests(&dir)
                .iter()
                .any(|(_, m, _)| m.gguf_path(&dir) == gguf);
            if !used {
                let _ = std::fs::remove_file(&gguf);
            }
            return Err(e);
        }
        progress.status("writing manifest").await?;
        let manifest = Manifest {
            gguf: PathBuf::from("blobs").join(format!("sha256-{hex}")),
            sha256: Some(hex),
            source: Some(source_text),
            ..Manifest::default()
        };
        blocking(move || {
            registry::write_manifest(&dir, &name, &manifest).map_err(|e| e.to_string())
        })
        .await
    })
    .await
}

/// The first 16 hex digits of the sha256 of `text` (names a download's partial file).
fn short_hash(text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    registry::hex(hasher)[..16].to_string()
}

/// What a partial download was fetched from: a resumed range is only appended when the file
/// on the server is still the same one (`If-Range` with these validators).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct PartialInfo {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: Option<u64>,
}

fn header_text(response: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Most redirects a download follows.
const MAX_REDIRECTS: usize = 5;

/// Why a request of a download failed.
enum Fetch {
    /// The pull policy refuses the address (or a redirect's): never retried.
    Refused(String),
    /// Anything else (connection, protocol): retried.
    Failed(String),
}

/// GETs `url` with `headers`, following redirects by hand so that each hop is checked
/// against the pull policy and its headers are seen: Hugging Face answers a model file's URL
/// with a redirect whose `X-Linked-Etag` is the file's sha256, which becomes the expected
/// digest when the request named none. Returns the final response and that digest.
async fn get_following(
    puller: &egress::Puller,
    url: &reqwest::Url,
    headers: &[(header::HeaderName, String)],
) -> Result<(reqwest::Response, Option<String>), Fetch> {
    let client = puller.client().map_err(Fetch::Failed)?;
    let mut url = url.clone();
    let mut linked = None;
    for _ in 0..=MAX_REDIRECTS {
        puller.check_url(&url).map_err(Fetch::Refused)?;
        let mut request = client.get(url.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| match egress::refusal(&e) {
                Some(refused) => Fetch::Refused(refused),
                None => Fetch::Failed(error_chain(&e)),
            })?;
        if let Some(tag) = response
            .headers()
            .get("x-linked-etag")
            .and_then(|v| v.to_str().ok())
        {
            if let Ok(hex) = registry::parse_digest(tag.trim_matches('"')) {
                linked = Some(hex);
            }
        }
        if !response.status().is_redirection() {
            return Ok((response, linked));
        }
        let location = header_text(&response, header::LOCATION)
            .ok_or_else(|| Fetch::Failed(format!("{url} redirects without a Location")))?;
        url = url.join(&location).map_err(|e| {
            Fetch::Failed(format!(
                "{url} redirects to an invalid Location {location:?}: {e}"
            ))
        })?;
    }
    Err(Fetch::Failed(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// An error and its causes, `: `-joined (reqwest's own message leaves out why a connection
/// failed).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(response: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let text = header_text(response, header::CONTENT_RANGE)?;
    let rest = text.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// A progress line for bytes moved (Ollama's `status`/`completed`/`total`/`digest`).
fn bytes_line(status: &str, completed: u64, total: Option<u64>, digest: Option<&str>) -> Value {
    let mut line = json!({"status": status, "completed": completed});
    if let Some(total) = total {
        line["total"] = json!(total);
    }
    if let Some(digest) = digest {
        line["digest"] = json!(digest);
    }
    line
}

/// Deletes a partial download and its sidecar.
async fn forget(partial: &Path, info: &Path) {
    let _ = tokio::fs::remove_file(partial).await;
    let _ = tokio::fs::remove_file(info).await;
}

/// Counts one failed attempt: gives up with `give_up` after [`DOWNLOAD_ATTEMPTS`], else
/// reports `status` and waits `backoff_ms` × attempts before the caller tries again.
async fn retry(
    failures: &mut u32,
    progress: &Progress,
    status: String,
    give_up: String,
    backoff_ms: u64,
) -> Result<(), ServeError> {
    *failures += 1;
    if *failures >= DOWNLOAD_ATTEMPTS {
        return Err(ServeError::BadRequest(give_up));
    }
    progress.status(status).await?;
    tokio::time::sleep(Duration::from_millis(backoff_ms * u64::from(*failures))).await;
    Ok(())
}

/// Downloads `url` into `partial`, resuming what an earlier pull left there, and retrying a
/// broken transfer from where it stopped. Returns the file's sha256 once it matches
/// `expected` (when given); on a mismatch the partial file is deleted. A file over
/// `serve.max_model_size` is refused as soon as its size is known (or once that many bytes
/// arrived) and its partial file deleted; too little disk space stops it (the partial file
/// is kept, to resume).
async fn download(
    files: &Files,
    url: &reqwest::Url,
    partial: &Path,
    expected: Option<&str>,
    name: &ModelName,
    progress: &Progress,
) -> Result<String, ServeError> {
    let info_path = partial.with_extension("json");
    let dir = partial.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| internal(format!("cannot create {}: {e}", dir.display())))?;
    let mut info: PartialInfo = std::fs::read(&info_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if info.url != url.as_str() {
        let _ = tokio::fs::remove_file(partial).await;
        info = PartialInfo {
            url: url.to_string(),
            ..PartialInfo::default()
        };
    }
    let status = match expected {
        Some(hex) => format!("pulling {}", &hex[..12]),
        None => format!("pulling {}", name.tagged()),
    };
    let mut expected = expected.map(str::to_string);
    let mut digest = expected.as_ref().map(|h| format!("sha256:{h}"));
    let mut failures = 0u32;
    loop {
        let offset = tokio::fs::metadata(partial)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if offset > 0 && info.total == Some(offset) {
            break;
        }
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push((header::RANGE, format!("bytes={offset}-")));
            if let Some(validator) = info.etag.clone().or_else(|| info.last_modified.clone()) {
                headers.push((header::IF_RANGE, validator));
            }
            progress
                .status(format!("resuming the download at byte {offset}"))
                .await?;
        }
        let response = match get_following(&files.puller, url, &headers).await {
            Ok((response, linked)) => {
                if let (None, Some(linked)) = (&expected, linked) {
                    progress
                        .status(format!(
                            "the server gives the file's sha256 (X-Linked-Etag): {linked}"
                        ))
                        .await?;
                    digest = Some(format!("sha256:{linked}"));
                    expected = Some(linked);
                }
                response
            }
            Err(Fetch::Refused(e)) => return Err(ServeError::Forbidden(e)),
            Err(Fetch::Failed(e)) => {
                retry(
                    &mut failures,
                    progress,
                    format!("retrying after an error: {e}"),
                    format!("cannot download {url}: {e}; pull again to resume"),
                    500,
                )
                .await?;
                continue;
            }
        };
        let (mut completed, total) = match response.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => match content_range(&response) {
                Some((start, total)) if start == offset => (offset, total.or(info.total)),
                _ => {
                    // Not the range asked for: start again from the beginning.
                    let _ = tokio::fs::remove_file(partial).await;
                    info.total = None;
                    continue;
                }
            },
            StatusCode::OK => (0, response.content_length()),
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                let _ = tokio::fs::remove_file(partial).await;
                info.total = None;
                failures += 1;
                if failures >= DOWNLOAD_ATTEMPTS {
                    return Err(ServeError::BadRequest(format!(
                        "cannot download {url}: the server refuses ranges"
                    )));
                }
                continue;
            }
            other => {
                return Err(ServeError::BadRequest(format!(
                    "cannot download {url}: the server answered {other}"
                )))
            }
        };
        if let Some(total) = total.filter(|t| *t > files.max_model_size) {
            forget(partial, &info_path).await;
            return Err(files.over_limit(url.as_str(), Some(total)));
        }
        files.ensure_space(dir, total.map_or(0, |t| t.saturating_sub(completed)))?;
        info.etag = header_text(&response, header::ETAG);
        info.last_modified = header_text(&response, header::LAST_MODIFIED);
        info.total = total;
        let info_bytes = serde_json::to_vec(&info).map_err(internal)?;
        registry::write_atomic(&info_path, &info_bytes)
            .map_err(|e| internal(format!("cannot write {}: {e}", info_path.display())))?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(completed > 0)
            .truncate(completed == 0)
            .open(partial)
            .await
            .map_err(|e| internal(format!("cannot write {}: {e}", partial.display())))?;
        let mut response = response;
        let mut last_report = Instant::now() - PROGRESS_EVERY;
        let mut space_checked = completed;
        let broken = loop {
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                progress
                    .send(bytes_line(&status, completed, total, digest.as_deref()))
                    .await?;
            }
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    completed += chunk.len() as u64;
                    if completed > files.max_model_size {
                        drop(file);
                        forget(partial, &info_path).await;
                        return Err(files.over_limit(url.as_str(), None));
                    }
                    file.write_all(&chunk).await.map_err(|e| {
                        internal(format!("cannot write {}: {e}", partial.display()))
                    })?;
                    // Without a known size the space was checked for nothing: look again
                    // every 64 MiB.
                    if total.is_none() && completed - space_checked >= 64 << 20 {
                        space_checked = completed;
                        files.ensure_space(dir, 0)?;
                    }
                }
                Ok(None) => {
                    break total.is_some_and(|t| t != completed).then(|| {
                        format!(
                            "the connection closed after {completed} of {} bytes",
                            total.unwrap_or(0)
                        )
                    })
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        file.flush().await.map_err(internal)?;
        file.sync_all().await.map_err(internal)?;
        drop(file);
        match broken {
            None => {
                if total.is_none() {
                    info.total = Some(completed);
                }
                progress
                    .send(bytes_line(
                        &status,
                        completed,
                        Some(completed),
                        digest.as_deref(),
                    ))
                    .await?;
                break;
            }
            Some(reason) => {
                retry(
                    &mut failures,
                    progress,
                    format!("the download broke off ({reason}); resuming"),
                    format!("the download of {url} broke off ({reason}); pull again to resume"),
                    200,
                )
                .await?;
            }
        }
    }
    progress.status("verifying sha256 digest").await?;
    let path = partial.to_path_buf();
    let hex = blocking(move || {
        let mut hasher = Sha256::new();
        registry::hash_into(&path, &mut hasher, |_| {}).map_err(|e| e.to_string())?;
        Ok(registry::hex(hasher))
    })
    .await?;
    if let Some(expected) = expected {
        if expected != hex {
            let _ = tokio::fs::remove_file(partial).await;
            let _ = tokio::fs::remove_file(&info_path).await;
            return Err(ServeError::BadRequest(format!(
                "sha256 digest mismatch for {url}: expected {expected}, got {hex}; the download \
                 was deleted"
            )));
        }
    }
    let blob = registry::blob_path(dir.parent().unwrap_or(dir), &hex);
    tokio::fs::rename(partial, &blob).await.map_err(|e| {
        internal(format!(
            "cannot move the download to {}: {e}",
            blob.display()
        ))
    })?;
    let _ = tokio::fs::remove_file(&info_path).await;
    Ok(hex)
}

// ---------------------------------------------------------------------------------------
// /api/create

#[derive(Debug, Deserialize, Default)]
struct CreateRequest {
    model: Option<String>,
    name: Option<String>,
    /// A local GGUF path or an existing model's name.
    from: Option<String>,
    /// `{"file.gguf": "sha256:…"}`: a blob uploaded with `POST /api/blobs/:digest`.
    files: Option<Map<String, Value>>,
    template: Option<String>,
    system: Option<String>,
    license: Option<Value>,
    parameters: Option<Map<String, Value>>,
    /// Ollama's older form: a Modelfile text (`FROM`, `TEMPLATE`, `SYSTEM`, `PARAMETER`,
    /// `LICENSE`).
    modelfile: Option<String>,
    /// rawrxd: the same as `from` for a path (Ollama's oldest form).
    path: Option<String>,
    quantize: Option<String>,
    adapters: Option<Map<String, Value>>,
    messages: Option<Vec<Value>>,
    stream: Option<bool>,
}

/// The parts of a Modelfile rawrxd understands.
#[derive(Debug, Default, PartialEq)]
struct Modelfile {
    from: Option<String>,
    template: Option<String>,
    system: Option<String>,
    license: Option<String>,
    parameters: Map<String, Value>,
}

/// Parses a Modelfile: one instruction per line, `"""…"""` for multi-line values, `#`
/// comments. Unsupported instructions (`ADAPTER`, `MESSAGE`, …) are an error naming them.
fn parse_modelfile(text: &str) -> Result<Modelfile, String> {
    let mut out = Modelfile::default();
    let mut rest = text;
    while !rest.is_empty() {
        let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = tail;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (command, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let mut args = args.trim().to_string();
        if let Some(start) = args.strip_prefix("\"\"\"") {
            if let Some(end) = start.find("\"\"\"") {
                args = start[..end].to_string();
            } else {
                let Some(end) = rest.find("\"\"\"") else {
                    return Err(format!("{command}: a \"\"\" is never closed"));
                };
                args = format!("{start}\n{}", &rest[..end]);
                let after = &rest[end + 3..];
                rest = after.split_once('\n').map_or("", |(_, t)| t);
            }
        } else if args.len() >= 2 && args.starts_with('"') && args.ends_with('"') {
            args = serde_json::from_str(&args).unwrap_or_else(|_| args[1..args.len() - 1].into());
        }
        match command.to_ascii_uppercase().as_str() {
            "FROM" => out.from = Some(args),
            "TEMPLATE" => out.template = Some(args),
            "SYSTEM" => out.system = Some(args),
            "LICENSE" => out.license = Some(args),
            "PARAMETER" => {
                let (key, value) = args
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("PARAMETER {args}: expected a name and a value"))?;
                let value = value.trim();
                let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
                    Value::String(value[1..value.len() - 1].to_string())
                } else {
                    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()))
                };
                if key == "stop" {
                    let list = out
                        .parameters
                        .entry("stop")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(items) = list {
                        items.push(Value::String(
                            value
                                .as_str()
                                .map_or_else(|| value.to_string(), str::to_string),
                        ));
                    }
                } else {
                    out.parameters.insert(key.to_string(), value);
                }
            }
            other => {
                return Err(format!(
                    "Modelfile instruction {other} is not supported by rawrxd serve (FROM, \
                     TEMPLATE, SYSTEM, PARAMETER and LICENSE are)"
                ))
            }
        }
    }
    Ok(out)
}

/// Parameters a model may set: the generation options rawrxd applies.
const PARAMETERS: &[&str] = &[
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "num_predict",
    "stop",
    "num_ctx",
];

fn check_parameters(parameters: &Map<String, Value>) -> Result<(), ServeError> {
    if let Some(unknown) = parameters
        .keys()
        .find(|k| !PARAMETERS.contains(&k.as_str()))
    {
        return Err(ServeError::BadRequest(format!(
            "parameter {unknown:?} is not supported by rawrxd serve; supported: {}",
            PARAMETERS.join(", ")
        )));
    }
    Options::from_parameters(parameters).map_err(ServeError::BadRequest)?;
    Ok(())
}

/// What a create starts from.
enum Base {
    /// A GGUF file to import (inside `serve.import_dirs`, open).
    Path(Importable),
    /// An uploaded blob.
    Blob(String),
    /// An existing model (its manifest's settings are inherited).
    Model(super::models::ModelFile),
}

/// `/api/create`: a model named `model` from a GGUF path, an uploaded blob or an existing
/// model, with its own template, system prompt, parameters and license.
pub async fn create(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: CreateRequest = read_json(request, state.max_body).await?;
    let name = parse_name(&model_name(body.model, body.name)?)?;
    if body.quantize.as_ref().is_some_and(|q| !q.is_empty()) {
        return Err(ServeError::BadRequest(
            "quantize is not supported by rawrxd serve: create from a GGUF that is already \
             quantized"
                .into(),
        ));
    }
    if body.adapters.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(ServeError::BadRequest(
            "adapters are not supported by rawrxd serve".into(),
        ));
    }
    if body.messages.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(ServeError::BadRequest(
            "messages are not supported by rawrxd serve; use system for a standing instruction"
                .into(),
        ));
    }
    let modelfile = match &body.modelfile {
        Some(text) => parse_modelfile(text).map_err(ServeError::BadRequest)?,
        None => Modelfile::default(),
    };
    let dir = models_dir(state)?;
    let base = if let Some(files) = body.files.as_ref().filter(|f| !f.is_empty()) {
        let ggufs: Vec<_> = files
            .iter()
            .filter(|(file, _)| file.to_ascii_lowercase().ends_with(".gguf"))
            .collect();
        if ggufs.len() != 1 || files.len() != 1 {
            return Err(ServeError::BadRequest(
                "files must name exactly one .gguf file (rawrxd serves GGUF models only)".into(),
            ));
        }
        let digest = ggufs[0].1.as_str().unwrap_or_default();
        let hex = registry::parse_digest(digest).map_err(ServeError::BadRequest)?;
        if !registry::blob_path(&dir, &hex).is_file() {
            return Err(ServeError::BadRequest(format!(
                "blob sha256:{hex} was not uploaded (POST /api/blobs/sha256:{hex} first)"
            )));
        }
        Base::Blob(hex)
    } else {
        let from = body
            .from
            .clone()
            .or(body.path.clone())
            .or(modelfile.from.clone())
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                ServeError::BadRequest(
                    "from is required: a GGUF file path or an existing model's name".into(),
                )
            })?;
        match state.models.find(&from) {
            Ok(file) if !looks_like_path(&from) => Base::Model(file),
            _ => Base::Path(state.files.open_source(&from).await.map_err(|_| {
                ServeError::NotFound(format!("from names no model; {NOT_IMPORTABLE}"))
            })?),
        }
    };
    let mut manifest = match &base {
        Base::Model(file) => file
            .manifest
            .as_deref()
            .cloned()
            .unwrap_or_else(|| Manifest {
                source: Some(file.path.display().to_string()),
                ..Manifest::default()
            }),
        Base::Path(source) => Manifest {
            source: Some(source.path.display().to_string()),
            ..Manifest::default()
        },
        Base::Blob(_) => Manifest::default(),
    };
    if let Some(t) = body.template.clone().or(modelfile.template.clone()) {
        template::check(&t).map_err(ServeError::BadRequest)?;
        manifest.template = Some(t).filter(|t| !t.is_empty());
    }
    if let Some(system) = body.system.clone().or(modelfile.system.clone()) {
        manifest.system = Some(system).filter(|s| !s.is_empty());
    }
    let license = match body.license.clone() {
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Some(Value::Null) | None => modelfile.license.clone(),
        Some(other) => {
            return Err(ServeError::BadRequest(format!(
                "license must be a string or a list of strings, not {other}"
            )))
        }
    };
    if license.is_some() {
        manifest.license = license;
    }
    for (key, value) in modelfile
        .parameters
        .clone()
        .into_iter()
        .chain(body.parameters.clone().unwrap_or_default())
    {
        manifest.parameters.insert(key, value);
    }
    check_parameters(&manifest.parameters)?;
    let files = state.files.clone();
    respond(body.stream.unwrap_or(true), move |progress| async move {
        match base {
            Base::Path(source) => {
                progress.status("parsing GGUF").await?;
                let shown = source.path.display().to_string();
                let hex = import(&files, &dir, source.file, shown, None, true, &progress).await?;
                manifest.gguf = PathBuf::from("blobs").join(format!("sha256-{hex}"));
                manifest.sha256 = Some(hex);
            }
            Base::Blob(hex) => {
                progress.status("parsing GGUF").await?;
                check_gguf(registry::blob_path(&dir, &hex)).await?;
                progress
                    .status(format!("using existing layer sha256:{hex}"))
                    .await?;
                manifest.gguf = PathBuf::from("blobs").join(format!("sha256-{hex}"));
                manifest.sha256 = Some(hex);
            }
            Base::Model(file) if file.manifest.is_some() => {
                progress
                    .status(format!("using existing layer sha256:{}", file.digest()))
                    .await?;
            }
            Base::Model(file) => {
                let shown = file.path.display().to_string();
                let src = open_own(&file.path)?;
                let hex = import(&files, &dir, src, shown, None, false, &progress).await?;
                manifest.gguf = PathBuf::from("blobs").join(format!("sha256-{hex}"));
                manifest.sha256 = Some(hex);
            }
        }
        progress.status("writing manifest").await?;
        blocking(move || {
            registry::write_manifest(&dir, &name, &manifest).map_err(|e| e.to_string())
        })
        .await
    })
    .await
}

// ---------------------------------------------------------------------------------------
// /api/blobs/:digest

/// `HEAD /api/blobs/sha256:<hex>`: 200 when the blob is stored, else 404.
pub fn blob_exists(state: &ServeState, digest: &str) -> Result<Response<ServeBody>, ServeError> {
    let hex = registry::parse_digest(digest).map_err(ServeError::BadRequest)?;
    let dir = models_dir(state)?;
    if registry::blob_path(&dir, &hex).is_file() {
        Ok(empty(StatusCode::OK))
    } else {
        Err(ServeError::NotFound(format!("blob sha256:{hex} not found")))
    }
}

/// `POST /api/blobs/sha256:<hex>`: stores the body (streamed to disk, up to
/// `serve.max_model_size`) when its sha256 is the one named; else 400 and nothing is kept.
/// A `Content-Length` over the limit, or more than the disk can take, is refused before the
/// body is read (413, 507); a body without one is cut off at the limit (413).
pub async fn upload_blob(
    state: &ServeState,
    digest: &str,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let hex = registry::parse_digest(digest).map_err(ServeError::BadRequest)?;
    let dir = models_dir(state)?;
    let blob = registry::blob_path(&dir, &hex);
    if blob.is_file() {
        return Ok(empty(StatusCode::OK));
    }
    let _claim = state.in_flight.claim(
        blob.display().to_string(),
        &format!("an upload of sha256:{hex}"),
    )?;
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let what = format!("blob sha256:{hex}");
    if let Some(length) = length {
        state.files.cap(&what, length)?;
    }
    let blobs = registry::blobs_dir(&dir);
    tokio::fs::create_dir_all(&blobs)
        .await
        .map_err(|e| internal(format!("cannot create {}: {e}", blobs.display())))?;
    state.files.ensure_space(&blobs, length.unwrap_or(0))?;
    let tmp = blobs.join(format!(".upload-{hex}"));
    let result = receive(request.into_body(), &tmp, &state.files, &what).await;
    let got = match result {
        Ok(got) => got,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    if got != hex {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ServeError::BadRequest(format!(
            "digest mismatch: the body's sha256 is {got}, not {hex}"
        )));
    }
    tokio::fs::rename(&tmp, &blob)
        .await
        .map_err(|e| internal(format!("cannot store the blob: {e}")))?;
    Ok(empty(StatusCode::CREATED))
}

/// Streams a request body into `path`, returning its sha256; stops at
/// `serve.max_model_size` (the caller deletes `path` on error).
async fn receive(
    mut body: Incoming,
    path: &Path,
    files: &Files,
    what: &str,
) -> Result<String, ServeError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| internal(format!("cannot write {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ServeError::BadRequest(format!("cannot read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > files.max_model_size {
                return Err(files.over_limit(what, None));
            }
            hasher.update(&data);
            file.write_all(&data)
                .await
                .map_err(|e| internal(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    file.sync_all().await.map_err(internal)?;
    Ok(registry::hex(hasher))
}

// ---------------------------------------------------------------------------------------
// /api/copy, /api/delete, /api/push

#[derive(Debug, Deserialize, Default)]
struct NameRequest {
    model: Option<String>,
    name: Option<String>,
    source: Option<String>,
    destination: Option<String>,
}

/// `POST /api/copy`: `destination` becomes another name for `source` (a manifest sharing its
/// blob; a plain file is first put into the blob store, copied, never linked).
pub async fn copy(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: NameRequest = read_json(request, state.max_body).await?;
    let (Some(source), Some(destination)) = (body.source, body.destination) else {
        return Err(ServeError::BadRequest(
            "source and destination are required".into(),
        ));
    };
    let file = state.models.find(&source)?;
    let destination = parse_name(&destination)?;
    let dir = models_dir(state)?;
    let manifest = match file.manifest.as_deref() {
        Some(manifest) => manifest.clone(),
        None => {
            let shown = file.path.display().to_string();
            let src = open_own(&file.path)?;
            let progress = Progress { tx: None };
            let hex = import(&state.files, &dir, src, shown, None, false, &progress).await?;
            Manifest {
                gguf: PathBuf::from("blobs").join(format!("sha256-{hex}")),
                sha256: Some(hex),
                source: Some(file.path.display().to_string()),
                ..Manifest::default()
            }
        }
    };
    blocking(move || {
        registry::write_manifest(&dir, &destination, &manifest).map_err(|e| e.to_string())
    })
    .await?;
    Ok(empty(StatusCode::OK))
}

/// `DELETE /api/delete`: removes a named model (and its blob when no other name uses it) or a
/// model file of the models directory; a `--model` file is refused. The model is unloaded.
pub async fn delete(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: NameRequest = read_json(request, state.max_body).await?;
    let text = model_name(body.model, body.name)?;
    let file = state.models.find(&text)?;
    if !state.models.in_models_dir(&file.path) && file.manifest.is_none() {
        return Err(ServeError::BadRequest(format!(
            "model \"{text}\" was given with --model; rawrxd serve only deletes models in its \
             models directory"
        )));
    }
    state.models.unload(&text);
    let dir = models_dir(state)?;
    match &file.manifest {
        Some(_) => {
            let name = parse_name(&text)?;
            blocking(move || registry::remove_manifest(&dir, &name).map_err(|e| e.to_string()))
                .await?;
        }
        None => std::fs::remove_file(&file.path)
            .map_err(|e| internal(format!("cannot delete {}: {e}", file.path.display())))?,
    }
    Ok(empty(StatusCode::OK))
}

/// `POST /api/push`: there is no registry to push to; the answer says so (never a silent
/// success).
pub async fn push(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: NameRequest = read_json(request, state.max_body).await?;
    let text = model_name(body.model, body.name)?;
    parse_name(&text)?;
    Err(ServeError::BadRequest(format!(
        "pushing models is not supported by rawrxd serve: it has no registry to push \"{text}\" \
         to. Its GGUF file is listed in /api/show's modelfile (FROM); copy that file, or pull \
         it on another machine with /api/pull from a path or URL"
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
