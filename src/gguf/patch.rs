//! Reversible weight patches: a plan of operations (`scale`, `zero`, `bypass_layer`, `copy`,
//! `swap`, `write`) applied to a copy of a model, the patch set that records every touched
//! tensor's sha256 before and after, the gzip backup of the touched tensors' original bytes,
//! and `revert`, which puts them back after checking both hashes.
//!
//! **The source file is never written, and the output appears whole or not at all**: the source
//! is copied (`std::fs::copy`: `copy_file_range`, a reflink where the file system has them) to a
//! temporary file next to the output, only the touched tensors' bytes are rewritten in it, it
//! is synced and renamed into place. Every operation is checked against the header (tensor
//! names, types, shapes, byte ranges) before anything is copied.
//!
//! A plan (TOML):
//!
//! ```toml
//! [[op]]
//! op = "scale"          # multiply: f32/f16/bf16 per element, block types by their scales
//! tensor = "blk.0.attn_q.weight"
//! factor = 2.0
//! [[op]]
//! op = "bypass_layer"   # zero blk.N.attn_output.weight and blk.N.ffn_down.weight
//! layer = 3
//! [[op]]
//! op = "write"          # raw bytes (hex) at a byte offset inside a tensor's data
//! tensor = "output_norm.weight"
//! offset = 0
//! hex = "0000803f"
//! ```
//!
//! plus `zero` (`tensor`), `copy` (`from`, `to`) and `swap` (`a`, `b`) between tensors of the
//! same type and shape.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::hash::{hex, sha256_range};
use super::read::Gguf;
use super::types::TensorInfo;
use super::{quant, read_file, GgufError};

/// One operation of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Scale {
        tensor: String,
        factor: f32,
    },
    Zero {
        tensor: String,
    },
    BypassLayer {
        layer: u32,
    },
    Copy {
        from: String,
        to: String,
    },
    Swap {
        a: String,
        b: String,
    },
    Write {
        tensor: String,
        offset: u64,
        hex: String,
    },
}

/// A plan file: `[[op]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(rename = "op", default)]
    pub ops: Vec<Op>,
}

/// A tensor's sha256 before and after one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub tensor: String,
    pub before: String,
    pub after: String,
}

/// A tensor the patch touched, in the order of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub tensor: String,
    pub size: u64,
    /// sha256 of its bytes in the source.
    pub original: String,
    /// sha256 of its bytes in the output.
    pub patched: String,
}

/// What a patch did: written next to the output, re-applicable with `patch --plan`, and what
/// `revert` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSet {
    /// Format version (1).
    pub rawrxd_patch_set: u32,
    pub source: String,
    pub output: String,
    pub ops: Vec<Op>,
    /// Per operation, the tensors it changed.
    pub changes: Vec<Vec<Change>>,
    pub tensors: Vec<Touched>,
    /// The gzip backup of the touched tensors' original bytes (concatenated in `tensors`
    /// order), relative to the patch set's folder.
    pub backup: String,
}

/// What [`patch_file`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub patch_set: PatchSet,
    pub patch_set_path: PathBuf,
    pub backup_path: PathBuf,
    /// Bytes of tensor data rewritten in the copy.
    pub bytes_patched: u64,
    /// Bytes the copy of the source took (done by the kernel, no user-space pass).
    pub bytes_copied: u64,
    /// Bytes of the gzip backup.
    pub backup_bytes: u64,
}

fn refused(m: impl Into<String>) -> GgufError {
    GgufError::Refused(m.into())
}

/// Reads a plan: a TOML plan, or a patch set (`.json`) to re-apply — then every tensor's hash
/// before each operation must match the recorded one.
pub fn load_plan(path: &Path) -> Result<(Vec<Op>, Option<PatchSet>), GgufError> {
    let text = std::fs::read_to_string(path).map_err(GgufError::io(path))?;
    if path.extension().is_some_and(|e| e == "json") {
        let set: PatchSet = serde_json::from_str(&text)
            .map_err(|e| refused(format!("{}: not a patch set: {e}", path.display())))?;
        if set.changes.len() != set.ops.len() {
            return Err(refused(format!(
                "{}: {} operations but {} change records",
                path.display(),
                set.ops.len(),
                set.changes.len()
            )));
        }
        return Ok((set.ops.clone(), Some(set)));
    }
    let plan: Plan = toml::from_str(&text)
        .map_err(|e| refused(format!("{}: invalid plan: {e}", path.display())))?;
    if plan.ops.is_empty() {
        return Err(refused(format!(
            "{}: the plan has no [[op]]",
            path.display()
        )));
    }
    Ok((plan.ops, None))
}

