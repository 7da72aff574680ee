//! The typed GGUF model: value types and values, tensor infos, and the ggml tensor type table
//! (block size, bytes per block and name of every type id).

/// GGUF value type ids (ggml `gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    pub fn from_id(id: u32) -> Option<ValueType> {
        usize::try_from(id)
            .ok()
            .and_then(|i| ValueType::ALL.get(i))
            .copied()
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name `rawrxd gguf set` and `inspect` use (`u32`, `str`, `arr`…).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "str",
            ValueType::Array => "arr",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    pub fn from_name(name: &str) -> Option<ValueType> {
        ValueType::ALL
            .into_iter()
            .find(|t| t.name() == name || (name == "string" && *t == ValueType::String))
    }

    /// Bytes of one value of a fixed-size type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }
}

/// One metadata value, exactly as stored (strings as their bytes, booleans as their byte), so
/// writing it back gives the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    /// The stored byte; any non-zero byte is true (as in ggml).
    Bool(u8),
    String(Vec<u8>),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// An integer value of any width, if it is one and non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Value::String(s) => Some(String::from_utf8_lossy(s)),
            _ => None,
        }
    }

    /// The value as short text: strings quoted, arrays of more than `max_items` elements
    /// summarized as `[type; N]` with the first few shown.
    pub fn display(&self, max_items: usize) -> String {
        match self {
            Value::String(s) => format!("{:?}", String::from_utf8_lossy(s)),
            Value::Array(a) if a.len() > max_items => {
                let head: Vec<String> = a.iter().take(3).map(|v| v.display(0)).collect();
                format!("[{}; {}] [{}, …]", a.elem.name(), a.len(), head.join(", "))
            }
            Value::Array(a) => {
                let all: Vec<String> = a.iter().map(|v| v.display(0)).collect();
                format!("[{}]", all.join(", "))
            }
            Value::Bool(b) => (*b != 0).to_string(),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
        }
    }

    /// Bitwise equality (NaN equals the same NaN), for `diff`.
    pub fn same(&self, other: &Value) -> bool {
        let mut a = Vec::new();
        let mut b = Vec::new();
        crate::gguf::write::put_value(&mut a, self);
        crate::gguf::write::put_value(&mut b, other);
        self.value_type() == other.value_type() && a == b
    }
}

/// An array value, kept as its elements' bytes in the file (so it takes no more memory than the
/// file does, and writes back unchanged); elements are decoded on access.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The element type (never `Array`: GGUF has no nested arrays).
    pub elem: ValueType,
    /// The elements as serialized in the file (strings with their `u64` length prefixes).
    raw: Vec<u8>,
    /// For string arrays, where each element starts in `raw`; empty otherwise.
    starts: Vec<usize>,
    len: usize,
}

impl Array {
    /// An array of fixed-size elements from their serialized bytes; `None` when `raw` is not a
    /// whole number of elements or `elem` is not a fixed-size type.
    pub fn from_fixed(elem: ValueType, raw: Vec<u8>) -> Option<Array> {
        let size = usize::try_from(elem.fixed_size()?).ok()?;
        if raw.len() % size != 0 {
            return None;
        }
        Some(Array {
            elem,
            len: raw.len() / size,
            raw,
            starts: Vec::new(),
        })
    }

    /// An array of strings.
    pub fn from_strings<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Array {
        let mut a = Array {
            elem: ValueType::String,
            raw: Vec::new(),
            starts: Vec::new(),
            len: 0,
        };
        for s in items {
            a.push_string(s);
        }
        a
    }

    pub(crate) fn push_string(&mut self, s: &[u8]) {
        self.starts.push(self.raw.len());
        self.raw.extend((s.len() as u64).to_le_bytes());
        self.raw.extend(s);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements as serialized in the file.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Element `i`, decoded.
    pub fn get(&self, i: usize) -> Option<Value> {
        if i >= self.len {
            return None;
        }
        if self.elem == ValueType::String {
            let start = *self.starts.get(i)?;
            let end = self.starts.get(i + 1).copied().unwrap_or(self.raw.len());
            return Some(Value::String(self.raw.get(start + 8..end)?.to_vec()));
        }
        let size = usize::try_from(self.elem.fixed_size()?).ok()?;
        let b = self.raw.get(i * size..(i + 1) * size)?;
        decode_fixed(self.elem, b)
    }

    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }
}

/// A fixed-size value from its little-endian bytes (`b` of exactly its size).
pub fn decode_fixed(t: ValueType, b: &[u8]) -> Option<Value> {
    fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.try_into().ok()
    }
    Some(match t {
        ValueType::U8 => Value::U8(*b.first()?),
        ValueType::I8 => Value::I8(i8::from_le_bytes(arr(b)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(arr(b)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(arr(b)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(arr(b)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(arr(b)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(arr(b)?)),
        ValueType::Bool => Value::Bool(*b.first()?),
        ValueType::U64 => Value::U64(u64::from_le_bytes(arr(b)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(arr(b)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(arr(b)?)),
        ValueType::String | ValueType::Array => return None,
    })
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// The dimensions as stored (`n_dims` of them), innermost first.
    pub dims: Vec<u64>,
    /// ggml type id (an index of [`TENSOR_TYPES`]).
    pub type_id: u32,
    /// Offset in the data section (relative to [`crate::gguf::Gguf::data_offset`]).
    pub offset: u64,
    /// Bytes of data (without padding).
    pub size: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn type_name(&self) -> &'static str {
        type_name(self.type_id)
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

/// ggml's name of each tensor type id (`ggml_type_name`), `""` for removed ids.
const TENSOR_TYPE_NAMES: [&str; 43] = [
    "f32", "f16", "q4_0", "q4_1", "", "", "q5_0", "q5_1", "q8_0", "q8_1", "q2_K", "q3_K", "q4_K",
    "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s",
    "iq4_xs", "i8", "i16", "i32", "i64", "f64", "iq1_m", "bf16", "", "", "", "tq1_0", "tq2_0", "",
    "", "", "mxfp4", "nvfp4", "q1_0", "q2_0",
];

/// Ids of the types named in this module's code.
pub mod tensor_type {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q5_0: u32 = 6;
    pub const Q5_1: u32 = 7;
    pub const Q8_0: u32 = 8;
    pub const Q8_1: u32 = 9;
    pub const Q2_K: u32 = 10;
    pub const Q3_K: u32 = 11;
    pub const Q4_K: u32 = 12;
    pub const Q5_K: u32 = 13;
    pub const Q6_K: u32 = 14;
    pub const Q8_K: u32 = 15;
    pub const IQ4_NL: u32 = 20;
    pub const IQ4_XS: u32 = 23;
    pub const BF16: u32 = 30;
}

/// `(block size, bytes per block)` of a tensor type id ggml supports.
pub fn type_size(type_id: u32) -> Option<(u64, u64)> {
    usize::try_from(type_id)
        .ok()
        .and_then(|t| TENSOR_TYPES.get(t))
        .copied()
        .filter(|(block, _)| *block > 0)
}

/// ggml's name of a type id (`q4_K`, `f32`); `"?"` when unknown.
pub fn type_name(type_id: u32) -> &'static str {
    usize::try_from(type_id)
        .ok()
        .and_then(|t| TENSOR_TYPE_NAMES.get(t))
        .copied()
        .filter(|n| !n.is_empty())
        .unwrap_or("?")
}

/// The type id of a name as [`type_name`] spells it (any case).
pub fn type_id_of(name: &str) -> Option<u32> {
    TENSOR_TYPE_NAMES
        .iter()
        .position(|n| !n.is_empty() && n.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
}
