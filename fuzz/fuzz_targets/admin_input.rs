//! What the admin API and `rawrxd audit search` accept from outside: any text as the query of
//! `/rawrxd/corrections` (errors, never panics), as a JSON rule body (validated, never
//! panics), and as search words, which must never be an FTS5 syntax error against a real
//! database.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use rawrxd::store::{CorrectionQuery, Store};

fn store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("rawrxd-fuzz-{}.db", std::process::id()));
        Mutex::new(Store::open(&path).expect("open a scratch database"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rawrxd::proxy::admin::correction_query(Some(text));
    if let Ok(spec) = serde_json::from_str::<rawrxd::rules::RuleSpec>(text) {
        let _ = rawrxd::rules::validate_spec(std::path::Path::new("<api>"), None, &spec);
    }
    let store = store().lock().unwrap_or_else(|e| e.into_inner());
    let search = CorrectionQuery {
        text: Some(text.to_string()),
        limit: 1,
        ..CorrectionQuery::default()
    };
    if let Err(error) = store.search_corrections(&search) {
        panic!("search text {text:?} failed: {error}");
    }
});
