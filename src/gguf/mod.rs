//! Reads and checks a GGUF file's header — metadata and tensor directory, not the tensor
//! data — into JSON values, for `/api/tags`, `/api/show` and the chat-template fallback, and
//! as the gate every model file passes before llama.cpp's loader sees it.
//!
//! The layout (ggml `docs/gguf.md`): magic `GGUF`, version `u32` (2 or 3), tensor count `u64`,
//! key/value count `u64`, each pair as a length-prefixed key, a `u32` type and the value, then
//! each tensor's name, dimensions, type and data offset, then the aligned tensor data.
//!
//! **Nothing is allocated or skipped before its size has been checked** against what is left
//! of the file and against the caps in [`Limits`] (every string, every array, the whole
//! key/value section, the tensor count), with overflow-checked arithmetic. A crafted file fails
//! with an error that says what is wrong and where; it never aborts the server or makes it
//! allocate more than the caps. The checks include every one ggml's own `gguf.cpp` makes
//! (version, empty and duplicate keys, type ids, nested arrays, `general.alignment`, tensor
//! names, shapes, types, block sizes, contiguous offsets) so a file accepted here is never one
//! ggml's parser rejects or asserts on, plus the tensor data lying inside the file and split
//! models (which would make llama.cpp open sibling files) being refused.
//!
//! Shared by `rawrxd serve` (which reads headers before it loads a model) and the GGUF tooling.
//! May use: nothing else in the crate.

use std::collections::HashSet;
use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

/// Arrays longer than this are reported as `null` (tokenizer vocabularies), like Ollama's
/// `/api/show` without `verbose`; their elements are checked and skipped, never kept.
const MAX_ARRAY_SHOWN: u64 = 64;

/// ggml's `GGML_MAX_NAME`: a tensor name is shorter than this.
const MAX_TENSOR_NAME: u64 = 64;

/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

/// ggml's `GGUF_DEFAULT_ALIGNMENT`.
const DEFAULT_ALIGNMENT: u64 = 32;

/// The smallest tensor directory entry: name length, `n_dims`, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;

/// The smallest key/value pair: key length, a one-byte key, type, a one-byte value.
const MIN_KV: u64 = 8 + 1 + 4 + 1;

/// Caps on what a GGUF header may make the reader hold or walk through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest string (key, value, array element), in bytes.
    pub max_string: u64,
    /// Most elements in one array.
    pub max_array: u64,
    /// Largest key/value section, in bytes (every key, type id, length and value).
    pub max_metadata: u64,
    /// Most tensors.
    pub max_tensors: u64,
}

