//! `rawrxd gguf inspect`: the header, metadata (long arrays summarized), tensor table, totals
//! by type, parameter count and an estimate of the memory a context needs (weights plus an
//! f16 KV cache from the model's dimensions), as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value as Json};

use super::meta::json as value_json;
use super::read::Gguf;
use super::types::Value;

/// Arrays longer than this are shown as `[type; N] [first three, …]`.
const ARRAY_SHOWN: usize = 8;

/// The KV-cache estimate for a context length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub ctx: u64,
    pub layers: u64,
    pub head_count_kv: u64,
    pub key_length: u64,
    pub value_length: u64,
    /// f16 K and V for every layer at the full context.
    pub kv_cache_bytes: u64,
    pub weights_bytes: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.weights_bytes.saturating_add(self.kv_cache_bytes)
    }
}

fn arch_u64(g: &Gguf, key: &str) -> Option<u64> {
    let arch = g.get("general.architecture")?.as_str()?.into_owned();
    match g.get(&format!("{arch}.{key}"))? {
        // Per-layer values (some models vary head counts by layer): the largest.
        Value::Array(a) => a.iter().filter_map(|v| v.as_u64()).max(),
        v => v.as_u64(),
    }
}

/// The model's context length (`{arch}.context_length`).
pub fn context_length(g: &Gguf) -> Option<u64> {
    arch_u64(g, "context_length")
}

/// Weights plus an f16 KV cache of `ctx` tokens, from `{arch}.block_count`,
/// `.embedding_length`, `.attention.head_count(_kv)` and `.attention.key_length` /
/// `.value_length` (default: embedding length / head count). `None` when the model does not
/// say its dimensions. An upper bound for models with sliding-window layers (Gemma 3), whose
/// cache llama.cpp sizes to the window.
pub fn memory(g: &Gguf, ctx: u64) -> Option<Memory> {
    let layers = arch_u64(g, "block_count")?;
    let embd = arch_u64(g, "embedding_length")?;
    let heads = arch_u64(g, "attention.head_count")?.max(1);
    let head_count_kv = arch_u64(g, "attention.head_count_kv").unwrap_or(heads);
    let key_length = arch_u64(g, "attention.key_length").unwrap_or(embd / heads);
    let value_length = arch_u64(g, "attention.value_length").unwrap_or(embd / heads);
    let kv_cache_bytes = layers
        .saturating_mul(ctx)
        .saturating_mul(head_count_kv)
        .saturating_mul(key_length.saturating_add(value_length))
        .saturating_mul(2);
    Some(Memory {
        ctx,
        layers,
        head_count_kv,
        key_length,
        value_length,
        kv_cache_bytes,
        weights_bytes: g.tensors.iter().map(|t| t.size).sum(),
    })
}

/// `(type name, tensors, bytes, parameters)` per tensor type, largest first.
pub fn totals_by_type(g: &Gguf) -> Vec<(&'static str, u64, u64, u64)> {
    let mut by: BTreeMap<&'static str, (u64, u64, u64)> = BTreeMap::new();
    for t in &g.tensors {
        let e = by.entry(t.type_name()).or_default();
        e.0 += 1;
        e.1 += t.size;
        e.2 += t.elements();
    }
    let mut v: Vec<_> = by.into_iter().map(|(k, (n, b, p))| (k, n, b, p)).collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    v
}

