//! Any bytes as a GGUF file: `rawrxd::gguf` returns metadata or an error, never panics and never
//! allocates past its caps (run with `-malloc_limit_mb`); every file it accepts, ggml's own
//! parser (the one llama.cpp's loader runs) accepts too — with tensors created — without
//! aborting, with the same counts and data offset. Also pins `rawrxd::gguf`'s tensor type table
//! to the linked ggml's. (Here, outside the rawrxd package, because calling ggml needs
//! `unsafe`, which rawrxd forbids.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama_cpp_sys_2 as sys;
use rawrxd::gguf::{parse_bytes, Limits, TENSOR_TYPES};

/// `rawrxd::gguf::TENSOR_TYPES` equals ggml's block and type sizes for every id.
fn check_type_table() {
    assert_eq!(TENSOR_TYPES.len(), sys::GGML_TYPE_COUNT as usize);
    for (id, expected) in TENSOR_TYPES.iter().enumerate() {
        // SAFETY: lookups in ggml's static type table, for ids below its count.
        let ggml = unsafe {
            (
                sys::ggml_blck_size(id as sys::ggml_type) as u64,
                sys::ggml_type_size(id as sys::ggml_type) as u64,
            )
        };
        assert_eq!(*expected, ggml, "tensor type {id}");
    }
}

fuzz_target!(|data: &[u8]| {
    static TABLE: std::sync::Once = std::sync::Once::new();
    TABLE.call_once(check_type_table);
    let Ok(meta) = parse_bytes(data, Limits::DEFAULT) else {
        return;
    };
    assert!(meta.data_offset <= data.len() as u64);
    let mut ctx: *mut sys::ggml_context = std::ptr::null_mut();
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: &mut ctx,
    };
    // SAFETY: `data` outlives the call; both contexts are freed before returning.
    let accepted = unsafe {
        let gguf = sys::gguf_init_from_buffer(data.as_ptr().cast(), data.len(), params);
        let accepted = !gguf.is_null();
        if accepted {
            assert_eq!(sys::gguf_get_n_tensors(gguf), meta.tensor_count as i64);
            assert_eq!(sys::gguf_get_n_kv(gguf), meta.kv.len() as i64);
            assert_eq!(sys::gguf_get_data_offset(gguf), meta.data_offset as usize);
            sys::gguf_free(gguf);
        }
        if !ctx.is_null() {
            sys::ggml_free(ctx);
        }
        accepted
    };
    assert!(accepted, "ggml refused a file rawrxd::gguf accepted");
});