impl Limits {
    /// 16 MiB per string, 16 Mi elements per array, 64 MiB of metadata, 65,536 tensors:
    /// far above real models (Gemma 3's 262,144-token vocabulary is under 6 MiB of metadata;
    /// the largest models have a few thousand tensors), far below what would hurt the server.
    pub const DEFAULT: Limits = Limits {
        max_string: 16 << 20,
        max_array: 16 << 20,
        max_metadata: 64 << 20,
        max_tensors: 1 << 16,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

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
    /// Where the tensor data starts, in bytes from the start of the file.
    pub data_offset: u64,
    /// Bytes of tensor data (padded to the alignment between tensors).
    pub data_size: u64,
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

/// GGUF value type ids (ggml `gguf_type`).
mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Bytes of one value of a fixed-size type; `None` for strings, arrays and unknown ids.
fn fixed_size(t: u32) -> Option<u64> {
    match t {
        ty::U8 | ty::I8 | ty::BOOL => Some(1),
        ty::U16 | ty::I16 => Some(2),
        ty::U32 | ty::I32 | ty::F32 => Some(4),
        ty::U64 | ty::I64 | ty::F64 => Some(8),
        _ => None,
    }
}

/// `(block size, bytes per block)` of each ggml tensor type, indexed by its id
/// (`ggml_blck_size`, `ggml_type_size` of the llama.cpp rawrxd links; the `gguf_reader` fuzz
/// target checks them against it). `(0, 0)`: an id whose support was removed, which ggml
/// refuses.
pub const TENSOR_TYPES: [(u64, u64); 43] = [
    (1, 4),     // 0 F32
    (1, 2),     // 1 F16
    (32, 18),   // 2 Q4_0
    (32, 20),   // 3 Q4_1
    (0, 0),     // 4 (Q4_2, removed)
    (0, 0),     // 5 (Q4_3, removed)
    (32, 22),   // 6 Q5_0
    (32, 24),   // 7 Q5_1
    (32, 34),   // 8 Q8_0
    (32, 36),   // 9 Q8_1
    (256, 84),  // 10 Q2_K
    (256, 110), // 11 Q3_K
    (256, 144), // 12 Q4_K
    (256, 176), // 13 Q5_K
    (256, 210), // 14 Q6_K
    (256, 292), // 15 Q8_K
    (256, 66),  // 16 IQ2_XXS
    (256, 74),  // 17 IQ2_XS
    (256, 98),  // 18 IQ3_XXS
    (256, 50),  // 19 IQ1_S
    (32, 18),   // 20 IQ4_NL
    (256, 110), // 21 IQ3_S
    (256, 82),  // 22 IQ2_S
    (256, 136), // 23 IQ4_XS
    (1, 1),     // 24 I8
    (1, 2),     // 25 I16
    (1, 4),     // 26 I32
    (1, 8),     // 27 I64
    (1, 8),     // 28 F64
    (256, 56),  // 29 IQ1_M
    (1, 2),     // 30 BF16
    (0, 0),     // 31 (Q4_0_4_4, removed)
    (0, 0),     // 32 (Q4_0_4_8, removed)
    (0, 0),     // 33 (Q4_0_8_8, removed)
    (256, 54),  // 34 TQ1_0
    (256, 66),  // 35 TQ2_0
    (0, 0),     // 36 (IQ4_NL_4_4, removed)
    (0, 0),     // 37 (IQ4_NL_4_8, removed)
    (0, 0),     // 38 (IQ4_NL_8_8, removed)
    (32, 17),   // 39 MXFP4
    (64, 36),   // 40 NVFP4
    (128, 18),  // 41 Q1_0
    (64, 18),   // 42 Q2_0
];

/// A bounded reader: knows how much of the file is left and how much of the metadata budget.
struct Reader<R> {
    inner: R,
    /// Bytes read so far (the current offset in the file).
    pos: u64,
    /// The file's length.
    len: u64,
    /// Metadata bytes that may still be read (`None` outside the key/value section).
    budget: Option<u64>,
    limits: Limits,
}

type Result<T, E = String> = std::result::Result<T, E>;

impl<R: Read> Reader<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Checks that `n` more bytes (`what`) exist and fit the metadata budget; reads nothing.
    fn need(&self, n: u64, what: &str) -> Result<()> {
        if n > self.left() {
            return Err(format!(
                "at byte {}: {what} of {n} bytes runs past the end of the file ({} bytes left)",
                self.pos,
                self.left()
            ));
        }
        if let Some(budget) = self.budget {
            if n > budget {
                return Err(format!(
                    "at byte {}: {what} of {n} bytes makes the metadata larger than the cap of {} \
                     bytes",
                    self.pos, self.limits.max_metadata
                ));
            }
        }
        Ok(())
    }

    fn advance(&mut self, n: u64) {
        self.pos += n;
        if let Some(budget) = self.budget.as_mut() {
            *budget -= n;
        }
    }

    /// Reads `n` bytes, after checking they exist.
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        self.need(n, what)?;
        let size = usize::try_from(n).map_err(|_| format!("{what} of {n} bytes is too large"))?;
        let mut buf = vec![0u8; size];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("at byte {}: read failed: {e}", self.pos))?;
        self.advance(n);
        Ok(buf)
    }

    /// Skips `n` bytes without keeping them, after checking they exist.
    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        self.need(n, what)?;
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| format!("at byte {}: read failed: {e}", self.pos))?;
        if copied != n {
            return Err(format!(
                "at byte {}: the file ended early",
                self.pos + copied
            ));
        }
        self.advance(n);
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        self.need(N as u64, what)?;
        let mut out = [0u8; N];
        self.inner
            .read_exact(&mut out)
            .map_err(|e| format!("at byte {}: read failed: {e}", self.pos))?;
        self.advance(N as u64);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// A string's length, checked against `cap` and the file before anything is allocated.
    fn string_len(&mut self, what: &str, cap: u64) -> Result<u64> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > cap {
            return Err(format!(
                "at byte {at}: {what} is {len} bytes long, more than the cap of {cap}"
            ));
        }
        self.need(len, what)?;
        Ok(len)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.string_len(what, self.limits.max_string)?;
        let bytes = self.bytes(len, what)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn skip_string(&mut self, what: &str) -> Result<()> {
        let len = self.string_len(what, self.limits.max_string)?;
        self.skip(len, what)
    }

    /// One value of type `t` (never an array: see [`Reader::array_value`]).
    fn scalar(&mut self, t: u32) -> Result<Value> {
        const WHAT: &str = "a value";
        Ok(match t {
            ty::U8 => Value::from(self.array::<1>(WHAT)?[0]),
            ty::I8 => Value::from(i8::from_le_bytes(self.array(WHAT)?)),
            ty::U16 => Value::from(u16::from_le_bytes(self.array(WHAT)?)),
            ty::I16 => Value::from(i16::from_le_bytes(self.array(WHAT)?)),
            ty::U32 => Value::from(self.u32(WHAT)?),
            ty::I32 => Value::from(i32::from_le_bytes(self.array(WHAT)?)),
            ty::F32 => float32(f32::from_le_bytes(self.array(WHAT)?)),
            ty::BOOL => Value::from(self.array::<1>(WHAT)?[0] != 0),
            ty::STRING => Value::from(self.string("a string value")?),
            ty::U64 => Value::from(self.u64(WHAT)?),
            ty::I64 => Value::from(i64::from_le_bytes(self.array(WHAT)?)),
            ty::F64 => float(f64::from_le_bytes(self.array(WHAT)?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }

    /// An array (after its `ARRAY` type id): element type, count, elements. Arrays longer than
    /// [`MAX_ARRAY_SHOWN`] are walked (each string length checked) and reported as `null`.
    fn array_value(&mut self) -> Result<Value> {
        let at = self.pos;
        let elem = self.u32("an array's element type")?;
        if elem == ty::ARRAY {
            return Err(format!(
                "at byte {at}: nested arrays are not valid GGUF (ggml refuses them)"
            ));
        }
        let min = match (elem, fixed_size(elem)) {
            (_, Some(size)) => size,
            (ty::STRING, None) => 8,
            _ => return Err(format!("at byte {at}: unknown array element type {elem}")),
        };
        let n = self.u64("an array's length")?;
        if n > self.limits.max_array {
            return Err(format!(
                "at byte {at}: an array of {n} elements is longer than the cap of {}",
                self.limits.max_array
            ));
        }
        let bytes = n
            .checked_mul(min)
            .ok_or_else(|| format!("at byte {at}: an array of {n} elements overflows"))?;
        self.need(bytes, "an array")?;
        if n <= MAX_ARRAY_SHOWN {
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(self.scalar(elem)?);
            }
            return Ok(Value::Array(items));
        }
        if elem == ty::STRING {
            for _ in 0..n {
                self.skip_string("a string in an array")?;
            }
        } else {
            self.skip(bytes, "an array")?;
        }
        Ok(Value::Null)
    }
}

/// An `f32` as the shortest decimal that reads back as it (`1e-6`, not `9.99999997e-7`).
fn float32(v: f32) -> Value {
    float(v.to_string().parse().unwrap_or(f64::from(v)))
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// `x` rounded up to a multiple of `align` (a power of two); `None` on overflow.
fn pad(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

/// Reads and checks the header of the GGUF file at `path` with the default [`Limits`].
pub fn read_meta(path: &Path) -> Result<GgufMeta, GgufError> {
    read_meta_with(path, Limits::DEFAULT)
}

/// [`read_meta`] with other caps.
pub fn read_meta_with(path: &Path, limits: Limits) -> Result<GgufMeta, GgufError> {
    let shown = path.display().to_string();
    let io = |source| GgufError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(GgufError::Invalid {
            path: shown,
            reason: "not a regular file".into(),
        });
    }
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        len: meta.len(),
        budget: None,
        limits,
    };
    parse(&mut r).map_err(|reason| GgufError::Invalid {
        path: shown.clone(),
        reason,
    })
}

/// Reads and checks a GGUF header held in memory (`bytes` is the whole file).
pub fn parse_bytes(bytes: &[u8], limits: Limits) -> Result<GgufMeta, GgufError> {
    let mut r = Reader {
        inner: bytes,
        pos: 0,
        len: bytes.len() as u64,
        budget: None,
        limits,
    };
    parse(&mut r).map_err(|reason| GgufError::Invalid {
        path: "<memory>".into(),
        reason,
    })
}

fn parse<R: Read>(r: &mut Reader<R>) -> Result<GgufMeta> {
    if &r.array::<4>("the magic")? != b"GGUF" {
        return Err("bad magic (the file does not start with \"GGUF\")".into());
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported version {version} (2 and 3 are)"));
    }
    let tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the key/value count")?;
    if tensor_count > r.limits.max_tensors {
        return Err(format!(
            "{tensor_count} tensors is more than the cap of {}",
            r.limits.max_tensors
        ));
    }
    // Bounds before any loop: every pair and tensor entry takes a minimum number of bytes.
    let fits = kv_count
        .checked_mul(MIN_KV)
        .and_then(|kv| tensor_count.checked_mul(MIN_TENSOR_INFO)?.checked_add(kv))
        .is_some_and(|least| least <= r.left());
    if !fits {
        return Err(format!(
            "{kv_count} key/value pairs and {tensor_count} tensors cannot fit in the {} bytes \
             left",
            r.left()
        ));
    }

    r.budget = Some(r.limits.max_metadata);
    let mut kv = Map::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..kv_count {
        let at = r.pos;
        let key = r.string("a key")?;
        if key.is_empty() {
            return Err(format!("at byte {at}: an empty key"));
        }
        if kv.contains_key(&key) {
            return Err(format!("at byte {at}: duplicate key {key:?}"));
        }
        let t = r.u32("a value type")?;
        let value = match t {
            ty::ARRAY => r.array_value()?,
            _ => r.scalar(t).map_err(|e| format!("key {key:?}: {e}"))?,
        };
        match key.as_str() {
            "general.alignment" => {
                let a = value
                    .as_u64()
                    .filter(|_| t == ty::U32)
                    .ok_or_else(|| format!("general.alignment must be a u32, not type {t}"))?;
                if a == 0 || !a.is_power_of_two() {
                    return Err(format!("general.alignment {a} is not a power of two"));
                }
                alignment = a;
            }
            "split.count" if value.as_u64().is_some_and(|n| n > 1) => {
                return Err(format!(
                    "a split model ({value} files); rawrxd serves single files: merge them with \
                     llama-gguf-split --merge"
                ));
            }
            _ => {}
        }
        kv.insert(key, value);
    }
    r.budget = None;

    let mut names = HashSet::new();
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let at = r.pos;
        let len = r.string_len("a tensor name", MAX_TENSOR_NAME - 1)?;
        let name = r.bytes(len, "a tensor name")?;
        let shown = String::from_utf8_lossy(&name).into_owned();
        if !names.insert(name) {
            return Err(format!("at byte {at}: duplicate tensor name {shown:?}"));
        }
        let n_dims = r.u32("a tensor's dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {shown:?} has {n_dims} dimensions, more than {MAX_DIMS}"
            ));
        }
        let mut ne = [1i64; 4];
        for d in ne.iter_mut().take(n_dims as usize) {
            *d = r.i64("a tensor dimension")?;
            if *d < 0 {
                return Err(format!("tensor {shown:?} has a negative dimension {d}"));
            }
        }
        let elements = ne.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d));
        if elements.is_none() {
            return Err(format!(
                "tensor {shown:?} of shape {ne:?} has too many elements"
            ));
        }
        let type_id = r.u32("a tensor type")?;
        let (block, size) = usize::try_from(type_id)
            .ok()
            .and_then(|t| TENSOR_TYPES.get(t))
            .copied()
            .filter(|(block, _)| *block > 0)
            .ok_or_else(|| format!("tensor {shown:?} has an unknown type {type_id}"))?;
        // Non-negative: checked above.
        let row = ne[0] as u64;
        if row % block != 0 {
            return Err(format!(
                "tensor {shown:?}: {row} elements per row is not a multiple of its type's block \
                 size {block}"
            ));
        }
        let bytes = [ne[1], ne[2], ne[3]]
            .iter()
            .try_fold((row / block).checked_mul(size), |acc, &d| {
                acc.map(|a| a.checked_mul(d as u64))
            })
            .flatten()
            .ok_or_else(|| format!("tensor {shown:?} of shape {ne:?} is too large"))?;
        let offset = r.u64("a tensor offset")?;
        tensors.push((shown, bytes, offset));
    }

    // The data section starts at the next multiple of the alignment, and tensors follow each
    // other in order, each padded to the alignment (as ggml requires).
    let data_offset = if tensor_count > 0 {
        pad(r.pos, alignment)
            .filter(|o| *o <= r.len)
            .ok_or_else(|| "the tensor data would start past the end of the file".to_string())?
    } else {
        r.pos
    };
    let mut data_size = 0u64;
    for (name, bytes, offset) in &tensors {
        if *offset != data_size {
            return Err(format!(
                "tensor {name:?} is at offset {offset}, expected {data_size} (tensors must follow \
                 each other)"
            ));
        }
        let inside = data_offset
            .checked_add(*offset)
            .and_then(|o| o.checked_add(*bytes))
            .is_some_and(|end| end <= r.len);
        if !inside {
            return Err(format!(
                "tensor {name:?} ({bytes} bytes at offset {offset}) runs past the end of the file \
                 ({} bytes)",
                r.len
            ));
        }
        data_size = pad(*bytes, alignment)
            .and_then(|p| data_size.checked_add(p))
            .ok_or_else(|| format!("tensor {name:?}: the data size overflows"))?;
    }
    Ok(GgufMeta {
        version,
        tensor_count,
        kv,
        data_offset,
        data_size,
    })
}

#[cfg(test)]
mod tests;