pub fn parameter_count(g: &Gguf) -> u64 {
    g.tensors.iter().map(|t| t.elements()).sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The text report.
pub fn text(g: &Gguf, label: &str, ctx: Option<u64>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "file:        {label} ({} bytes)", g.file_len);
    let _ = writeln!(
        o,
        "gguf:        version {}, {} key/value pairs, {} tensors, alignment {}",
        g.version,
        g.kv.len(),
        g.tensors.len(),
        g.alignment
    );
    let _ = writeln!(
        o,
        "data:        {} bytes at offset {} (header {} bytes)",
        g.data_size, g.data_offset, g.header_len
    );
    let _ = writeln!(o, "\nmetadata:");
    for (k, v) in &g.kv {
        let _ = writeln!(
            o,
            "  {k:<44} {:<4} {}",
            v.value_type().name(),
            v.display(ARRAY_SHOWN)
        );
    }
    let _ = writeln!(o, "\ntensors:");
    let _ = writeln!(
        o,
        "  {:<40} {:<8} {:<22} {:>12} {:>12}",
        "name", "type", "shape", "offset", "bytes"
    );
    for t in &g.tensors {
        let shape = format!("{:?}", t.dims);
        let _ = writeln!(
            o,
            "  {:<40} {:<8} {:<22} {:>12} {:>12}",
            t.name,
            t.type_name(),
            shape,
            g.tensor_start(t),
            t.size
        );
    }
    let _ = writeln!(o, "\ntotals by type:");
    for (ty, n, bytes, params) in totals_by_type(g) {
        let _ = writeln!(
            o,
            "  {ty:<8} {n:>5} tensors {:>12} {params:>14} parameters",
            mib(bytes)
        );
    }
    let _ = writeln!(o, "\nparameters:  {}", parameter_count(g));
    let ctx = ctx.or_else(|| context_length(g));
    match ctx.and_then(|c| memory(g, c)) {
        Some(m) => {
            let _ = writeln!(
                o,
                "memory:      {} at ctx {} = weights {} + KV cache {} (f16; {} layers × {} KV \
                 heads × ({} + {}))",
                mib(m.total()),
                m.ctx,
                mib(m.weights_bytes),
                mib(m.kv_cache_bytes),
                m.layers,
                m.head_count_kv,
                m.key_length,
                m.value_length
            );
        }
        None => {
            let _ = writeln!(
                o,
                "memory:      unknown (the model does not give its dimensions)"
            );
        }
    }
    o
}

/// The JSON report: every value in full except arrays longer than 64 (`{"type", "len",
/// "head"}`).
pub fn json(g: &Gguf, label: &str, ctx: Option<u64>) -> Json {
    let kv: serde_json::Map<String, Json> = g
        .kv
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                Value::Array(a) if a.len() > super::meta::MAX_ARRAY_SHOWN => json!({
                    "type": a.elem.name(),
                    "len": a.len(),
                    "head": a.iter().take(ARRAY_SHOWN).map(|v| value_json(&v)).collect::<Vec<_>>(),
                }),
                v => value_json(v),
            };
            (
                k.clone(),
                json!({"type": v.value_type().name(), "value": shown}),
            )
        })
        .collect();
    let tensors: Vec<Json> = g
        .tensors
        .iter()
        .map(|t| {
            json!({"name": t.name, "type": t.type_name(), "shape": t.dims,
                   "offset": g.tensor_start(t), "bytes": t.size})
        })
        .collect();
    let totals: Vec<Json> = totals_by_type(g)
        .into_iter()
        .map(|(ty, n, bytes, params)| json!({"type": ty, "tensors": n, "bytes": bytes, "parameters": params}))
        .collect();
    let ctx = ctx.or_else(|| context_length(g));
    let memory = ctx.and_then(|c| memory(g, c)).map(|m| {
        json!({"ctx": m.ctx, "weights_bytes": m.weights_bytes, "kv_cache_bytes": m.kv_cache_bytes,
               "total_bytes": m.total(), "layers": m.layers, "head_count_kv": m.head_count_kv,
               "key_length": m.key_length, "value_length": m.value_length})
    });
    json!({
        "file": label,
        "file_bytes": g.file_len,
        "version": g.version,
        "alignment": g.alignment,
        "header_bytes": g.header_len,
        "data_offset": g.data_offset,
        "data_bytes": g.data_size,
        "metadata": kv,
        "tensors": tensors,
        "totals_by_type": totals,
        "parameters": parameter_count(g),
        "memory": memory,
    })
}
