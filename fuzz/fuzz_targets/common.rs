//! Shared by the re-framer fuzz targets.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rawrxd::patch::{Compiled, Pipeline};
use rawrxd::patch::rewrite::{Format, Rewriter};
use rawrxd::rules::{parse_file, Endpoint};

const RULES: &str = r#"
[[rule]]
id = "lit"
kind = "replace"
find = "ab"
replace = "X"

[[rule]]
id = "re"
kind = "regex"
pattern = 'c\d{1,3}'
replace = "<$0>"

[[rule]]
id = "blk"
kind = "block"
find = "zz"
message = "[B]"
"#;

fn compiled() -> Arc<Compiled> {
    static COMPILED: OnceLock<Arc<Compiled>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let rules = parse_file(Path::new("fuzz.toml"), RULES).expect("valid rules");
            Pipeline::new(rules)
                .expect("compiles")
                .select("m", None)
                .expect("rules apply")
        })
        .clone()
}

/// First byte picks a split point; the rest is the upstream body.
pub fn check_split_invariance(data: &[u8], format: Format, endpoint: Endpoint) {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut r = Rewriter::new(compiled(), endpoint, format);
        let mut out = r.feed(body);
        out.extend(r.finish());
        out
    };
    let cut = if body.is_empty() { 0 } else { seed as usize % (body.len() + 1) };
    let mut r = Rewriter::new(compiled(), endpoint, format);
    let mut out = r.feed(&body[..cut]);
    out.extend(r.feed(&body[cut..]));
    out.extend(r.finish());
    assert_eq!(out, whole, "output depends on where the body was split");
}
