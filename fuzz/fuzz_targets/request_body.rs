//! Any bytes as a request body to one of the four patched endpoints, under a rule set with
//! every request-side kind: `RequestPatches::apply` never panics; a body it rewrites is a JSON
//! object (when the original was one serde_json reads); and patching is idempotent — the rewritten body, patched again, changes no more
//! (agents resend what they sent, and a second pass must not stack prompts or stops).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rawrxd::patch::Pipeline;
use rawrxd::request::{Outcome, RequestPatches};
use rawrxd::rules::{parse_file, Endpoint};

const RULES: &str = include_str!("../../tests/fixtures/request/all_kinds.toml");

fn patches() -> &'static RequestPatches {
    static PATCHES: OnceLock<RequestPatches> = OnceLock::new();
    PATCHES.get_or_init(|| {
        let rules = parse_file(Path::new("fuzz.toml"), RULES).expect("the rules are valid");
        RequestPatches::new(Pipeline::new(rules).expect("they compile").table().clone())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = [
        Endpoint::Generate,
        Endpoint::Chat,
        Endpoint::OpenaiChat,
        Endpoint::OpenaiCompletions,
    ][usize::from(selector % 4)];
    let model = if selector & 4 == 0 { "gpt-4o" } else { "m" };
    let Outcome::Patched(first) = patches().apply(endpoint, model, body) else {
        return;
    };
    let Some(rewritten) = first.body else {
        return;
    };
    // Fields no rule reads are copied as the client wrote them, so a body serde_json itself
    // refuses (a number out of f64 range in such a field) stays exactly as refusable.
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        let value: serde_json::Value =
            serde_json::from_slice(&rewritten).expect("a rewritten body is JSON");
        assert!(value.is_object(), "a rewritten body is an object");
    }
    match patches().apply(endpoint, &first.model, &rewritten) {
        Outcome::Patched(second) => assert!(
            second.body.is_none(),
            "patching twice changed more: {:?}",
            second.hits
        ),
        other => panic!("the rewritten body could not be patched again: {other:?}"),
    }
});
