//! sha256 of whole files, of tensor data, and manifests in llama.cpp's `llama-gguf-hash
//! --sha256` format: one line per tensor, `sha256    <hex>  <file>:<tensor>` (the type name
//! left-aligned in 8 columns, then two spaces, as its `printf("%-8s  %-s  %s\n")`), then the
//! model line `sha256    <hex>  <file>`, the hash of all tensor data in file order (each
//! tensor's bytes without padding; not the file's hash).

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::read::Gguf;
use super::GgufError;

/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_FROM: u64 = 64 << 20;

const BUF: usize = 4 << 20;

/// A progress bar on stderr, only when it is a terminal and the work is large.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn none() -> Progress {
        Progress(None)
    }

    /// A bar for `total` bytes when stderr is a terminal and `total` is large.
    pub fn bytes(total: u64, what: &str) -> Progress {
        if total < PROGRESS_FROM || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Progress(Some(bar))
    }

    fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Feeds `len` bytes of `file` from `start` into each hasher of `hashers`.
fn feed(
    file: &mut File,
    start: u64,
    len: u64,
    hashers: &mut [&mut Sha256],
    buf: &mut [u8],
    progress: &Progress,
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(start))?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let Some(chunk) = buf.get_mut(..n) else {
            break;
        };
        file.read_exact(chunk)?;
        for h in hashers.iter_mut() {
            h.update(&*chunk);
        }
        progress.inc(n as u64);
        left -= n as u64;
    }
    Ok(())
}

/// sha256 of a whole file, as hex.
pub fn sha256_file(path: &Path, progress: &Progress) -> Result<String, GgufError> {
    let mut file = File::open(path).map_err(GgufError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = file.read(&mut buf).map_err(GgufError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
        progress.inc(n as u64);
    }
    Ok(hex(&h.finalize()))
}

/// sha256 of `len` bytes of an open file from `start`, as hex.
pub fn sha256_range(file: &mut File, start: u64, len: u64) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF.min(usize::try_from(len).unwrap_or(BUF)).max(1)];
    feed(file, start, len, &mut [&mut h], &mut buf, &Progress::none())?;
    Ok(hex(&h.finalize()))
}

/// The hashes of a model's tensor data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHashes {
    /// `(tensor name, sha256)` in file order.
    pub tensors: Vec<(String, String)>,
    /// sha256 of all tensor data in file order (llama-gguf-hash's model line).
    pub model: String,
}

/// Hashes every tensor's data (and all of it together), reading only the data section.
pub fn tensor_hashes(
    path: &Path,
    g: &Gguf,
    progress: &Progress,
) -> Result<TensorHashes, GgufError> {
    // Two hashes of every byte (the tensor's and the model line's, as llama-gguf-hash makes
    // them): the model line is computed on a second thread, reading the same (cached) data, so
    // the two run side by side instead of one after the other.
    let each = |progress: &Progress| -> std::io::Result<Vec<(String, String)>> {
        let mut file = File::open(path)?;
        let mut buf = vec![0u8; BUF];
        let mut tensors = Vec::with_capacity(g.tensors.len());
        for t in &g.tensors {
            let mut h = Sha256::new();
            feed(
                &mut file,
                g.tensor_start(t),
                t.size,
                &mut [&mut h],
                &mut buf,
                progress,
            )?;
            tensors.push((t.name.clone(), hex(&h.finalize())));
        }
        Ok(tensors)
    };
    let all = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let mut buf = vec![0u8; BUF];
        let mut model = Sha256::new();
        for t in &g.tensors {
            feed(
                &mut file,
                g.tensor_start(t),
                t.size,
                &mut [&mut model],
                &mut buf,
                &Progress::none(),
            )?;
        }
        Ok(hex(&model.finalize()))
    };
    let (tensors, model) = std::thread::scope(|scope| {
        let model = scope.spawn(all);
        let tensors = each(progress);
        let model = model
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the hashing thread panicked")));
        (tensors, model)
    });
    Ok(TensorHashes {
        tensors: tensors.map_err(GgufError::io(path))?,
        model: model.map_err(GgufError::io(path))?,
    })
}

/// The manifest text, as `llama-gguf-hash --sha256 FILE` prints it (with `--no-layer` when not
/// `per_tensor`); `label` is the file name as given on the command line.
pub fn manifest(label: &str, hashes: &TensorHashes, per_tensor: bool) -> String {
    let mut out = String::new();
    if per_tensor {
        for (name, hash) in &hashes.tensors {
            out.push_str(&format!("{:<8}  {hash}  {label}:{name}\n", "sha256"));
        }
    }
    out.push_str(&format!("{:<8}  {}  {label}\n", "sha256", hashes.model));
    out
}

/// One line of a manifest: the hash and what it is of (`None`: the whole model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestLine {
    pub line: usize,
    pub sha256: String,
    pub tensor: Option<String>,
}

/// Reads the sha256 lines of a manifest (other hash types are skipped, like llama-gguf-hash
/// does for types it is not asked to check); a line names a tensor when the text after its
/// last `:` is one of `tensor_names`.
pub fn parse_manifest(text: &str, tensor_names: &[&str]) -> Result<Vec<ManifestLine>, GgufError> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(hash), Some(target)) = (words.next(), words.next(), words.next())
        else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(GgufError::Refused(format!(
                "manifest line {}: expected `TYPE HASH FILE[:TENSOR]`",
                i + 1
            )));
        };
        if kind != "sha256" {
            continue;
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GgufError::Refused(format!(
                "manifest line {}: {hash:?} is not a sha256",
                i + 1
            )));
        }
        let tensor = target
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| tensor_names.contains(t))
            .map(str::to_string);
        lines.push(ManifestLine {
            line: i + 1,
            sha256: hash.to_ascii_lowercase(),
            tensor,
        });
    }
    if lines.is_empty() {
        return Err(GgufError::Refused(
            "the manifest has no sha256 lines".into(),
        ));
    }
    Ok(lines)
}

/// What `verify --manifest` found.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    pub checked: usize,
    /// One line per mismatch or tensor missing from the file.
    pub problems: Vec<String>,
}

/// Checks `hashes` against the manifest lines.
pub fn check_manifest(lines: &[ManifestLine], hashes: &TensorHashes) -> Verified {
    let mut v = Verified::default();
    for l in lines {
        v.checked += 1;
        let (what, actual) = match &l.tensor {
            Some(name) => (
                format!("tensor {name}"),
                hashes
                    .tensors
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, h)| h.as_str()),
            ),
            None => (
                "model (all tensor data)".to_string(),
                Some(hashes.model.as_str()),
            ),
        };
        match actual {
            Some(h) if h == l.sha256 => {}
            Some(h) => v.problems.push(format!(
                "line {}: {what}: expected {}, got {h}",
                l.line, l.sha256
            )),
            None => v
                .problems
                .push(format!("line {}: {what} is not in the file", l.line)),
        }
    }
    v
}