/// The tensors an operation touches, checked against the header: `(tensor, what to do)`.
enum Step<'a> {
    Scale(&'a TensorInfo, f32),
    Zero(&'a TensorInfo),
    Copy(&'a TensorInfo, &'a TensorInfo),
    Swap(&'a TensorInfo, &'a TensorInfo),
    Write(&'a TensorInfo, u64, Vec<u8>),
}

fn find<'a>(g: &'a Gguf, name: &str) -> Result<&'a TensorInfo, GgufError> {
    g.tensor(name)
        .ok_or_else(|| refused(format!("no tensor named {name:?} in the model")))
}

fn same_shape(a: &TensorInfo, b: &TensorInfo) -> Result<(), GgufError> {
    if a.type_id != b.type_id || a.elements() != b.elements() || a.dims != b.dims {
        return Err(refused(format!(
            "{} ({} {:?}) and {} ({} {:?}) differ in type or shape",
            a.name,
            a.type_name(),
            a.dims,
            b.name,
            b.type_name(),
            b.dims
        )));
    }
    Ok(())
}

fn zeroable(t: &TensorInfo) -> Result<(), GgufError> {
    if quant::can_scale(t.type_id) {
        return Ok(());
    }
    Err(refused(format!(
        "{} is {}: zeroing is supported for {} (all-zero blocks decode to 0)",
        t.name,
        t.type_name(),
        quant::SCALABLE
    )))
}

fn plan_steps<'a>(g: &'a Gguf, op: &Op) -> Result<Vec<Step<'a>>, GgufError> {
    Ok(match op {
        Op::Scale { tensor, factor } => {
            let t = find(g, tensor)?;
            if !factor.is_finite() {
                return Err(refused(format!(
                    "scale {tensor}: factor {factor} is not finite"
                )));
            }
            if !quant::can_scale(t.type_id) {
                return Err(refused(format!(
                    "scale {tensor}: type {} is not supported (supported: {})",
                    t.type_name(),
                    quant::SCALABLE
                )));
            }
            vec![Step::Scale(t, *factor)]
        }
        Op::Zero { tensor } => {
            let t = find(g, tensor)?;
            zeroable(t)?;
            vec![Step::Zero(t)]
        }
        Op::BypassLayer { layer } => {
            let mut steps = Vec::new();
            for part in ["attn_output", "ffn_down"] {
                let t = find(g, &format!("blk.{layer}.{part}.weight"))
                    .map_err(|e| refused(format!("bypass_layer {layer}: {e}")))?;
                zeroable(t)?;
                steps.push(Step::Zero(t));
            }
            steps
        }
        Op::Copy { from, to } => {
            let (a, b) = (find(g, from)?, find(g, to)?);
            same_shape(a, b)?;
            vec![Step::Copy(a, b)]
        }
        Op::Swap { a, b } => {
            let (a, b) = (find(g, a)?, find(g, b)?);
            same_shape(a, b)?;
            vec![Step::Swap(a, b)]
        }
        Op::Write {
            tensor,
            offset,
            hex,
        } => {
            let t = find(g, tensor)?;
            let bytes = parse_hex(hex).map_err(|e| refused(format!("write {tensor}: {e}")))?;
            let fits = offset
                .checked_add(bytes.len() as u64)
                .is_some_and(|end| end <= t.size);
            if !fits {
                return Err(refused(format!(
                    "write {tensor}: {} bytes at offset {offset} do not fit in its {} bytes",
                    bytes.len(),
                    t.size
                )));
            }
            vec![Step::Write(t, *offset, bytes)]
        }
    })
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if text.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| format!("{:?} is not hex", text.get(i..i + 2).unwrap_or("")))
        })
        .collect()
}

