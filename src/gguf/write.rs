//! Writes GGUF: the header (metadata and tensor directory) from a [`Gguf`], then the aligned
//! tensor data copied from a source file — the layout ggml's `gguf_write_to_file` produces, so
//! reading a file and writing it back unchanged gives the same bytes.

use std::io::{Read, Seek, SeekFrom, Write};

use super::read::Gguf;
use super::types::{Value, ValueType};

/// Appends one value's bytes (without its type id).
pub fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => {
            out.extend(a.elem.id().to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            out.extend(a.raw());
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s);
}

/// The header: magic, version, counts, every key/value pair and tensor info (with the offsets
/// in `g`), without the padding that follows it.
pub fn header_bytes(g: &Gguf) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(g.header_len).unwrap_or(0));
    out.extend(b"GGUF");
    out.extend(g.version.to_le_bytes());
    out.extend((g.tensors.len() as u64).to_le_bytes());
    out.extend((g.kv.len() as u64).to_le_bytes());
    for (key, value) in &g.kv {
        put_string(&mut out, key.as_bytes());
        out.extend(value.value_type().id().to_le_bytes());
        put_value(&mut out, value);
    }
    for t in &g.tensors {
        put_string(&mut out, t.name.as_bytes());
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.type_id.to_le_bytes());
        out.extend(t.offset.to_le_bytes());
    }
    out
}

/// The header followed by its padding up to the data section (`g.data_offset` bytes).
pub fn header_padded(g: &Gguf) -> Vec<u8> {
    let mut out = header_bytes(g);
    let end = usize::try_from(g.data_offset).unwrap_or(out.len());
    if end > out.len() {
        out.resize(end, 0);
    }
    out
}

/// Writes the GGUF file `g` to `out`: its header, then each tensor's data read from `src` (a
/// file or buffer laid out as `src_layout`, with the same tensors in the same order), each padded with
/// zeros to the alignment. The last tensor's padding is written only when `src_layout`'s file
/// had it (ggml always writes it; a few converters do not). Returns the bytes written.
pub fn write_file(
    g: &Gguf,
    src_layout: &Gguf,
    src: &mut (impl Read + Seek),
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    if g.tensors.len() != src_layout.tensors.len()
        || g.tensors
            .iter()
            .zip(&src_layout.tensors)
            .any(|(a, b)| a.size != b.size)
    {
        return Err(invalid("the tensors differ from the source's"));
    }
    let header = header_padded(g);
    out.write_all(&header)?;
    let mut written = header.len() as u64;
    let last_padded =
        src_layout.file_len >= src_layout.data_offset.saturating_add(src_layout.data_size);
    let mut buf = vec![0u8; 1 << 20];
    for (i, (t, s)) in g.tensors.iter().zip(&src_layout.tensors).enumerate() {
        src.seek(SeekFrom::Start(src_layout.tensor_start(s)))?;
        let mut left = t.size;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let chunk = buf.get_mut(..n).ok_or_else(|| invalid("buffer"))?;
            src.read_exact(chunk)?;
            out.write_all(chunk)?;
            left -= n as u64;
        }
        written += t.size;
        let is_last = i + 1 == g.tensors.len();
        if !is_last || last_padded {
            let padded = super::read::pad(t.size, g.alignment).unwrap_or(t.size);
            let zeros = usize::try_from(padded - t.size).unwrap_or(0);
            out.write_all(&vec![0u8; zeros])?;
            written += zeros as u64;
        }
    }
    Ok(written)
}

/// The type a `--set` value without a `:type` takes for a new key: `true`/`false` → bool,
/// an integer → u32 (i32 when negative, u64/i64 when too large), a number → f32, anything
/// else → string.
pub fn infer_value(text: &str) -> Value {
    if text == "true" || text == "false" {
        return Value::Bool(u8::from(text == "true"));
    }
    if let Ok(v) = text.parse::<u32>() {
        return Value::U32(v);
    }
    if let Ok(v) = text.parse::<i32>() {
        return Value::I32(v);
    }
    if let Ok(v) = text.parse::<u64>() {
        return Value::U64(v);
    }
    if let Ok(v) = text.parse::<i64>() {
        return Value::I64(v);
    }
    if let Ok(v) = text.parse::<f32>() {
        if v.is_finite() {
            return Value::F32(v);
        }
    }
    Value::String(text.as_bytes().to_vec())
}

/// `text` as a value of type `t` (scalars and strings only).
pub fn parse_value(t: ValueType, text: &str) -> Result<Value, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{text:?} is not a {}: {e}", t.name());
    Ok(match t {
        ValueType::U8 => Value::U8(text.parse().map_err(|e| bad(&e))?),
        ValueType::I8 => Value::I8(text.parse().map_err(|e| bad(&e))?),
        ValueType::U16 => Value::U16(text.parse().map_err(|e| bad(&e))?),
        ValueType::I16 => Value::I16(text.parse().map_err(|e| bad(&e))?),
        ValueType::U32 => Value::U32(text.parse().map_err(|e| bad(&e))?),
        ValueType::I32 => Value::I32(text.parse().map_err(|e| bad(&e))?),
        ValueType::F32 => Value::F32(text.parse().map_err(|e| bad(&e))?),
        ValueType::U64 => Value::U64(text.parse().map_err(|e| bad(&e))?),
        ValueType::I64 => Value::I64(text.parse().map_err(|e| bad(&e))?),
        ValueType::F64 => Value::F64(text.parse().map_err(|e| bad(&e))?),
        ValueType::Bool => match text {
            "true" | "1" => Value::Bool(1),
            "false" | "0" => Value::Bool(0),
            _ => return Err(bad(&"use true or false")),
        },
        ValueType::String => Value::String(text.as_bytes().to_vec()),
        ValueType::Array => {
            return Err(format!(
                "arrays cannot be set from the command line ({text:?})"
            ))
        }
    })
}
