//! Reads and checks a GGUF header — metadata, tensor directory, layout — into the typed model
//! [`Gguf`], streaming from any reader (the header only: tensor data is never read here).
//!
//! **Nothing is allocated or skipped before its size has been checked** against what is left
//! of the file and against the caps in [`Limits`] (every string, every array, the whole
//! key/value section, the tensor count), with overflow-checked arithmetic. The checks include
//! every one ggml's own `gguf.cpp` makes (version, empty and duplicate keys, type ids, nested
//! arrays, `general.alignment`, tensor names, shapes, types, block sizes, contiguous offsets),
//! plus the tensor data lying inside the file, UTF-8 keys and tensor names, and split models
//! being refused.

use std::collections::HashSet;
use std::io::Read;

use super::types::{type_size, Array, TensorInfo, Value, ValueType};
use super::Limits;

/// ggml's `GGML_MAX_NAME`: a tensor name is shorter than this.
pub const MAX_TENSOR_NAME: u64 = 64;

/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;

/// ggml's `GGUF_DEFAULT_ALIGNMENT`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The smallest tensor directory entry: name length, `n_dims`, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;

/// The smallest key/value pair: key length, a one-byte key, type, a one-byte value.
const MIN_KV: u64 = 8 + 1 + 4 + 1;

/// A checked GGUF header: everything but the tensor data.
#[derive(Debug, Clone, Default)]
pub struct Gguf {
    pub version: u32,
    /// Key/value pairs in file order.
    pub kv: Vec<(String, Value)>,
    /// The tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Bytes of the header (magic to the last tensor info), before the padding.
    pub header_len: u64,
    /// Where the tensor data starts, in bytes from the start of the file.
    pub data_offset: u64,
    /// Bytes of tensor data (padded to the alignment between tensors and after the last).
    pub data_size: u64,
    /// The file's length when it was read.
    pub file_len: u64,
}

impl Gguf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Where a tensor's data starts in the file.
    pub fn tensor_start(&self, t: &TensorInfo) -> u64 {
        // In range: checked against the file length when read, kept by `relayout`.
        self.data_offset.saturating_add(t.offset)
    }

    /// Recomputes `header_len`, `data_offset`, every tensor offset and `data_size` from the
    /// metadata and tensor sizes (after an edit): the layout ggml writes.
    pub fn relayout(&mut self) {
        self.alignment = match self.get("general.alignment") {
            Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        };
        self.header_len = super::write::header_bytes(self).len() as u64;
        self.data_offset = if self.tensors.is_empty() {
            self.header_len
        } else {
            pad(self.header_len, self.alignment).unwrap_or(u64::MAX)
        };
        let mut at = 0u64;
        for t in &mut self.tensors {
            t.offset = at;
            at = pad(t.size, self.alignment)
                .and_then(|p| at.checked_add(p))
                .unwrap_or(u64::MAX);
        }
        self.data_size = at;
    }
}

/// A bounded reader: knows how much of the file is left and how much of the metadata budget.
pub(crate) struct Reader<R> {
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
    pub(crate) fn new(inner: R, len: u64, limits: Limits) -> Self {
        Reader {
            inner,
            pos: 0,
            len,
            budget: None,
            limits,
        }
    }

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

    fn string(&mut self, what: &str) -> Result<Vec<u8>> {
        let len = self.string_len(what, self.limits.max_string)?;
        self.bytes(len, what)
    }

    /// One value of type `t` (never an array: see [`Reader::array_value`]).
    fn scalar(&mut self, t: ValueType) -> Result<Value> {
        const WHAT: &str = "a value";
        Ok(match t {
            ValueType::U8 => Value::U8(self.array::<1>(WHAT)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(WHAT)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(WHAT)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(WHAT)?)),
            ValueType::U32 => Value::U32(self.u32(WHAT)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(WHAT)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(WHAT)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(WHAT)?[0]),
            ValueType::String => Value::String(self.string("a string value")?),
            ValueType::U64 => Value::U64(self.u64(WHAT)?),
            ValueType::I64 => Value::I64(self.i64(WHAT)?),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(WHAT)?)),
            ValueType::Array => return Err("nested arrays are not valid GGUF".into()),
        })
    }

    /// An array (after its `ARRAY` type id): element type, count, elements — the count checked
    /// against the cap and against the bytes left before the elements are read; kept as its
    /// serialized bytes (no more memory than the file takes).
    fn array_value(&mut self) -> Result<Value> {
        let at = self.pos;
        let id = self.u32("an array's element type")?;
        let elem = ValueType::from_id(id)
            .ok_or_else(|| format!("at byte {at}: unknown array element type {id}"))?;
        if elem == ValueType::Array {
            return Err(format!(
                "at byte {at}: nested arrays are not valid GGUF (ggml refuses them)"
            ));
        }
        let min = elem.fixed_size().unwrap_or(8);
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
        if elem == ValueType::String {
            let mut a = Array::from_strings([]);
            for _ in 0..n {
                let s = self.string("a string in an array")?;
                a.push_string(&s);
            }
            return Ok(Value::Array(a));
        }
        // Checked above: the elements lie in the file (and fit the metadata cap).
        let raw = self.bytes(bytes, "an array")?;
        Array::from_fixed(elem, raw)
            .map(Value::Array)
            .ok_or_else(|| format!("at byte {at}: a malformed array"))
    }
}

/// `x` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub fn pad(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

