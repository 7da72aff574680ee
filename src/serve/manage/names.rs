//! `/api/copy`, `/api/delete` (blobs no other model uses go with it), and `/api/push` (refused
//! with a clear error: there is no registry to push to).

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct NameRequest {
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
