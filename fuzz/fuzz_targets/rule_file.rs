//! Any text as a rule file: parsing, validation and compiling report errors, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = rawrxd::rules::parse_file(Path::new("fuzz.toml"), text) {
        if let Ok(pipeline) = rawrxd::patch::Pipeline::new(rules) {
            if let Some(compiled) = pipeline.select("m", None) {
                let _ = compiled.apply("some text ab c12 zz to patch");
            }
        }
    }
});