fn read_at(file: &mut File, at: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_at(file: &mut File, at: u64, bytes: &[u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(at))?;
    file.write_all(bytes)
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A temporary file next to its destination, removed unless [`Temp::persist`] renamed it.
struct Temp {
    path: PathBuf,
    keep: bool,
}

impl Temp {
    fn next_to(dest: &Path) -> Temp {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty());
        let tmp = format!(".{name}.rawrxd-tmp-{}", std::process::id());
        Temp {
            path: dir.map_or_else(|| PathBuf::from(&tmp), |d| d.join(&tmp)),
            keep: false,
        }
    }

    fn persist(mut self, dest: &Path) -> Result<(), GgufError> {
        std::fs::rename(&self.path, dest).map_err(GgufError::io(dest))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where the patch set and the backup go by default: `OUT.patch.json`, `OUT.patch.backup.gz`.
pub fn default_patch_set_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".patch.json");
    PathBuf::from(s)
}

fn backup_path_for(patch_set: &Path) -> PathBuf {
    let s = patch_set.to_string_lossy();
    let stem = s.strip_suffix(".json").unwrap_or(&s);
    PathBuf::from(format!("{stem}.backup.gz"))
}

/// Applies `ops` to a copy of `src` written to `out` (atomically), and writes the patch set
/// (`patch_set_path`, default [`default_patch_set_path`]) and the gzip backup next to it.
/// With `expect` (a patch set being re-applied), every tensor's hash before and after each
/// operation must match the recorded ones.
pub fn patch_file(
    src: &Path,
    ops: &[Op],
    expect: Option<&PatchSet>,
    out: &Path,
    patch_set_path: Option<&Path>,
) -> Result<Outcome, GgufError> {
    let g = read_file(src)?;
    let mut planned = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        planned.push(plan_steps(&g, op).map_err(|e| refused(format!("operation {}: {e}", i + 1)))?);
    }
    let tmp = Temp::next_to(out);
    let bytes_copied = std::fs::copy(src, &tmp.path).map_err(GgufError::io(&tmp.path))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tmp.path)
        .map_err(GgufError::io(&tmp.path))?;
    let tmp_path = tmp.path.clone();
    let io = GgufError::io(&tmp_path);

    let mut originals: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut order: Vec<&TensorInfo> = Vec::new();
    let mut changes = Vec::with_capacity(ops.len());
    let mut bytes_patched = 0u64;
    for (i, steps) in planned.iter().enumerate() {
        let mut op_changes = Vec::new();
        for step in steps {
            // (tensor, new bytes) pairs this step writes.
            let mut writes: Vec<(&TensorInfo, Vec<u8>, Vec<u8>)> = Vec::new();
            let mut load = |t: &TensorInfo| read_at(&mut file, g.tensor_start(t), t.size);
            match step {
                Step::Scale(t, factor) => {
                    let old = load(t).map_err(&io)?;
                    let mut new = old.clone();
                    quant::scale(t.type_id, &mut new, *factor)
                        .map_err(|e| refused(format!("operation {}: {}: {e}", i + 1, t.name)))?;
                    writes.push((t, old, new));
                }
                Step::Zero(t) => {
                    let old = load(t).map_err(&io)?;
                    let new = vec![0u8; old.len()];
                    writes.push((t, old, new));
                }
                Step::Copy(a, b) => {
                    let from = load(a).map_err(&io)?;
                    let old = load(b).map_err(&io)?;
                    writes.push((b, old, from));
                }
                Step::Swap(a, b) => {
                    let va = load(a).map_err(&io)?;
                    let vb = load(b).map_err(&io)?;
                    writes.push((a, va.clone(), vb.clone()));
                    writes.push((b, vb, va));
                }
                Step::Write(t, offset, bytes) => {
                    let old = load(t).map_err(&io)?;
                    let mut new = old.clone();
                    let at = usize::try_from(*offset).unwrap_or(usize::MAX);
                    let dst = new
                        .get_mut(at..at.saturating_add(bytes.len()))
                        .ok_or_else(|| refused(format!("write {}: out of range", t.name)))?;
                    dst.copy_from_slice(bytes);
                    writes.push((t, old, new));
                }
            }
            for (t, old, new) in writes {
                let change = Change {
                    tensor: t.name.clone(),
                    before: sha(&old),
                    after: sha(&new),
                };
                if !originals.contains_key(&t.name) {
                    originals.insert(t.name.clone(), old);
                    order.push(t);
                }
                write_at(&mut file, g.tensor_start(t), &new).map_err(&io)?;
                bytes_patched += new.len() as u64;
                op_changes.push(change);
            }
        }
        if let Some(expected) = expect.and_then(|set| set.changes.get(i)) {
            if *expected != op_changes {
                return Err(GgufError::Mismatch(format!(
                    "operation {}: the tensors' hashes differ from the patch set's (is this the \
                     file it was made from?)",
                    i + 1
                )));
            }
        }
        changes.push(op_changes);
    }
    file.sync_all().map_err(&io)?;

    let mut tensors = Vec::with_capacity(order.len());
    for t in &order {
        let original = originals.get(&t.name).map(|b| sha(b)).unwrap_or_default();
        let patched = sha256_range(&mut file, g.tensor_start(t), t.size).map_err(&io)?;
        tensors.push(Touched {
            tensor: t.name.clone(),
            size: t.size,
            original,
            patched,
        });
    }
    drop(file);

    let patch_set_path =
        patch_set_path.map_or_else(|| default_patch_set_path(out), Path::to_path_buf);
    let backup_path = backup_path_for(&patch_set_path);
    let backup_tmp = Temp::next_to(&backup_path);
    {
        let f = File::create(&backup_tmp.path).map_err(GgufError::io(&backup_tmp.path))?;
        let mut gz =
            flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast());
        for t in &order {
            if let Some(bytes) = originals.get(&t.name) {
                gz.write_all(bytes)
                    .map_err(GgufError::io(&backup_tmp.path))?;
            }
        }
        let w = gz.finish().map_err(GgufError::io(&backup_tmp.path))?;
        let f = w
            .into_inner()
            .map_err(|e| GgufError::io(&backup_tmp.path)(e.into_error()))?;
        f.sync_all().map_err(GgufError::io(&backup_tmp.path))?;
    }
    let backup_bytes = std::fs::metadata(&backup_tmp.path)
        .map(|m| m.len())
        .unwrap_or(0);
    let patch_set = PatchSet {
        rawrxd_patch_set: 1,
        source: src.display().to_string(),
        output: out.display().to_string(),
        ops: ops.to_vec(),
        changes,
        tensors,
        backup: backup_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let json = serde_json::to_string_pretty(&patch_set)
        .map_err(|e| refused(format!("cannot encode the patch set: {e}")))?;
    let set_tmp = Temp::next_to(&patch_set_path);
    std::fs::write(&set_tmp.path, json + "\n").map_err(GgufError::io(&set_tmp.path))?;

    tmp.persist(out)?;
    backup_tmp.persist(&backup_path)?;
    set_tmp.persist(&patch_set_path)?;
    Ok(Outcome {
        patch_set,
        patch_set_path,
        backup_path,
        bytes_patched,
        bytes_copied,
        backup_bytes,
    })
}

