#![allow(clippy::unwrap_used)]
use std::path::Path;

use super::*;
use crate::patch::Pipeline;
use crate::rules::parse_file;

fn patches(toml: &str) -> RequestPatches {
    let rules = parse_file(Path::new("rules/t.toml"), toml).unwrap();
    RequestPatches::new(Pipeline::new(rules).unwrap().table().clone())
}

/// The patched body as JSON text (key order as written), and the hits' (rule, detected,
/// corrected).
fn run(p: &RequestPatches, endpoint: Endpoint, body: &str) -> (String, Vec<(String, String)>) {
    let model = serde_json::from_str::<Value>(body).unwrap()["model"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match p.apply(endpoint, &model, body.as_bytes()) {
        Outcome::Patched(patched) => (
            patched
                .body
                .map(|b| String::from_utf8(b).unwrap())
                .unwrap_or_else(|| body.to_string()),
            patched
                .hits
                .into_iter()
                .map(|h| (h.detected, h.corrected))
                .collect(),
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn system_prompt_goes_where_each_api_keeps_it_and_only_once() {
    let p = patches("[[rule]]\nid = \"house\"\nkind = \"system_prompt\"\ntext = \"Be brief.\"\n");
    // Chat without a system message: one is inserted at the front.
    let (body, hits) = run(
        &p,
        Endpoint::Chat,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#,
    );
    assert_eq!(
        body,
        r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}],"stream":false}"#
    );
    assert_eq!(hits.len(), 1);
    // The same conversation resent (agents resend the history): not added twice.
    let (again, hits) = run(&p, Endpoint::Chat, &body);
    assert_eq!(again, body);
    assert!(hits.is_empty());
    // An existing system message gets the text in front of it.
    let (body, _) = run(
        &p,
        Endpoint::OpenaiChat,
        r#"{"model":"m","messages":[{"role":"developer","content":"Use Rust."},{"role":"user","content":"x"}]}"#,
    );
    assert!(
        body.contains(r#"{"role":"developer","content":"Be brief.\n\nUse Rust."}"#),
        "{body}"
    );
    // Generate: the `system` field.
    let (body, _) = run(&p, Endpoint::Generate, r#"{"model":"m","prompt":"x"}"#);
    assert_eq!(body, r#"{"model":"m","prompt":"x","system":"Be brief."}"#);
    // Completions: a prefix of the prompt (prepend only).
    let (body, _) = run(
        &p,
        Endpoint::OpenaiCompletions,
        r#"{"model":"m","prompt":"fn main"}"#,
    );
    assert_eq!(body, r#"{"model":"m","prompt":"Be brief.\n\nfn main"}"#);
    let append = patches(
        "[[rule]]\nid = \"a\"\nkind = \"system_prompt\"\ntext = \"T\"\nposition = \"append\"\n",
    );
    let original = r#"{"model":"m","prompt":"fn main"}"#;
    assert_eq!(
        append.apply(Endpoint::OpenaiCompletions, "m", original.as_bytes()),
        Outcome::Patched(Patched {
            body: None,
            model: "m".into(),
            hits: vec![]
        })
    );
    let (body, _) = run(
        &append,
        Endpoint::Chat,
        r#"{"model":"m","messages":[{"role":"system","content":"S"}]}"#,
    );
    assert!(body.contains(r#""content":"S\n\nT""#), "{body}");
}

#[test]
fn params_map_to_each_api_and_ops_behave() {
    let p = patches(
        r#"
[[rule]]
id = "cap-temp"
kind = "param"
name = "temperature"
op = "max"
value = 0.4

[[rule]]
id = "ctx"
kind = "param"
name = "num_ctx"
op = "default"
value = 8192

[[rule]]
id = "cap-predict"
kind = "param"
name = "num_predict"
op = "max"
value = 100

[[rule]]
id = "no-think"
kind = "param"
name = "think"
value = false

[[rule]]
id = "drop-seed"
kind = "param"
name = "seed"
op = "remove"
"#,
    );
    let (body, hits) = run(
        &p,
        Endpoint::Chat,
        r#"{"model":"m","options":{"temperature":0.9,"seed":7,"num_predict":-1},"messages":[]}"#,
    );
    assert_eq!(
        body,
        r#"{"model":"m","options":{"temperature":0.4,"num_predict":100,"num_ctx":8192},"messages":[],"think":false}"#
    );
    assert_eq!(
        hits[0],
        (
            "options.temperature=0.9".to_string(),
            "options.temperature=0.4".to_string()
        )
    );
    assert_eq!(hits.len(), 5);
    // Below the cap and already set: untouched, not re-serialized.
    let (body, hits) = run(
        &p,
        Endpoint::Generate,
        r#"{"model":"m", "options":{"temperature":0.1,"num_ctx":2048,"num_predict":5},"think":false}"#,
    );
    assert_eq!(
        body,
        r#"{"model":"m", "options":{"temperature":0.1,"num_ctx":2048,"num_predict":5},"think":false}"#
    );
    assert!(hits.is_empty());
    // OpenAI: top-level names; num_predict is max_tokens, or max_completion_tokens when used;
    // num_ctx and think have no OpenAI spelling and are skipped.
    let (body, _) = run(
        &p,
        Endpoint::OpenaiChat,
        r#"{"model":"m","temperature":1.5,"max_completion_tokens":4000,"seed":1,"messages":[]}"#,
    );
    assert_eq!(
        body,
        r#"{"model":"m","temperature":0.4,"max_completion_tokens":100,"messages":[]}"#
    );
    let (body, _) = run(
        &p,
        Endpoint::OpenaiCompletions,
        r#"{"model":"m","prompt":"x"}"#,
    );
    assert_eq!(
        body,
        r#"{"model":"m","prompt":"x","temperature":0.4,"max_tokens":100}"#
    );
}

#[test]
fn stops_are_added_once_to_what_the_client_sent() {
    let p = patches("[[rule]]\nid = \"s\"\nkind = \"stop\"\nsequences = [\"\\n\\n\", \"END\"]\n");
    let (body, _) = run(
        &p,
        Endpoint::Generate,
        r#"{"model":"m","options":{"stop":["END"]}}"#,
    );
    assert_eq!(body, r#"{"model":"m","options":{"stop":["END","\n\n"]}}"#);
    let (body, _) = run(&p, Endpoint::OpenaiChat, r#"{"model":"m","stop":"%%%"}"#);
    assert_eq!(body, r#"{"model":"m","stop":["%%%","\n\n","END"]}"#);
    let (again, hits) = run(&p, Endpoint::OpenaiChat, &body);
    assert_eq!((again, hits.len()), (body, 0));
}

#[test]
fn aliases_come_first_and_other_rules_select_by_the_new_model() {
    let p = patches(
        r#"
[[rule]]
id = "only-qwen"
kind = "param"
name = "temperature"
value = 0.0
models = ["qwen*"]

[[rule]]
id = "gpt-alias"
kind = "alias"
from = "gpt-*"
to = "qwen2.5-coder:7b"
"#,
    );
    let (body, hits) = run(
        &p,
        Endpoint::OpenaiChat,
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(
        body,
        r#"{"model":"qwen2.5-coder:7b","messages":[],"temperature":0.0}"#
    );
    assert_eq!(hits[0].0, "model=gpt-4o");
    match p.apply(Endpoint::OpenaiChat, "gpt-4o", br#"{"model":"gpt-4o"}"#) {
        Outcome::Patched(patched) => assert_eq!(patched.model, "qwen2.5-coder:7b"),
        other => panic!("{other:?}"),
    }
    // No rule for this model: the body is not even parsed.
    assert_eq!(
        p.apply(Endpoint::Chat, "llama3", b"not json at all"),
        Outcome::NotApplicable
    );
}

#[test]
fn bodies_that_cannot_be_patched_are_skipped_not_broken() {
    let p = patches("[[rule]]\nid = \"t\"\nkind = \"param\"\nname = \"temperature\"\nop = \"max\"\nvalue = 0.5\n");
    for body in [
        "not json",
        "[1, 2]",
        r#"{"model":"m","options":"hot"}"#,
        r#"{"model":"m","options":{"temperature":"very"}}"#,
        // Parsers disagree on repeated keys (the upstream's takes the last).
        r#"{"model":"m","options":{"temperature":0.1},"options":{"temperature":1}}"#,
    ] {
        assert!(
            matches!(
                p.apply(Endpoint::Generate, "m", body.as_bytes()),
                Outcome::Skipped { .. }
            ),
            "{body}"
        );
    }
    // A skip counts nothing against the rule.
    assert_eq!(p.table.counters[0].hits.load(Ordering::Relaxed), 0);
}

#[test]
fn shadow_rules_report_and_change_nothing() {
    let p = patches(
        "[[rule]]\nid = \"t\"\nkind = \"param\"\nname = \"temperature\"\nvalue = 0.1\nmode = \"shadow\"\n",
    );
    match p.apply(Endpoint::Generate, "m", br#"{"model":"m"}"#) {
        Outcome::Patched(patched) => {
            assert_eq!(patched.body, None);
            assert_eq!(patched.hits.len(), 1);
            assert!(patched.hits[0].shadow);
        }
        other => panic!("{other:?}"),
    }
    let counters = &p.table.counters[0];
    assert_eq!(counters.shadowed.load(Ordering::Relaxed), 1);
    assert_eq!(counters.applied.load(Ordering::Relaxed), 0);
}

#[test]
fn param_rules_are_type_checked_when_loaded() {
    let bad = |toml: &str| {
        parse_file(Path::new("t.toml"), toml)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let head = "[[rule]]\nid = \"p\"\nkind = \"param\"\n";
    assert!(
        bad(&format!("{head}name = \"temperature\"\nvalue = \"hot\"\n"))
            .contains("must be a number")
    );
    assert!(bad(&format!("{head}name = \"top_k\"\nvalue = 1.5\n")).contains("whole number"));
    assert!(bad(&format!("{head}name = \"temprature\"\nvalue = 1\n")).contains("unknown parameter"));
    assert!(bad(&format!(
        "{head}name = \"think\"\nop = \"max\"\nvalue = 1\n"
    ))
    .contains("numeric"));
    assert!(bad(&format!(
        "{head}name = \"seed\"\nop = \"remove\"\nvalue = 1\n"
    ))
    .contains("takes no value"));
    assert!(
        bad("[[rule]]\nid = \"a\"\nkind = \"alias\"\nfrom = \"x\"\nto = \"y*\"\n").contains("glob")
    );
    assert!(bad("[[rule]]\nid = \"a\"\nkind = \"alias\"\nto = \"y\"\n").contains("from"));
}

#[test]
fn a_shadow_alias_reports_and_rules_select_by_the_clients_model() {
    let p = patches(
        r#"
[[rule]]
id = "alias"
kind = "alias"
from = "gpt-*"
to = "qwen"
mode = "shadow"

[[rule]]
id = "qwen-only"
kind = "stop"
sequences = ["x"]
models = ["qwen"]
"#,
    );
    match p.apply(Endpoint::Chat, "gpt-4o", br#"{"model":"gpt-4o"}"#) {
        Outcome::Patched(patched) => {
            assert_eq!(patched.model, "gpt-4o");
            assert_eq!(patched.body, None);
            assert_eq!(patched.hits.len(), 1);
            assert!(patched.hits[0].shadow);
        }
        other => panic!("{other:?}"),
    }
}

/// Every request-side kind at once (shared with the fuzz target `request_body`).
const ALL_KINDS: &str = include_str!("../../tests/fixtures/request/all_kinds.toml");

mod properties {
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Be brief.".to_string()),
            Just("END".to_string()),
            "[a-z \\n]{0,12}",
        ]
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-5i64..200).prop_map(Value::from),
            (-1.0f64..3.0).prop_map(Value::from),
            Just(json!("hot")),
            Just(Value::Null),
        ]
    }

    fn stops() -> impl Strategy<Value = Value> {
        prop_oneof![
            text().prop_map(Value::from),
            prop::collection::vec(text(), 0..3).prop_map(Value::from),
            Just(json!(7)),
        ]
    }

    fn message() -> impl Strategy<Value = Value> {
        let role = prop::sample::select(vec!["system", "user", "assistant", "developer", "tool"]);
        prop_oneof![
            (role, text()).prop_map(|(role, content)| json!({"role": role, "content": content})),
            text()
                .prop_map(|t| json!([{"type": "text", "text": t}]))
                .prop_map(|content| json!({"role": "system", "content": content})),
            Just(json!(3)),
        ]
    }

    /// A request body: some of the fields rules touch, in any state, plus one they never do.
    fn body() -> impl Strategy<Value = (Map<String, Value>, String)> {
        let options = prop::option::of(
            (
                prop::option::of(number()),
                prop::option::of(number()),
                prop::option::of(number()),
                prop::option::of(stops()),
            )
                .prop_map(|(t, p, s, st)| {
                    let mut o = Map::new();
                    for (k, v) in [
                        ("temperature", t),
                        ("num_predict", p),
                        ("seed", s),
                        ("stop", st),
                    ] {
                        if let Some(v) = v {
                            o.insert(k.into(), v);
                        }
                    }
                    Value::Object(o)
                }),
        );
        (
            prop::sample::select(vec!["gpt-4o", "m", "qwen"]),
            prop::option::of(prop::collection::vec(message(), 0..4)),
            options,
            prop::option::of(text()),
            prop::option::of(prop_oneof![
                text().prop_map(Value::from),
                prop::collection::vec(text(), 0..3).prop_map(Value::from)
            ]),
            prop::option::of(number()),
            prop::option::of(stops()),
            "[a-z]{0,8}",
        )
            .prop_map(
                |(model, messages, options, system, prompt, temperature, stop, extra)| {
                    let mut body = Map::new();
                    body.insert("model".into(), json!(model));
                    body.insert("extra".into(), json!({"keep": extra.clone()}));
                    if let Some(m) = messages {
                        body.insert("messages".into(), Value::from(m));
                    }
                    if let Some(o) = options {
                        body.insert("options".into(), o);
                    }
                    if let Some(s) = system {
                        body.insert("system".into(), json!(s));
                    }
                    if let Some(p) = prompt {
                        body.insert("prompt".into(), p);
                    }
                    if let Some(t) = temperature {
                        body.insert("temperature".into(), t);
                    }
                    if let Some(s) = stop {
                        body.insert("stop".into(), s);
                    }
                    (body, extra)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        /// A rewritten body is a JSON object that keeps every field no rule writes, in the
        /// client's order, and patching it again changes nothing more.
        #[test]
        fn patching_keeps_other_fields_and_is_idempotent(
            (body, extra) in body(),
            endpoint in prop::sample::select(vec![
                Endpoint::Generate, Endpoint::Chat, Endpoint::OpenaiChat, Endpoint::OpenaiCompletions,
            ]),
            pretty in any::<bool>(),
        ) {
            let p = patches(ALL_KINDS);
            let model = body["model"].as_str().unwrap().to_string();
            let bytes = match pretty {
                true => serde_json::to_vec_pretty(&body).unwrap(),
                false => serde_json::to_vec(&body).unwrap(),
            };
            let Outcome::Patched(first) = p.apply(endpoint, &model, &bytes) else {
                return Ok(());
            };
            let Some(rewritten) = first.body else {
                return Ok(());
            };
            let value: Value = serde_json::from_slice(&rewritten).unwrap();
            let object = value.as_object().unwrap();
            prop_assert_eq!(&object["extra"], &json!({"keep": extra}));
            let kept: Vec<&String> = object.keys().filter(|k| body.contains_key(*k)).collect();
            let original: Vec<&String> = body.keys().filter(|k| object.contains_key(*k)).collect();
            prop_assert_eq!(kept, original, "client's keys keep their order");
            match p.apply(endpoint, &first.model, &rewritten) {
                Outcome::Patched(second) => prop_assert!(second.body.is_none(), "{:?}", second.hits),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

/// Found by the fuzz target: a field no rule reads is copied as written, even a number
/// serde_json would refuse to read (out of f64 range); a rule that must read it skips.
#[test]
fn fields_no_rule_reads_are_copied_as_written() {
    let p = patches("[[rule]]\nid = \"t\"\nkind = \"param\"\nname = \"temperature\"\nop = \"max\"\nvalue = 0.5\n");
    let (body, hits) = run_raw(
        &p,
        Endpoint::Generate,
        r#"{"model":"m","x":8e800000086,"options":{"temperature":0.9}}"#,
    );
    assert_eq!(
        body,
        r#"{"model":"m","x":8e800000086,"options":{"temperature":0.5}}"#
    );
    assert_eq!(hits, 1);
    assert!(matches!(
        p.apply(
            Endpoint::Generate,
            "m",
            br#"{"model":"m","options":{"temperature":8e800000086}}"#
        ),
        Outcome::Skipped { .. }
    ));
}

/// `apply` on a body that serde_json may not read as a whole: (body sent on, hit count).
fn run_raw(p: &RequestPatches, endpoint: Endpoint, body: &str) -> (String, usize) {
    match p.apply(endpoint, "m", body.as_bytes()) {
        Outcome::Patched(patched) => (
            patched
                .body
                .map(|b| String::from_utf8(b).unwrap())
                .unwrap_or_else(|| body.to_string()),
            patched.hits.len(),
        ),
        other => panic!("{other:?}"),
    }
}
