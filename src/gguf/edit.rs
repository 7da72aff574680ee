//! `rawrxd gguf set` (typed metadata edits, written to a new file or in place when the size
//! stays the same) and `rawrxd gguf diff` (metadata and tensor differences between two files).
//!
//! `KEY=VALUE` keeps an existing key's type (`general.name=x`); `KEY:TYPE=VALUE` gives the
//! type (`u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str`), required to change an existing
//! key's type, optional for a new key, whose type is otherwise inferred: `true`/`false` → bool,
//! an integer → u32 (i32 if negative, u64/i64 when larger), another number → f32, anything else
//! → str. Arrays cannot be set.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use super::hash::{tensor_hashes, Progress};
use super::read::Gguf;
use super::types::{Value, ValueType};
use super::write::{header_padded, infer_value, parse_value, write_file};
use super::{read_file, GgufError};

fn refused(m: impl Into<String>) -> GgufError {
    GgufError::Refused(m.into())
}

/// Applies `KEY[:TYPE]=VALUE` assignments to a header (then re-lays it out).
pub fn apply_sets(g: &mut Gguf, sets: &[String]) -> Result<(), GgufError> {
    for s in sets {
        let (lhs, text) = s
            .split_once('=')
            .ok_or_else(|| refused(format!("{s:?}: expected KEY=VALUE or KEY:TYPE=VALUE")))?;
        let (key, ty) = match lhs.rsplit_once(':') {
            Some((k, t)) => (
                k,
                Some(ValueType::from_name(t).ok_or_else(|| {
                    refused(format!(
                        "{s:?}: unknown type {t:?} (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str)"
                    ))
                })?),
            ),
            None => (lhs, None),
        };
        if key.is_empty() {
            return Err(refused(format!("{s:?}: empty key")));
        }
        let existing = g.kv.iter().position(|(k, _)| k == key);
        let value = match (ty, existing.and_then(|i| g.kv.get(i))) {
            (Some(t), _) => parse_value(t, text),
            (None, Some((_, old))) => parse_value(old.value_type(), text),
            (None, None) => Ok(infer_value(text)),
        }
        .map_err(|e| refused(format!("{key}: {e}")))?;
        if key == "general.alignment" {
            match value {
                Value::U32(a) if a > 0 && a.is_power_of_two() => {}
                _ => return Err(refused("general.alignment must be a u32 power of two")),
            }
        }
        match existing.and_then(|i| g.kv.get_mut(i)) {
            Some(slot) => slot.1 = value,
            None => g.kv.push((key.to_string(), value)),
        }
    }
    g.relayout();
    Ok(())
}

/// What `set` wrote.
#[derive(Debug, Clone, Copy)]
pub struct SetOutcome {
    pub bytes_written: u64,
    pub in_place: bool,
}

/// `rawrxd gguf set FILE KEY=VALUE… --out NEW`: the new header and the same tensor data, written
/// to a temporary file and renamed to `out`. With `in_place` (and no `out`), only the header is
/// rewritten, and only when the data section does not move (the file's size stays the same).
pub fn set(
    path: &Path,
    sets: &[String],
    out: Option<&Path>,
    in_place: bool,
) -> Result<SetOutcome, GgufError> {
    let old = read_file(path)?;
    let mut new = old.clone();
    apply_sets(&mut new, sets)?;
    if in_place {
        if new.data_offset != old.data_offset {
            return Err(refused(format!(
                "--in-place: the new header needs the data at byte {} instead of {} (the file's \
                 size would change); write a new file with --out",
                new.data_offset, old.data_offset
            )));
        }
        let header = header_padded(&new);
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(GgufError::io(path))?;
        f.seek(SeekFrom::Start(0)).map_err(GgufError::io(path))?;
        f.write_all(&header).map_err(GgufError::io(path))?;
        f.sync_all().map_err(GgufError::io(path))?;
        return Ok(SetOutcome {
            bytes_written: header.len() as u64,
            in_place: true,
        });
    }
    let out = out.ok_or_else(|| refused("give --out NEW (or --in-place)"))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.rawrxd-tmp-{}", std::process::id()));
    let result = (|| {
        let mut src = File::open(path).map_err(GgufError::io(path))?;
        let f = File::create(&tmp).map_err(GgufError::io(&tmp))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let n = write_file(&new, &old, &mut src, &mut w).map_err(GgufError::io(&tmp))?;
        let f = w
            .into_inner()
            .map_err(|e| GgufError::io(&tmp)(e.into_error()))?;
        f.sync_all().map_err(GgufError::io(&tmp))?;
        std::fs::rename(&tmp, out).map_err(GgufError::io(out))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(SetOutcome {
        bytes_written: result?,
        in_place: false,
    })
}

/// The differences between two GGUF files, one line each (empty: the same).
pub fn diff(a: &Path, b: &Path) -> Result<Vec<String>, GgufError> {
    let ga = read_file(a)?;
    let gb = read_file(b)?;
    let mut out = Vec::new();
    if ga.version != gb.version {
        out.push(format!("version: {} → {}", ga.version, gb.version));
    }
    for (k, va) in &ga.kv {
        match gb.get(k) {
            None => out.push(format!("- {k} = {}", va.display(8))),
            Some(vb) if !va.same(vb) => out.push(format!(
                "~ {k}: {} {} → {} {}",
                va.value_type().name(),
                va.display(8),
                vb.value_type().name(),
                vb.display(8)
            )),
            Some(_) => {}
        }
    }
    for (k, vb) in &gb.kv {
        if ga.get(k).is_none() {
            out.push(format!("+ {k} = {}", vb.display(8)));
        }
    }
    let ha = tensor_hashes(a, &ga, &Progress::bytes(ga.data_size, "hashing A"))?;
    let hb = tensor_hashes(b, &gb, &Progress::bytes(gb.data_size, "hashing B"))?;
    for (ta, (_, sa)) in ga.tensors.iter().zip(&ha.tensors) {
        match gb.tensors.iter().position(|t| t.name == ta.name) {
            None => out.push(format!("- tensor {}", ta.name)),
            Some(i) => {
                let (Some(tb), Some((_, sb))) = (gb.tensors.get(i), hb.tensors.get(i)) else {
                    continue;
                };
                if ta.type_id != tb.type_id || ta.dims != tb.dims {
                    out.push(format!(
                        "~ tensor {}: {} {:?} → {} {:?}",
                        ta.name,
                        ta.type_name(),
                        ta.dims,
                        tb.type_name(),
                        tb.dims
                    ));
                } else if sa != sb {
                    out.push(format!("~ tensor {}: data differs ({sa} → {sb})", ta.name));
                }
            }
        }
    }
    for tb in &gb.tensors {
        if ga.tensor(&tb.name).is_none() {
            out.push(format!("+ tensor {}", tb.name));
        }
    }
    let order = |g: &Gguf| g.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if out.is_empty() && order(&ga) != order(&gb) {
        out.push("tensor order differs".into());
    }
    Ok(out)
}
