//! `/api/create`: a model from a GGUF path, a blob, an existing model or a Modelfile, plus its
//! template, system prompt and parameters.

use super::pull::looks_like_path;
use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct CreateRequest {
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
pub(super) struct Modelfile {
    pub(super) from: Option<String>,
    pub(super) template: Option<String>,
    pub(super) system: Option<String>,
    pub(super) license: Option<String>,
    pub(super) parameters: Map<String, Value>,
}

/// Parses a Modelfile: one instruction per line, `"""…"""` for multi-line values, `#`
/// comments. Unsupported instructions (`ADAPTER`, `MESSAGE`, …) are an error naming them.
pub(super) fn parse_modelfile(text: &str) -> Result<Modelfile, String> {
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
pub(super) const PARAMETERS: &[&str] = &[
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
    "num_keep",
    "tool_choice",
];

pub(super) fn check_parameters(parameters: &Map<String, Value>) -> Result<(), ServeError> {
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
    if let Some(choice) = parameters.get("tool_choice") {
        crate::serve::calls::Choice::parse(Some(choice)).map_err(ServeError::BadRequest)?;
    }
    Ok(())
}

/// What a create starts from.
pub(super) enum Base {
    /// A GGUF file to import (inside `serve.import_dirs`, open).
    Path(Importable),
    /// An uploaded blob.
    Blob(String),
    /// An existing model (its manifest's settings are inherited).
    Model(crate::serve::models::ModelFile),
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
