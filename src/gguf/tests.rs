#![allow(clippy::unwrap_used)]
use super::*;
use serde_json::Value;

fn header_with(tensors: u64, kv: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(tensors.to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (k, ty, v) in kv {
        out.extend((k.len() as u64).to_le_bytes());
        out.extend(k.as_bytes());
        out.extend(ty.to_le_bytes());
        out.extend(v);
    }
    out
}

fn header(kv: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    header_with(0, kv)
}

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend(s.as_bytes());
    v
}

/// An array value (after the `ARRAY` type id): element type, count, raw elements.
fn array(elem: u32, n: u64, raw: &[u8]) -> Vec<u8> {
    let mut v = elem.to_le_bytes().to_vec();
    v.extend(n.to_le_bytes());
    v.extend(raw);
    v
}

/// One tensor directory entry.
fn tensor(name: &str, dims: &[i64], type_id: u32, offset: u64) -> Vec<u8> {
    let mut v = string(name);
    v.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        v.extend(d.to_le_bytes());
    }
    v.extend(type_id.to_le_bytes());
    v.extend(offset.to_le_bytes());
    v
}

fn parse_err(bytes: &[u8]) -> String {
    parse_err_with(bytes, Limits::DEFAULT)
}

fn parse_err_with(bytes: &[u8], limits: Limits) -> String {
    parse_bytes(bytes, limits).unwrap_err().to_string()
}

fn ok(bytes: &[u8]) -> GgufMeta {
    parse_bytes(bytes, Limits::DEFAULT).unwrap()
}

#[test]
fn reads_strings_numbers_and_arrays() {
    let mut raw = 7i32.to_le_bytes().to_vec();
    raw.extend((-1i32).to_le_bytes());
    let bytes = header(&[
        ("general.architecture", 8, string("gemma3")),
        ("general.file_type", 4, 15u32.to_le_bytes().to_vec()),
        ("x.list", 9, array(5, 2, &raw)),
        ("x.flag", 7, vec![2]),
    ]);
    let meta = ok(&bytes);
    assert_eq!(meta.architecture(), "gemma3");
    assert_eq!(meta.quantization(), "Q4_K_M");
    assert_eq!(meta.kv["x.list"], serde_json::json!([7, -1]));
    assert_eq!(meta.kv["x.flag"], serde_json::json!(true));
}

#[test]
fn long_arrays_are_walked_and_shown_as_null() {
    let mut raw = Vec::new();
    for i in 0..100 {
        raw.extend(string(&format!("tok{i}")));
    }
    let bytes = header(&[
        ("tokenizer.ggml.tokens", 9, array(8, 100, &raw)),
        ("tokenizer.ggml.scores", 9, array(6, 100, &[0u8; 400])),
        ("after", 8, string("still read")),
    ]);
    let meta = ok(&bytes);
    assert_eq!(meta.kv["tokenizer.ggml.tokens"], Value::Null);
    assert_eq!(meta.kv["tokenizer.ggml.scores"], Value::Null);
    assert_eq!(meta.str("after"), Some("still read"));
}

#[test]
fn truncated_files_fail_at_every_cut() {
    let mut bytes = header_with(
        1,
        &[
            ("general.architecture", 8, string("gemma3")),
            (
                "x.list",
                9,
                array(8, 2, &[string("a"), string("bc")].concat()),
            ),
        ],
    );
    bytes.extend(tensor("t", &[32], 0, 0));
    bytes.resize(bytes.len().div_ceil(32) * 32 + 128, 0);
    ok(&bytes);
    // Every prefix, cutting into the header or into the tensor's data, is refused.
    for cut in 0..bytes.len() {
        let err = parse_bytes(&bytes[..cut], Limits::DEFAULT)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("past the end") || err.contains("cannot fit"),
            "cut {cut}: {err}"
        );
    }
    assert!(parse_err(&bytes[..3]).contains("past the end of the file"));
}

