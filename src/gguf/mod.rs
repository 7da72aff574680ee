//! GGUF files: the strict reader and the writer, and the `rawrxd gguf` tooling built on them
//! (inspect, hash/verify, set/diff, reversible weight patches).
//!
//! The layout (ggml `docs/gguf.md`): magic `GGUF`, version `u32` (2 or 3), tensor count `u64`,
//! key/value count `u64`, each pair as a length-prefixed key, a `u32` type and the value, then
//! each tensor's name, dimensions, type and data offset, then the aligned tensor data.
//!
//! One parser: [`read`] turns a header into the typed model [`Gguf`] (typed values, tensor
//! infos with offsets and sizes, the ggml type table of [`types`]); [`meta`]'s [`GgufMeta`] is
//! the JSON view of it that `rawrxd serve` uses for `/api/tags`, `/api/show` and the
//! chat-template fallback, and [`read_meta`] is the gate every model file passes before
//! llama.cpp's loader sees it. **Nothing is allocated or skipped before its size has been
//! checked** against what is left of the file and against [`Limits`]; a file accepted here is
//! never one ggml's parser rejects or asserts on (the `gguf_reader` fuzz target checks it).
//!
//! The rest: [`write`] (header and aligned data, byte-identical round trip), [`hash`]
//! (whole-file and per-tensor sha256, llama-gguf-hash manifests), [`inspect`] (the report,
//! memory estimate), [`edit`] (`set`, `diff`), [`quant`] (block scales, dequantization),
//! [`patch`] (plans, patch sets, gzip backups, revert).
//!
//! Tensor data is read with positioned reads of the ranges a command needs, not a memory map:
//! the crate forbids `unsafe` (which `memmap2::Mmap::map` is), and sequential reads through a
//! large buffer hash as fast as a map (BENCHMARKS.md).
//!
//! May use: nothing else in the crate.

pub mod edit;
pub mod hash;
pub mod inspect;
pub mod meta;
pub mod patch;
pub mod quant;
pub mod read;
pub mod types;
pub mod write;

use std::io::BufReader;
use std::path::Path;

pub use meta::GgufMeta;
pub use read::Gguf;
pub use types::{TensorInfo, Value, ValueType, TENSOR_TYPES};

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
    /// A request that cannot be carried out on this file (unknown tensor, unsupported type, bad
    /// plan…); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// A hash or content that differs from the expected one (exit code 1 of `verify`).
    #[error("{0}")]
    Mismatch(String),
}

impl GgufError {
    pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> GgufError + '_ {
        move |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The exit code scripts rely on: 1 for a mismatch, 2 for anything unreadable or invalid.
    pub fn exit_code(&self) -> u8 {
        match self {
            GgufError::Mismatch(_) => 1,
            _ => 2,
        }
    }
}

/// Reads and checks the header of the GGUF file at `path` with the default [`Limits`].
pub fn read_meta(path: &Path) -> Result<GgufMeta, GgufError> {
    read_meta_with(path, Limits::DEFAULT)
}

/// [`read_meta`] with other caps.
pub fn read_meta_with(path: &Path, limits: Limits) -> Result<GgufMeta, GgufError> {
    read_file_with(path, limits).map(|g| GgufMeta::from(&g))
}

/// Reads and checks a GGUF header held in memory (`bytes` is the whole file).
pub fn parse_bytes(bytes: &[u8], limits: Limits) -> Result<GgufMeta, GgufError> {
    parse_gguf(bytes, limits).map(|g| GgufMeta::from(&g))
}

/// The typed header of the GGUF file at `path` (only the header is read).
pub fn read_file(path: &Path) -> Result<Gguf, GgufError> {
    read_file_with(path, Limits::DEFAULT)
}

/// [`read_file`] with other caps.
pub fn read_file_with(path: &Path, limits: Limits) -> Result<Gguf, GgufError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(GgufError::io(path))?;
    let meta = file.metadata().map_err(GgufError::io(path))?;
    if !meta.is_file() {
        return Err(GgufError::Invalid {
            path: shown,
            reason: "not a regular file".into(),
        });
    }
    let mut r = read::Reader::new(BufReader::with_capacity(1 << 16, file), meta.len(), limits);
    read::parse(&mut r).map_err(|reason| GgufError::Invalid {
        path: shown,
        reason,
    })
}

/// The typed header of a GGUF file held in memory.
pub fn parse_gguf(bytes: &[u8], limits: Limits) -> Result<Gguf, GgufError> {
    let mut r = read::Reader::new(bytes, bytes.len() as u64, limits);
    read::parse(&mut r).map_err(|reason| GgufError::Invalid {
        path: "<memory>".into(),
        reason,
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tool_tests;
