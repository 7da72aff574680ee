//! Reads a GGUF file's metadata header (not its tensors) into JSON values, for `/api/tags`,
//! `/api/show` and the chat-template fallback, without loading the model.
//!
//! The layout (ggml `docs/gguf.md`): magic `GGUF`, version `u32` (2 or 3), tensor count `u64`,
//! key/value count `u64`, then each pair as a length-prefixed key, a `u32` type and the value.
//! Every length is checked against what is left of the file before anything is allocated.

use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

/// Arrays longer than this are reported as `null` (tokenizer vocabularies), like Ollama's
/// `/api/show` without `verbose`.
const MAX_ARRAY_SHOWN: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF file: {reason}")]
    Invalid { path: String, reason: String },
}

/// The metadata of one GGUF file, in file order.
#[derive(Debug, Clone, Default)]
pub struct GgufMeta {
    pub version: u32,
    pub tensor_count: u64,
    pub kv: Map<String, Value>,
}

impl GgufMeta {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.kv.get(key).and_then(Value::as_u64)
    }

    pub fn architecture(&self) -> &str {
        self.str("general.architecture").unwrap_or("")
    }

    /// `general.file_type` as llama.cpp's quantization name (`Q4_K_M`, …).
    pub fn quantization(&self) -> String {
        let name = match self.u64("general.file_type") {
            Some(0) => "F32",
            Some(1) => "F16",
            Some(2) => "Q4_0",
            Some(3) => "Q4_1",
            Some(7) => "Q8_0",
            Some(8) => "Q5_0",
            Some(9) => "Q5_1",
            Some(10) => "Q2_K",
            Some(11) => "Q3_K_S",
            Some(12) => "Q3_K_M",
            Some(13) => "Q3_K_L",
            Some(14) => "Q4_K_S",
            Some(15) => "Q4_K_M",
            Some(16) => "Q5_K_S",
            Some(17) => "Q5_K_M",
            Some(18) => "Q6_K",
            Some(32) => "BF16",
            Some(other) => return format!("type {other}"),
            None => "unknown",
        };
        name.to_string()
    }
}

struct Reader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if n > self.left {
            return Err(format!(
                "a length of {n} bytes runs past the end of the file"
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("read failed: {e}"))?;
        self.left -= n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let v = self.bytes(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        let bytes = self.bytes(len)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::from(self.array::<1>()?[0]),
            1 => Value::from(i8::from_le_bytes(self.array()?)),
            2 => Value::from(u16::from_le_bytes(self.array()?)),
            3 => Value::from(i16::from_le_bytes(self.array()?)),
            4 => Value::from(self.u32()?),
            5 => Value::from(i32::from_le_bytes(self.array()?)),
            6 => float32(f32::from_le_bytes(self.array()?)),
            7 => Value::from(self.array::<1>()?[0] != 0),
            8 => Value::from(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deep".into());
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                // Each element takes at least one byte: a bound before looping.
                if n > self.left {
                    return Err(format!("an array of {n} elements runs past the end"));
                }
                let mut items = Vec::new();
                for _ in 0..n {
                    let v = self.value(elem, depth + 1)?;
                    if n <= MAX_ARRAY_SHOWN {
                        items.push(v);
                    }
                }
                if n <= MAX_ARRAY_SHOWN {
                    Value::Array(items)
                } else {
                    Value::Null
                }
            }
            10 => Value::from(self.u64()?),
            11 => Value::from(i64::from_le_bytes(self.array()?)),
            12 => float(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }
}

/// An `f32` as the shortest decimal that reads back as it (`1e-6`, not `9.99999997e-7`).
fn float32(v: f32) -> Value {
    float(v.to_string().parse().unwrap_or(f64::from(v)))
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Reads the metadata of the GGUF file at `path`.
pub fn read_meta(path: &Path) -> Result<GgufMeta, GgufError> {
    let shown = path.display().to_string();
    let io = |source| GgufError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        left: len,
    };
    parse(&mut r).map_err(|reason| GgufError::Invalid {
        path: shown.clone(),
        reason,
    })
}

fn parse<R: Read>(r: &mut Reader<R>) -> Result<GgufMeta, String> {
    if &r.array::<4>()? != b"GGUF" {
        return Err("bad magic".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported version {version}"));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    let mut kv = Map::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        kv.insert(key, value);
    }
    Ok(GgufMeta {
        version,
        tensor_count,
        kv,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(kv: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((kv.len() as u64).to_le_bytes());
        for (k, ty, v) in kv {
            out.extend((k.len() as u64).to_le_bytes());
            out.extend(k.as_bytes());
            out.extend(ty.to_le_bytes());
            out.extend(v);
        }
        out
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend(s.as_bytes());
        v
    }

    #[test]
    fn reads_strings_numbers_and_arrays() {
        let mut arr = 5u32.to_le_bytes().to_vec();
        arr.extend(2u64.to_le_bytes());
        arr.extend(7i32.to_le_bytes());
        arr.extend((-1i32).to_le_bytes());
        let bytes = header(&[
            ("general.architecture", 8, string("gemma3")),
            ("general.file_type", 4, 15u32.to_le_bytes().to_vec()),
            ("x.list", 9, arr),
        ]);
        let mut r = Reader {
            left: bytes.len() as u64,
            inner: bytes.as_slice(),
        };
        let meta = parse(&mut r).unwrap();
        assert_eq!(meta.architecture(), "gemma3");
        assert_eq!(meta.quantization(), "Q4_K_M");
        assert_eq!(meta.kv["x.list"], serde_json::json!([7, -1]));
    }

    #[test]
    fn rejects_lengths_past_the_end() {
        let mut bytes = header(&[("k", 8, string("abc"))]);
        bytes.truncate(bytes.len() - 1);
        let mut r = Reader {
            left: bytes.len() as u64,
            inner: bytes.as_slice(),
        };
        assert!(parse(&mut r).unwrap_err().contains("past the end"));
    }
}
