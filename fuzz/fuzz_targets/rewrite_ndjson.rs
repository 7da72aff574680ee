//! The NDJSON re-framer on any bytes, split anywhere: never panics, and the client sees the
//! same bytes whatever the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rawrxd::patch::rewrite::Format;
use rawrxd::rules::Endpoint;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check_split_invariance(data, Format::Ndjson, Endpoint::Generate);
    common::check_split_invariance(data, Format::Ndjson, Endpoint::Chat);
});