#[test]
fn huge_string_length_fails_before_allocating() {
    let mut bytes = header(&[("k", 8, string("abc"))]);
    // Claim 2^62 bytes for the value.
    let at = bytes.len() - 11;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let err = parse_err(&bytes);
    assert!(err.contains("more than the cap of 16777216"), "{err}");
    // Under the cap but past the end of the file.
    bytes[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let err = parse_err(&bytes);
    assert!(err.contains("runs past the end of the file"), "{err}");
    // A huge key length.
    let mut bytes = header(&[("k", 8, string("abc"))]);
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse_err(&bytes).contains("a key is"));
}

#[test]
fn string_and_metadata_caps_apply_to_strings_inside_the_file() {
    let value = "x".repeat(1000);
    let bytes = header(&[("a", 8, string(&value)), ("b", 8, string(&value))]);
    let small = Limits {
        max_string: 999,
        ..Limits::DEFAULT
    };
    let err = parse_bytes(&bytes, small).unwrap_err().to_string();
    assert!(err.contains("more than the cap of 999"), "{err}");
    let budget = Limits {
        max_metadata: 1500,
        ..Limits::DEFAULT
    };
    let err = parse_bytes(&bytes, budget).unwrap_err().to_string();
    assert!(
        err.contains("metadata larger than the cap of 1500"),
        "{err}"
    );
    assert!(parse_bytes(&bytes, Limits::DEFAULT).is_ok());
}

#[test]
fn huge_array_counts_fail_before_allocating() {
    for n in [1u64 << 40, u64::MAX, (16 << 20) + 1] {
        let bytes = header(&[("k", 9, array(6, n, &[0u8; 16]))]);
        let err = parse_err(&bytes);
        assert!(err.contains("longer than the cap"), "{n}: {err}");
    }
    // Under the cap, but the elements are not in the file.
    let bytes = header(&[("k", 9, array(8, 1 << 20, &[0u8; 16]))]);
    assert!(parse_err(&bytes).contains("runs past the end"));
    let bytes = header(&[("k", 9, array(12, 1000, &[0u8; 16]))]);
    assert!(parse_err(&bytes).contains("runs past the end"));
    let small = Limits {
        max_array: 3,
        ..Limits::DEFAULT
    };
    let bytes = header(&[("k", 9, array(0, 4, &[1, 2, 3, 4]))]);
    let err = parse_bytes(&bytes, small).unwrap_err().to_string();
    assert!(err.contains("cap of 3"), "{err}");
}

#[test]
fn count_overflows_are_refused() {
    // kv and tensor counts whose minimum sizes overflow u64 or exceed the file.
    for (tensors, kvs) in [
        (0u64, u64::MAX),
        (0, u64::MAX / 14 + 1),
        (1, 1 << 40),
        (1000, 0),
    ] {
        let mut bytes = header(&[]);
        bytes[8..16].copy_from_slice(&tensors.to_le_bytes());
        bytes[16..24].copy_from_slice(&kvs.to_le_bytes());
        bytes.extend([0u8; 64]);
        let err = parse_err(&bytes);
        assert!(err.contains("cannot fit"), "{tensors}/{kvs}: {err}");
    }
    let mut bytes = header(&[]);
    bytes[8..16].copy_from_slice(&(1u64 << 17).to_le_bytes());
    assert!(parse_err(&bytes).contains("more than the cap of 65536"));
    // An array whose byte size overflows (string elements count 8 bytes each).
    let small = Limits {
        max_array: u64::MAX,
        ..Limits::DEFAULT
    };
    let bytes = header(&[("k", 9, array(8, u64::MAX / 4, &[0u8; 16]))]);
    assert!(parse_err_with(&bytes, small).contains("overflows"));
    // A tensor whose element count overflows i64.
    let mut bytes = header_with(1, &[]);
    bytes.extend(tensor("t", &[1 << 32, 1 << 32], 0, 0));
    bytes.extend([0u8; 64]);
    assert!(parse_err(&bytes).contains("too many elements"));
    // A tensor whose byte size overflows u64.
    let mut bytes = header_with(1, &[]);
    bytes.extend(tensor("t", &[1 << 31, 1 << 31], 0, 0));
    bytes.extend([0u8; 64]);
    assert!(parse_err(&bytes).contains("too large"));
}

