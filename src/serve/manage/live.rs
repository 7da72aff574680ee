//! Live weight patches: `POST /rawrxd/models/{name}/patch` applies a plan (`{"ops": [...]}`
//! in the JSON form of `rawrxd gguf patch`'s operations, or `{"plan": "<TOML>"}`) to a copy of
//! the model's file, loads the copy, and only then makes the name serve it: **requests already
//! running keep the engine they hold and finish on the old weights; the next request gets the
//! new ones**. `POST /rawrxd/models/{name}/revert` undoes the last patch (the name serves the
//! file before it again; the original file is never written) and removes its copy.
//!
//! The copies live in `<models dir>/.rawrxd-patches/` (a hidden folder the model scan skips;
//! the system temporary folder without a models directory), with their patch set and backup.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::super::http::{json, read_json, ServeBody, ServeError};
use super::super::models::LivePatch;
use super::super::ServeState;
use crate::gguf::patch::{patch_file, Op, Plan};
use crate::gguf::GgufError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRequest {
    #[serde(default)]
    ops: Vec<Op>,
    /// A plan file's text (TOML `[[op]]` tables), instead of `ops`.
    #[serde(default)]
    plan: Option<String>,
}

fn gguf_error(e: GgufError) -> ServeError {
    match e {
        GgufError::Refused(m) | GgufError::Mismatch(m) => ServeError::BadRequest(m),
        other => ServeError::Internal(other.to_string()),
    }
}

/// `POST /rawrxd/models/{name}/patch` and `…/revert`; `rest` is the path after
/// `/rawrxd/models/`.
pub async fn live(
    state: &ServeState,
    rest: &str,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    match rest.rsplit_once('/') {
        Some((name, "patch")) if !name.is_empty() => patch(state, name, request).await,
        Some((name, "revert")) if !name.is_empty() => revert(state, name),
        _ => Err(ServeError::NotFound(
            "use POST /rawrxd/models/{name}/patch or /rawrxd/models/{name}/revert".into(),
        )),
    }
}

async fn patch(
    state: &ServeState,
    name: &str,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: PatchRequest = read_json(request, state.max_body).await?;
    let ops = match (body.ops.is_empty(), body.plan) {
        (false, None) => body.ops,
        (true, Some(text)) => {
            toml::from_str::<Plan>(&text)
                .map_err(|e| ServeError::BadRequest(format!("invalid plan: {e}")))?
                .ops
        }
        _ => {
            return Err(ServeError::BadRequest(
                "give either \"ops\" (a list of operations) or \"plan\" (TOML text)".into(),
            ))
        }
    };
    if ops.is_empty() {
        return Err(ServeError::BadRequest("the plan has no operations".into()));
    }
    let current = state.models.find(name)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = state
        .models
        .models_dir()
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(".rawrxd-patches");
    let stem = current.tagged().replace(['/', ':'], "-");
    let out = dir.join(format!(
        "{stem}-{}-{}.gguf",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let src = current.path.clone();
    let target = out.clone();
    let done = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(target.parent().unwrap_or(&target))
            .map_err(GgufError::io(&target))?;
        patch_file(&src, &ops, None, &target, None)
    })
    .await
    .map_err(|e| ServeError::Internal(e.to_string()))?
    .map_err(gguf_error)?;
    let extra_files = vec![done.patch_set_path.clone(), done.backup_path.clone()];
    let remove = |files: &[PathBuf]| {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    };
    let file = match state.models.file_at(&current, &out) {
        Ok(file) => file,
        Err(e) => {
            remove(&extra_files);
            return Err(ServeError::Internal(format!("{}: {e}", out.display())));
        }
    };
    // Loaded before the swap: a copy that fails to load is never served.
    let loaded = match state.models.load_file(&file, None).await {
        Ok((loaded, _)) => loaded,
        Err(e) => {
            remove(&extra_files);
            let _ = std::fs::remove_file(&out);
            return Err(e.into());
        }
    };
    state.models.push_patch(
        name,
        LivePatch {
            file,
            patch_set: done.patch_set.clone(),
            extra_files,
        },
    );
    tracing::info!(model = %current.tagged(), file = %out.display(), "weight patch applied");
    Ok(json(&json!({
        "model": current.tagged(),
        "file": out.display().to_string(),
        "bytes_patched": done.bytes_patched,
        "load_duration": loaded.load_duration.as_nanos() as u64,
        "patch_set": done.patch_set,
        "patches": state.models.patch_sets(name).len(),
    })))
}

fn revert(state: &ServeState, name: &str) -> Result<Response<ServeBody>, ServeError> {
    // The name must exist (a 404 names it), then it must have a patch.
    let _ = state.models.find(name)?;
    let popped = state
        .models
        .pop_patch(name)
        .ok_or_else(|| ServeError::Conflict(format!("model {name:?} has no weight patch")))?;
    // Running requests on the patched engine keep its (already mapped) file.
    for f in popped.extra_files.iter().chain([&popped.file.path]) {
        let _ = std::fs::remove_file(f);
    }
    let now = state.models.find(name)?;
    tracing::info!(model = %name, file = %now.path.display(), "weight patch reverted");
    Ok(json(&json!({
        "model": name,
        "file": now.path.display().to_string(),
        "patches": state.models.patch_sets(name).len(),
    })))
}
