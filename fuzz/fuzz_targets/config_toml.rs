//! Any bytes as rawrxd.toml: parsing and validation return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(raw) = rawrxd::config::from_toml_str(text) {
            let _ = raw.proxy.validate();
        }
    }
});
