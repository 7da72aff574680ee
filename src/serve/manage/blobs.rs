//! `/api/blobs/:digest`: `HEAD` (is it stored?) and `POST` (upload, sha256 checked while it
//! streams in, size-capped), as the official clients use for `create` with `files`.

use super::*;

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
pub(super) async fn receive(
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