#[test]
fn bad_type_ids_are_refused() {
    assert!(parse_err(&header(&[("k", 13, vec![0; 8])])).contains("unknown value type 13"));
    assert!(parse_err(&header(&[("k", u32::MAX, vec![0; 8])])).contains("unknown value"));
    let bytes = header(&[("k", 9, array(77, 1, &[0u8; 8]))]);
    assert!(parse_err(&bytes).contains("unknown array element type 77"));
    for type_id in [4u32, 5, 31, 38, 43, 1000, u32::MAX] {
        let mut bytes = header_with(1, &[]);
        bytes.extend(tensor("t", &[32], type_id, 0));
        bytes.extend([0u8; 64]);
        let err = parse_err(&bytes);
        assert!(err.contains("unknown type"), "{type_id}: {err}");
    }
    // A row that is not a whole number of blocks (Q4_0 blocks are 32 wide).
    let mut bytes = header_with(1, &[]);
    bytes.extend(tensor("t", &[33], 2, 0));
    bytes.extend([0u8; 64]);
    assert!(parse_err(&bytes).contains("block size 32"));
}

#[test]
fn nested_arrays_are_refused() {
    let inner = array(4, 1, &7u32.to_le_bytes());
    let bytes = header(&[("k", 9, array(9, 1, &inner))]);
    assert!(parse_err(&bytes).contains("nested arrays"));
}

#[test]
fn keys_tensor_names_and_alignment_are_checked_like_ggml() {
    assert!(parse_err(&header(&[("", 4, vec![0; 4])])).contains("empty key"));
    let dup = header(&[("k", 4, vec![0; 4]), ("k", 4, vec![0; 4])]);
    assert!(parse_err(&dup).contains("duplicate key"));
    let wrong = header(&[("general.alignment", 10, 64u64.to_le_bytes().to_vec())]);
    assert!(parse_err(&wrong).contains("must be a u32"));
    let odd = header(&[("general.alignment", 4, 48u32.to_le_bytes().to_vec())]);
    assert!(parse_err(&odd).contains("not a power of two"));
    let split = header(&[("split.count", 2, 3u16.to_le_bytes().to_vec())]);
    assert!(parse_bytes(&split, Limits::DEFAULT)
        .unwrap_err()
        .to_string()
        .contains("split model"));

    let mut long = header_with(1, &[]);
    long.extend(tensor(&"n".repeat(64), &[32], 0, 0));
    long.extend([0u8; 256]);
    assert!(parse_err(&long).contains("a tensor name is 64 bytes long"));
    let mut twice = header_with(2, &[]);
    twice.extend(tensor("t", &[8], 0, 0));
    twice.extend(tensor("t", &[8], 0, 32));
    twice.extend([0u8; 256]);
    assert!(parse_err(&twice).contains("duplicate tensor name"));
    let mut dims = header_with(1, &[]);
    dims.extend(tensor("t", &[1, 1, 1, 1, 1], 0, 0));
    dims.extend([0u8; 256]);
    assert!(parse_err(&dims).contains("5 dimensions"));
    let mut negative = header_with(1, &[]);
    negative.extend(tensor("t", &[-32], 0, 0));
    negative.extend([0u8; 256]);
    assert!(parse_err(&negative).contains("negative dimension"));
}

