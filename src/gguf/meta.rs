//! The JSON view of a GGUF header that `rawrxd serve` shows (`/api/show`'s `model_info`,
//! `/api/tags` details): a thin layer over the typed [`Gguf`]. Arrays longer than
//! [`MAX_ARRAY_SHOWN`] are `null` (tokenizer vocabularies), like Ollama's `/api/show` without
//! `verbose`.

use serde_json::{Map, Value as Json};

use super::read::Gguf;
use super::types::Value;

/// Arrays longer than this are reported as `null`.
pub const MAX_ARRAY_SHOWN: usize = 64;

/// The metadata of one GGUF file, in file order.
#[derive(Debug, Clone, Default)]
pub struct GgufMeta {
    pub version: u32,
    pub tensor_count: u64,
    pub kv: Map<String, Json>,
    /// Where the tensor data starts, in bytes from the start of the file.
    pub data_offset: u64,
    /// Bytes of tensor data (padded to the alignment between tensors).
    pub data_size: u64,
}

impl GgufMeta {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(Json::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.kv.get(key).and_then(Json::as_u64)
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

impl From<&Gguf> for GgufMeta {
    fn from(g: &Gguf) -> Self {
        GgufMeta {
            version: g.version,
            tensor_count: g.tensors.len() as u64,
            kv: g.kv.iter().map(|(k, v)| (k.clone(), json(v))).collect(),
            data_offset: g.data_offset,
            data_size: g.data_size,
        }
    }
}

/// One value as JSON: numbers, booleans, strings (lossy UTF-8), short arrays; long arrays
/// `null`.
pub fn json(v: &Value) -> Json {
    match v {
        Value::U8(x) => Json::from(*x),
        Value::I8(x) => Json::from(*x),
        Value::U16(x) => Json::from(*x),
        Value::I16(x) => Json::from(*x),
        Value::U32(x) => Json::from(*x),
        Value::I32(x) => Json::from(*x),
        Value::F32(x) => float32(*x),
        Value::Bool(x) => Json::from(*x != 0),
        Value::String(s) => Json::from(String::from_utf8_lossy(s).into_owned()),
        Value::Array(a) if a.len() > MAX_ARRAY_SHOWN => Json::Null,
        Value::Array(a) => Json::Array(a.iter().map(|v| json(&v)).collect()),
        Value::U64(x) => Json::from(*x),
        Value::I64(x) => Json::from(*x),
        Value::F64(x) => float(*x),
    }
}

/// An `f32` as the shortest decimal that reads back as it (`1e-6`, not `9.99999997e-7`).
fn float32(v: f32) -> Json {
    float(v.to_string().parse().unwrap_or(f64::from(v)))
}

fn float(v: f64) -> Json {
    serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number)
}
