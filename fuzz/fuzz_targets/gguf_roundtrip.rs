//! Any bytes as a GGUF file through the typed reader and the writer: every file the reader
//! accepts writes back to a file that reads as the same model (same header bytes, same tensor
//! data), writing that again gives the same bytes, and the write never panics. Files whose
//! padding is all zeros and that end where ggml's writer ends them come back byte-identical.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use rawrxd::gguf::{parse_gguf, write, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = parse_gguf(data, Limits::DEFAULT) else {
        return;
    };
    let mut out = Vec::new();
    write::write_file(&g, &g, &mut Cursor::new(data), &mut out).unwrap();
    let again = parse_gguf(&out, Limits::DEFAULT).unwrap();
    assert_eq!(write::header_bytes(&g), write::header_bytes(&again));
    assert_eq!(g.data_offset, again.data_offset);
    for (a, b) in g.tensors.iter().zip(&again.tensors) {
        let da = &data[(g.data_offset + a.offset) as usize..][..a.size as usize];
        let db = &out[(again.data_offset + b.offset) as usize..][..b.size as usize];
        assert_eq!(da, db, "tensor {}", a.name);
    }
    let mut twice = Vec::new();
    write::write_file(&again, &again, &mut Cursor::new(&out[..]), &mut twice).unwrap();
    assert_eq!(out, twice);
    // The original's bytes come back when its padding is zero and it ends where ggml ends it.
    let end = (g.data_offset + g.data_size) as usize;
    let header_end = g.header_len as usize;
    let zero_padding = data[header_end..g.data_offset as usize].iter().all(|&b| b == 0)
        && g.tensors.iter().all(|t| {
            let from = (g.data_offset + t.offset + t.size) as usize;
            let to = (g.data_offset + t.offset + t.size).next_multiple_of(g.alignment) as usize;
            data[from..to.min(data.len())].iter().all(|&b| b == 0)
        });
    if zero_padding && data.len() == end && !g.tensors.is_empty() {
        assert_eq!(out, data);
    }
});