/// Reads a patch set file.
pub fn load_patch_set(path: &Path) -> Result<PatchSet, GgufError> {
    let text = std::fs::read_to_string(path).map_err(GgufError::io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| refused(format!("{}: not a patch set: {e}", path.display())))
}

/// Restores the original bytes of every tensor `patch_set_path` records into a copy of
/// `patched`, written to `out` (atomically; `out` may be `patched`). Each tensor's current hash
/// must be the recorded patched one, and each backed-up block must hash to the recorded
/// original. Returns the bytes restored.
pub fn revert_file(patched: &Path, patch_set_path: &Path, out: &Path) -> Result<u64, GgufError> {
    let set = load_patch_set(patch_set_path)?;
    let g = read_file(patched)?;
    let mut src = File::open(patched).map_err(GgufError::io(patched))?;
    let mut targets = Vec::with_capacity(set.tensors.len());
    for rec in &set.tensors {
        let t = find(&g, &rec.tensor)?;
        if t.size != rec.size {
            return Err(GgufError::Mismatch(format!(
                "tensor {} is {} bytes, the patch set says {}",
                t.name, t.size, rec.size
            )));
        }
        let now =
            sha256_range(&mut src, g.tensor_start(t), t.size).map_err(GgufError::io(patched))?;
        if now != rec.patched {
            return Err(GgufError::Mismatch(format!(
                "tensor {}: sha256 {now} is not the patched {} the patch set recorded (a \
                 different file, or changed since)",
                t.name, rec.patched
            )));
        }
        targets.push((t, rec));
    }
    drop(src);
    let dir = patch_set_path.parent().unwrap_or(Path::new(""));
    let backup = dir.join(&set.backup);
    let gz = File::open(&backup).map_err(GgufError::io(&backup))?;
    let mut gz = flate2::read::GzDecoder::new(std::io::BufReader::new(gz));

    let tmp = Temp::next_to(out);
    std::fs::copy(patched, &tmp.path).map_err(GgufError::io(&tmp.path))?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(&tmp.path)
        .map_err(GgufError::io(&tmp.path))?;
    let mut restored = 0u64;
    for (t, rec) in targets {
        // The size is the tensor's, checked against the file's header above.
        let mut bytes = vec![0u8; usize::try_from(t.size).unwrap_or(0)];
        gz.read_exact(&mut bytes).map_err(GgufError::io(&backup))?;
        let got = sha(&bytes);
        if got != rec.original {
            return Err(GgufError::Mismatch(format!(
                "backup of tensor {}: sha256 {got} is not the original {} (a damaged or wrong \
                 backup; nothing written)",
                t.name, rec.original
            )));
        }
        write_at(&mut file, g.tensor_start(t), &bytes).map_err(GgufError::io(&tmp.path))?;
        restored += t.size;
    }
    let mut rest = [0u8; 1];
    if gz.read(&mut rest).map_err(GgufError::io(&backup))? != 0 {
        return Err(GgufError::Mismatch(format!(
            "{} holds more than the patch set's tensors",
            backup.display()
        )));
    }
    file.sync_all().map_err(GgufError::io(&tmp.path))?;
    drop(file);
    tmp.persist(out)?;
    Ok(restored)
}
