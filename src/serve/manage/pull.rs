//! `/api/pull`: a local GGUF path (imported like `create`) or an http(s) URL — resumable ranged
//! download with `If-Range`, retries, NDJSON progress, every redirect checked by the egress
//! policy, sha256 verified before the model is registered.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct PullRequest {
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
pub(super) enum Source {
    Url(reqwest::Url),
    /// A server-side file inside `serve.import_dirs`, open, and the path the client gave.
    File(Importable, PathBuf),
}

pub(super) fn looks_like_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

pub(super) fn looks_like_path(text: &str) -> bool {
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
pub(super) fn short_hash(text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    registry::hex(hasher)[..16].to_string()
}

/// What a partial download was fetched from: a resumed range is only appended when the file
/// on the server is still the same one (`If-Range` with these validators).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct PartialInfo {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: Option<u64>,
}

pub(super) fn header_text(
    response: &reqwest::Response,
    name: header::HeaderName,
) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Most redirects a download follows.
pub(super) const MAX_REDIRECTS: usize = 5;

/// Why a request of a download failed.
pub(super) enum Fetch {
    /// The pull policy refuses the address (or a redirect's): never retried.
    Refused(String),
    /// Anything else (connection, protocol): retried.
    Failed(String),
}

/// GETs `url` with `headers`, following redirects by hand so that each hop is checked
/// against the pull policy and its headers are seen: Hugging Face answers a model file's URL
/// with a redirect whose `X-Linked-Etag` is the file's sha256, which becomes the expected
/// digest when the request named none. Returns the final response and that digest.
pub(super) async fn get_following(
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
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
pub(super) fn content_range(response: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let text = header_text(response, header::CONTENT_RANGE)?;
    let rest = text.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// A progress line for bytes moved (Ollama's `status`/`completed`/`total`/`digest`).
pub(super) fn bytes_line(
    status: &str,
    completed: u64,
    total: Option<u64>,
    digest: Option<&str>,
) -> Value {
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
pub(super) async fn forget(partial: &Path, info: &Path) {
    let _ = tokio::fs::remove_file(partial).await;
    let _ = tokio::fs::remove_file(info).await;
}

/// Counts one failed attempt: gives up with `give_up` after [`DOWNLOAD_ATTEMPTS`], else
/// reports `status` and waits `backoff_ms` × attempts before the caller tries again.
pub(super) async fn retry(
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
pub(super) async fn download(
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