#[test]
fn tensor_offsets_and_data_must_lie_in_the_file() {
    // Two F32 tensors of 8 and 4 elements: 32 bytes each once padded.
    let build = |second_offset: u64, data: usize| {
        let mut bytes = header_with(2, &[("general.alignment", 4, 32u32.to_le_bytes().to_vec())]);
        bytes.extend(tensor("a", &[8], 0, 0));
        bytes.extend(tensor("b", &[4], 0, second_offset));
        bytes.resize(bytes.len().div_ceil(32) * 32 + data, 0);
        bytes
    };
    let meta = ok(&build(32, 48));
    assert_eq!(meta.tensor_count, 2);
    assert_eq!(meta.data_size, 64);
    assert_eq!(meta.data_offset % 32, 0);
    assert!(parse_err(&build(16, 48)).contains("expected 32"));
    let short = build(32, 47);
    let err = parse_bytes(&short, Limits::DEFAULT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs past the end of the file"), "{err}");
}

/// The fuzz target's seeds (written by `fuzz/gguf_seeds.py`) are what their names say:
/// `valid-*` and `real-small-keys` parse (so the fuzzer's cross-check with ggml starts from
/// accepted files), the crafted ones fail.
#[test]
fn fuzz_seeds_parse_as_labelled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_reader");
    let mut seen = 0;
    for name in [
        "valid-tiny",
        "valid-tensors",
        "valid-arrays",
        "real-small-keys",
        "real-prefix-4k",
        "huge-string",
        "huge-key",
        "huge-array",
        "huge-counts",
        "nested-array",
        "bad-type",
        "bad-alignment",
        "bad-tensor-type",
        "bad-offset",
        "truncated",
        "split",
    ] {
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            continue;
        };
        seen += 1;
        let result = parse_bytes(&bytes, Limits::DEFAULT);
        let valid = name.starts_with("valid-") || name == "real-small-keys";
        assert_eq!(result.is_ok(), valid, "{name}: {result:?}");
    }
    assert!(seen >= 14, "seeds missing in {}", dir.display());
}

/// The real model parses, and ggml agrees on its tensor data layout.
#[test]
fn the_test_model_parses() {
    let Some(path) = std::env::var_os("RAWRXD_TEST_MODEL") else {
        return;
    };
    let meta = read_meta(Path::new(&path)).unwrap();
    assert_eq!(meta.architecture(), "gemma3");
    assert!(meta.tensor_count > 100);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!((meta.data_offset + meta.data_size).abs_diff(len) <= 32);
}

/// The shapes of the 2024–2026 GGUF CVEs (lengths and counts that overflow, offsets that wrap,
/// too many dimensions) and the reader's own additions (UTF-8 keys and tensor names), each
/// refused with a reason.
#[test]
fn cve_shapes_and_non_utf8_names_are_refused() {
    // A tensor whose offset + size wraps u64.
    let mut wrap = header_with(1, &[]);
    wrap.extend(tensor("t", &[32], 0, u64::MAX - 8));
    wrap.resize(wrap.len().div_ceil(32) * 32 + 128, 0);
    assert!(parse_err(&wrap).contains("expected 0"));
    // n_dims of u32::MAX.
    let mut dims = header_with(1, &[]);
    dims.extend(string("t"));
    dims.extend(u32::MAX.to_le_bytes());
    dims.extend([0u8; 64]);
    assert!(parse_err(&dims).contains("dimensions, more than 4"));
    // Dimensions whose product overflows i64 (ggml's int64 ne), and bytes that overflow u64.
    let mut ne = header_with(1, &[]);
    ne.extend(tensor("t", &[1 << 32, 1 << 32], 0, 0));
    ne.extend([0u8; 64]);
    assert!(parse_err(&ne).contains("too many elements"));
    // A string array whose count times the minimum element size overflows.
    let bytes = header(&[("k", 9, array(8, u64::MAX / 4, &[0u8; 16]))]);
    assert!(parse_err(&bytes).contains("longer than the cap"));
    // Key and tensor name bytes that are not UTF-8.
    let mut key = header(&[]);
    key[16..24].copy_from_slice(&1u64.to_le_bytes());
    key.extend(2u64.to_le_bytes());
    key.extend([0xff, 0xfe]);
    key.extend(4u32.to_le_bytes());
    key.extend(0u32.to_le_bytes());
    assert!(parse_err(&key).contains("not UTF-8"));
    let mut name = header_with(1, &[]);
    name.extend(1u64.to_le_bytes());
    name.push(0xff);
    name.extend(1u32.to_le_bytes());
    name.extend(32i64.to_le_bytes());
    name.extend(0u32.to_le_bytes());
    name.extend(0u64.to_le_bytes());
    name.resize(name.len().div_ceil(32) * 32 + 128, 0);
    assert!(parse_err(&name).contains("not UTF-8"));
}