/// Reads and checks a whole header from `r`.
pub(crate) fn parse<R: Read>(r: &mut Reader<R>) -> Result<Gguf> {
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
    // Bounded by the file's size (checked just above).
    let mut kv: Vec<(String, Value)> = Vec::with_capacity(usize::try_from(kv_count).unwrap_or(0));
    let mut keys = HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..kv_count {
        let at = r.pos;
        let key = r.string("a key")?;
        let key =
            String::from_utf8(key).map_err(|_| format!("at byte {at}: a key that is not UTF-8"))?;
        if key.is_empty() {
            return Err(format!("at byte {at}: an empty key"));
        }
        // ggml compares keys as C strings: "general.alignment\0x" would be its alignment key.
        if key.contains('\0') {
            return Err(format!("at byte {at}: key {key:?} contains a NUL byte"));
        }
        if !keys.insert(key.clone()) {
            return Err(format!("at byte {at}: duplicate key {key:?}"));
        }
        let id = r.u32("a value type")?;
        let value = match ValueType::from_id(id) {
            Some(ValueType::Array) => r.array_value()?,
            Some(t) => r.scalar(t).map_err(|e| format!("key {key:?}: {e}"))?,
            None => return Err(format!("key {key:?}: unknown value type {id}")),
        };
        match key.as_str() {
            "general.alignment" => {
                let a = match value {
                    Value::U32(a) => u64::from(a),
                    _ => return Err(format!("general.alignment must be a u32, not type {id}")),
                };
                if a == 0 || !a.is_power_of_two() {
                    return Err(format!("general.alignment {a} is not a power of two"));
                }
                alignment = a;
            }
            "split.count" if value.as_u64().is_some_and(|n| n > 1) => {
                return Err(format!(
                    "a split model ({} files); rawrxd serves single files: merge them with \
                     llama-gguf-split --merge",
                    value.display(0)
                ));
            }
            _ => {}
        }
        kv.push((key, value));
    }
    r.budget = None;

    let mut names = HashSet::new();
    let mut tensors = Vec::with_capacity(usize::try_from(tensor_count).unwrap_or(0));
    for _ in 0..tensor_count {
        let at = r.pos;
        let len = r.string_len("a tensor name", MAX_TENSOR_NAME - 1)?;
        let name = r.bytes(len, "a tensor name")?;
        let name = String::from_utf8(name)
            .map_err(|_| format!("at byte {at}: a tensor name that is not UTF-8"))?;
        // ggml compares tensor names as C strings.
        if name.contains('\0') {
            return Err(format!(
                "at byte {at}: tensor name {name:?} contains a NUL byte"
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("at byte {at}: duplicate tensor name {name:?}"));
        }
        let n_dims = r.u32("a tensor's dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {name:?} has {n_dims} dimensions, more than {MAX_DIMS}"
            ));
        }
        let mut ne = [1i64; 4];
        for d in ne.iter_mut().take(n_dims as usize) {
            *d = r.i64("a tensor dimension")?;
            if *d < 0 {
                return Err(format!("tensor {name:?} has a negative dimension {d}"));
            }
        }
        // ggml_new_tensor's own check (stricter than gguf.cpp's by one: it asserts, so a file
        // passing gguf.cpp's check but not this one would abort llama.cpp's loader).
        let mut elements = Some(ne[0]);
        for &d in &ne[1..] {
            elements = match elements {
                Some(n) if d > 1 && i64::MAX / d <= n => None,
                Some(n) if d > 1 => Some(n * d),
                other => other,
            };
        }
        if elements.is_none() {
            return Err(format!(
                "tensor {name:?} of shape {ne:?} has too many elements"
            ));
        }
        let type_id = r.u32("a tensor type")?;
        let (block, size) = type_size(type_id)
            .ok_or_else(|| format!("tensor {name:?} has an unknown type {type_id}"))?;
        // Non-negative: checked above.
        let row = ne[0] as u64;
        if row % block != 0 {
            return Err(format!(
                "tensor {name:?}: {row} elements per row is not a multiple of its type's block \
                 size {block}"
            ));
        }
        let bytes = [ne[1], ne[2], ne[3]]
            .iter()
            .try_fold((row / block).checked_mul(size), |acc, &d| {
                acc.map(|a| a.checked_mul(d as u64))
            })
            .flatten()
            .ok_or_else(|| format!("tensor {name:?} of shape {ne:?} is too large"))?;
        let offset = r.u64("a tensor offset")?;
        let dims = ne.iter().take(n_dims as usize).map(|&d| d as u64).collect();
        tensors.push(TensorInfo {
            name,
            dims,
            type_id,
            offset,
            size: bytes,
        });
    }
    let header_len = r.pos;

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
    for t in &tensors {
        let (name, bytes, offset) = (&t.name, t.size, t.offset);
        if offset != data_size {
            return Err(format!(
                "tensor {name:?} is at offset {offset}, expected {data_size} (tensors must follow \
                 each other)"
            ));
        }
        let inside = data_offset
            .checked_add(offset)
            .and_then(|o| o.checked_add(bytes))
            .is_some_and(|end| end <= r.len);
        if !inside {
            return Err(format!(
                "tensor {name:?} ({bytes} bytes at offset {offset}) runs past the end of the file \
                 ({} bytes)",
                r.len
            ));
        }
        data_size = pad(bytes, alignment)
            .and_then(|p| data_size.checked_add(p))
            .ok_or_else(|| format!("tensor {name:?}: the data size overflows"))?;
    }
    Ok(Gguf {
        version,
        kv,
        tensors,
        alignment,
        header_len,
        data_offset,
        data_size,
        file_len: r.len,
    })
}