/// Every byte of a valid file flipped, one at a time: an error or a file, never a panic; and
/// what the typed reader accepts writes back to a file that reads the same.
#[test]
fn every_single_byte_flip_is_an_error_or_a_file() {
    let mut bytes = header_with(
        2,
        &[
            ("general.architecture", 8, string("gemma3")),
            (
                "x.list",
                9,
                array(8, 2, &[string("a"), string("bc")].concat()),
            ),
            ("x.n", 4, 7u32.to_le_bytes().to_vec()),
        ],
    );
    bytes.extend(tensor("a", &[32], 0, 0));
    bytes.extend(tensor("b", &[32, 2], 8, 128));
    bytes.resize(bytes.len().div_ceil(32) * 32 + 128 + 68, 0);
    bytes.resize(bytes.len().div_ceil(32) * 32, 0);
    let g = parse_gguf(&bytes, Limits::DEFAULT).unwrap();
    assert_eq!(g.tensors.len(), 2);
    for i in 0..bytes.len() {
        let mut m = bytes.clone();
        m[i] ^= 0xff;
        if let Ok(g) = parse_gguf(&m, Limits::DEFAULT) {
            let mut out = Vec::new();
            write::write_file(&g, &g, &mut std::io::Cursor::new(&m[..]), &mut out).unwrap();
            let again = parse_gguf(&out, Limits::DEFAULT).unwrap();
            assert_eq!(
                write::header_bytes(&g),
                write::header_bytes(&again),
                "flip {i}"
            );
        }
    }
}

/// Found by the `gguf_reader` fuzz target (2026-12-04): dimensions whose product passes
/// gguf.cpp's `INT64_MAX / ne[i] < n` check but not ggml_new_tensor's stricter
/// `INT64_MAX / ne[i] > n` assertion, which aborted llama.cpp's loader. Refused here.
#[test]
fn element_counts_are_checked_like_ggml_new_tensor() {
    // 32 × (i64::MAX / 32) fits in i64, but not ggml_new_tensor's strict check.
    let mut bytes = header_with(1, &[]);
    bytes.extend(tensor("t", &[32, i64::MAX / 32], 0, 0));
    bytes.resize(bytes.len().div_ceil(32) * 32 + 32, 0);
    let err = parse_err(&bytes);
    assert!(err.contains("too many elements"), "{err}");
    let crash = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/gguf_reader/ggml-new-tensor-nelements"),
    )
    .unwrap();
    assert!(parse_bytes(&crash, Limits::DEFAULT).is_err());
}

/// Found by the `gguf_reader` fuzz target (2026-12-04): a key `general.alignment\0\0\0`, which
/// ggml (comparing C strings) took for `general.alignment` of the wrong type and refused while
/// this reader accepted it. Keys and tensor names with NUL bytes are refused.
#[test]
fn nul_bytes_in_keys_and_tensor_names_are_refused() {
    let bytes = header(&[("general.alignment\0\0\0", 0, vec![1])]);
    assert!(parse_err(&bytes).contains("NUL byte"));
    let mut name = header_with(1, &[]);
    name.extend(tensor("t\0x", &[32], 0, 0));
    name.resize(name.len().div_ceil(32) * 32 + 128, 0);
    assert!(parse_err(&name).contains("NUL byte"));
    let crash = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_reader/nul-in-alignment-key"),
    )
    .unwrap();
    assert!(parse_bytes(&crash, Limits::DEFAULT).is_err());
}
