use std::sync::Arc;

use super::answer::Reader;
use super::tools::{Arguments, Call};
use super::*;
use crate::patch::Pipeline;
use crate::rules::validate_spec;

fn detectors(rules: &[&str]) -> Arc<Detectors> {
    let rules = rules
        .iter()
        .map(|toml| {
            let value: toml::Value = toml::from_str(toml).unwrap();
            let spec: crate::rules::RuleSpec = value.try_into().unwrap();
            validate_spec(std::path::Path::new("t.toml"), None, &spec).unwrap()
        })
        .collect();
    let pipeline = Pipeline::new(rules).unwrap();
    Arc::new(Detectors::new(pipeline.table().clone()).unwrap())
}

fn rule(id: &str, detector: &str, action: &str) -> String {
    format!("id = \"{id}\"\nkind = \"detect\"\ndetector = \"{detector}\"\naction = \"{action}\"\n")
}

fn watch(d: &Arc<Detectors>, tools: Tools) -> Watch {
    d.select("m", Endpoint::Chat)
        .unwrap()
        .watch(Arc::new(tools))
}

fn fed(d: &Arc<Detectors>, pieces: &[&str], ending: Ending) -> Vec<Finding> {
    let mut w = watch(d, Tools::default());
    for p in pieces {
        w.text(p);
    }
    w.end(ending);
    w.take_findings()
}

#[test]
fn a_refusal_at_the_start_fires_and_one_later_does_not() {
    let d = detectors(&[&rule("r", "refusal", "retry")]);
    let found = fed(
        &d,
        &["I", "'m", " sorry", ", but", " I", " can", "'t", " help"],
        Ending::Other,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].detector, "refusal");
    assert!(fed(
        &d,
        &["Here", " is", " why I can't help it: ..."],
        Ending::Other
    )
    .is_empty());
    // Curly apostrophes and leading whitespace.
    assert_eq!(
        fed(&d, &["\n  I can’t assist with that."], Ending::Other).len(),
        1
    );
    // The whole answer ends right after the phrase.
    assert_eq!(fed(&d, &["I won't"], Ending::Other).len(), 1);
}

#[test]
fn the_start_is_held_only_while_a_refusal_could_still_match() {
    let d = detectors(&[&rule("r", "refusal", "retry")]);
    let mut w = watch(&d, Tools::default());
    assert!(w.holding());
    w.text("I");
    assert!(w.holding(), "\"I\" could begin \"I can't\"");
    w.text("'ll");
    assert!(!w.holding(), "\"I'll\" begins no refusal");
    let mut w = watch(&d, Tools::default());
    w.text("Sure");
    assert!(!w.holding());
    // An audit rule never holds.
    let d = detectors(&[&rule("r", "refusal", "audit")]);
    assert!(!watch(&d, Tools::default()).holding());
}

#[test]
fn empty_and_truncated_answers() {
    let d = detectors(&[
        &rule("e", "empty", "retry"),
        &rule("t", "truncated", "retry"),
    ]);
    let found = fed(&d, &["", "  \n"], Ending::Other);
    assert_eq!(
        found.iter().map(|f| f.detector).collect::<Vec<_>>(),
        ["empty"]
    );
    let found = fed(&d, &[], Ending::Length);
    assert_eq!(
        found.iter().map(|f| f.detector).collect::<Vec<_>>(),
        ["truncated"]
    );
    assert!(fed(&d, &["ok"], Ending::Length).is_empty());
    assert!(fed(&d, &["ok"], Ending::Other).is_empty());
}

#[test]
fn tool_calls_are_checked_against_the_offered_tools_and_their_schemas() {
    let d = detectors(&[
        &rule("n", "tool_not_offered", "retry"),
        &rule("a", "tool_args_invalid", "retry"),
    ]);
    let request = serde_json::json!({"tools": [{"type": "function", "function": {
        "name": "read_file",
        "parameters": {"type": "object", "required": ["path"],
                       "properties": {"path": {"type": "string"},
                                      "mode": {"enum": ["text", "bytes"]}}}}}]});
    let check = |call: Call| {
        let mut w = watch(&d, Tools::of_request(&request));
        w.tool_call(call);
        w.end(Ending::Other);
        w.take_findings()
            .iter()
            .map(|f| f.detector)
            .collect::<Vec<_>>()
    };
    let call = |name: &str, arguments: Arguments| Call {
        name: name.into(),
        arguments,
    };
    let ok = serde_json::json!({"path": "src/main.rs"});
    assert!(check(call("read_file", Arguments::Value(ok.clone()))).is_empty());
    assert!(check(call("read_file", Arguments::Text(ok.to_string()))).is_empty());
    assert_eq!(
        check(call("write_file", Arguments::Value(ok))),
        ["tool_not_offered"]
    );
    assert_eq!(
        check(call("read_file", Arguments::Text("{\"path\": ".into()))),
        ["tool_args_invalid"]
    );
    assert_eq!(
        check(call(
            "read_file",
            Arguments::Value(serde_json::json!({"mode": "text"}))
        )),
        ["tool_args_invalid"]
    );
    assert_eq!(
        check(call(
            "read_file",
            Arguments::Value(serde_json::json!({"path": "a", "mode": "lines"}))
        )),
        ["tool_args_invalid"]
    );
    assert_eq!(
        check(call(
            "read_file",
            Arguments::Value(serde_json::json!(["a"]))
        )),
        ["tool_args_invalid"]
    );
    // A `$ref` to a URL is not fetched, and a backtracking `pattern` does not compile on the
    // linear-time engine: the schema is not held against the call (only "a JSON object" is).
    let hostile = serde_json::json!({"tools": [{"type": "function", "function": {
        "name": "f",
        "parameters": {"type": "object", "properties": {
            "a": {"$ref": "http://127.0.0.1:9/schema.json"},
            "b": {"type": "string", "pattern": "^(a+)+\\1$"}}}}}]});
    let mut w = watch(&d, Tools::of_request(&hostile));
    w.tool_call(call(
        "f",
        Arguments::Value(serde_json::json!({"b": format!("{}!", "a".repeat(40))})),
    ));
    w.end(Ending::Other);
    assert!(w.take_findings().is_empty());
    // Patterns the linear engine runs still hold.
    let strict = serde_json::json!({"tools": [{"type": "function", "function": {
        "name": "f",
        "parameters": {"type": "object", "properties": {
            "b": {"type": "string", "pattern": "^[a-z]+$"}}}}}]});
    let mut w = watch(&d, Tools::of_request(&strict));
    w.tool_call(call("f", Arguments::Value(serde_json::json!({"b": "A1"}))));
    w.end(Ending::Other);
    assert_eq!(w.take_findings().len(), 1);
}

#[test]
fn a_loop_fires_and_code_with_repeated_lines_does_not() {
    let d = detectors(&[&rule("l", "repetition", "stop")]);
    let looped = "The answer is five. ".repeat(30);
    let found = fed(&d, &["Well. ", &looped], Ending::Other);
    assert_eq!(found.len(), 1, "{found:?}");
    // Streamed a few bytes at a time, the same.
    let text = format!("Well. {looped}");
    let pieces: Vec<&str> = text
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let streamed = fed(&d, &pieces, Ending::Other);
    assert_eq!(streamed.len(), 1);
    assert_eq!(
        streamed[0].at, found[0].at,
        "same place whatever the pieces"
    );
    let code = "match x {\n".to_string()
        + &(0..40)
            .map(|i| format!("    {i} => \"v{i}\",\n"))
            .collect::<String>()
        + "}\n"
        + &"}\n".repeat(10)
        + &"    0, 0, 0, 0, 0, 0, 0, 0,\n".repeat(32);
    assert!(fed(&d, &[&code], Ending::Other).is_empty());
}

#[test]
fn custom_patterns_at_the_start_and_anywhere() {
    let d = detectors(&[
        "id = \"s\"\nkind = \"detect\"\npattern = 'hello'\nposition = \"start\"\naction = \"retry\"\n",
        "id = \"a\"\nkind = \"detect\"\npattern = 'lorem\\s+ipsum'\naction = \"stop\"\n",
    ]);
    let ids = |f: Vec<Finding>| f.into_iter().map(|f| f.rule_id).collect::<Vec<_>>();
    assert_eq!(ids(fed(&d, &[" hel", "lo world"], Ending::Other)), ["s"]);
    assert!(ids(fed(&d, &["say hello"], Ending::Other)).is_empty());
    let found = fed(&d, &["one lorem", " ", "ipsum two"], Ending::Other);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].at, "one lorem ipsum".len());
}

#[test]
fn abandonment_anywhere() {
    let d = detectors(&[&rule("ab", "abandonment", "audit")]);
    assert_eq!(
        fed(
            &d,
            &["fn a() {}\n", "I'll leave the rest ", "to you."],
            Ending::Other
        )
        .len(),
        1
    );
    assert!(fed(
        &d,
        &["Leave the rest of the config unchanged."],
        Ending::Other
    )
    .is_empty());
}

#[test]
fn the_reader_follows_each_protocol() {
    let d = detectors(&[
        &rule("r", "refusal", "retry"),
        &rule("n", "tool_not_offered", "retry"),
    ]);
    let selected = d.select("m", Endpoint::OpenaiChat).unwrap();
    let mut w = selected.watch(Arc::new(Tools::default()));
    let mut reader = Reader::default();
    for event in [
        r#"data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"x","function":{"name":"rm","arguments":"{\"a\""}}]}}]}"#,
        r#"data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
        r#"data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    ] {
        reader.sse_event(
            Endpoint::OpenaiChat,
            format!("{event}\n\n").as_bytes(),
            &mut w,
        );
    }
    assert!(reader.ended);
    let found = w.take_findings();
    assert_eq!(
        found.iter().map(|f| f.detector).collect::<Vec<_>>(),
        ["tool_not_offered"]
    );
    assert_eq!(w.calls()[0].arguments, Arguments::Text("{\"a\":1}".into()));
    let ending = String::from_utf8(reader.stop_ending(Endpoint::OpenaiChat, "r")).unwrap();
    assert!(ending.starts_with("data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"rawrxd_stopped\":\"r\"}\n\ndata: [DONE]\n\n"), "{ending}");
}

#[test]
fn retry_bodies_add_the_correction_and_options() {
    let body = br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"do it"}],"options":{"temperature":0}}"#;
    let mut options = serde_json::Map::new();
    options.insert("temperature".into(), serde_json::json!(0.7));
    let out = retry::retry_body(Endpoint::Chat, body, Some("Answer directly."), &options).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["messages"][1]["content"], "do it\n\nAnswer directly.");
    assert_eq!(out["messages"].as_array().unwrap().len(), 2);
    assert_eq!(out["options"]["temperature"], 0.7);
    let body = br#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}"#;
    let out = retry::retry_body(Endpoint::OpenaiChat, body, Some("C"), &options).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        out["messages"][2],
        serde_json::json!({"role": "user", "content": "C"})
    );
    assert_eq!(out["temperature"], 0.7);
    let out = retry::retry_body(
        Endpoint::Generate,
        br#"{"prompt":"p"}"#,
        Some("C"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(out, br#"{"prompt":"p\n\nC"}"#);
    assert!(retry::retry_body(Endpoint::Chat, b"[1]", Some("C"), &options).is_err());
}

#[test]
fn detect_rules_survive_the_round_trip_through_their_spec() {
    // The rule store keeps `rule.to_spec()` and validates it again on load.
    for toml in [
        rule("a", "refusal", "audit"),
        rule("b", "repetition", "stop"),
        format!("{}repeats = 9\n", rule("c", "repetition", "audit")),
        format!(
            "{}max_retries = 2\ncorrection = \"Do it.\"\nretry_options = {{ temperature = 0.5, seed = 3 }}\n",
            rule("d", "tool_args_invalid", "retry")
        ),
        "id = \"e\"\nkind = \"detect\"\npattern = 'x+y'\nposition = \"start\"\naction = \"retry\"\ncase_insensitive = true\n".to_string(),
        "id = \"f\"\nkind = \"detect\"\npattern = 'loop'\naction = \"stop\"\nmax_len = 10\n".to_string(),
    ] {
        let value: toml::Value = toml::from_str(&toml).unwrap();
        let spec: crate::rules::RuleSpec = value.try_into().unwrap();
        let rule = validate_spec(std::path::Path::new("t.toml"), None, &spec).unwrap();
        let again = validate_spec(std::path::Path::new("t.toml"), None, &rule.to_spec())
            .unwrap_or_else(|e| panic!("{toml}: {e:?}"));
        assert_eq!(again, rule, "{toml}");
    }
}

#[test]
fn detect_rules_are_validated() {
    let errors = |toml: &str| {
        let value: toml::Value = toml::from_str(toml).unwrap();
        let spec: crate::rules::RuleSpec = value.try_into().unwrap();
        validate_spec(std::path::Path::new("t.toml"), None, &spec)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.render())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(errors(&rule("a", "refusal", "retry")).is_empty());
    assert!(errors(&rule("a", "nonsense", "audit")).contains("unknown detector"));
    assert!(errors(&rule("a", "refusal", "explode")).contains("unknown action"));
    assert!(errors(&rule("a", "empty", "stop")).contains("`stop` applies to"));
    assert!(errors(&format!(
        "{}max_retries = 4\n",
        rule("a", "refusal", "retry")
    ))
    .contains("between 1 and 3"));
    assert!(errors(&format!(
        "{}correction = \"x\"\n",
        rule("a", "refusal", "audit")
    ))
    .contains("applies to `action = \"retry\"`"));
    assert!(
        errors(&format!("{}repeats = 4\n", rule("a", "refusal", "audit"))).contains("repetition")
    );
    assert!(
        errors("id = \"a\"\nkind = \"detect\"\naction = \"audit\"\n").contains("needs `detector`")
    );
    assert!(errors("id = \"a\"\nkind = \"detect\"\npattern = 'a*'\n").contains("empty string"));
    assert!(
        errors("id = \"a\"\nkind = \"detect\"\npattern = 'a'\nposition = \"middle\"\n")
            .contains("unknown position")
    );
}

#[test]
fn an_open_ended_start_pattern_stops_holding_past_its_bound() {
    let d = detectors(&[
        "id = \"s\"\nkind = \"detect\"\npattern = 'x[^z]*z'\nposition = \"start\"\naction = \"retry\"\n",
    ]);
    let mut w = watch(&d, Tools::default());
    w.text("x");
    assert!(w.holding());
    for _ in 0..2000 {
        w.text("y");
    }
    assert!(!w.holding(), "held past 4 x max_len");
    w.text("z");
    w.end(Ending::Other);
    assert!(w.take_findings().is_empty());
}

/// Text made of a few words, sentence ends and code marks, so loops, refusals and list
/// elements all turn up.
fn text_strategy() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let piece = prop::sample::select(vec![
        "I",
        "I'm",
        " sorry",
        ", but",
        " can't",
        " help",
        " the",
        " code",
        ".",
        " ",
        "\n",
        "0x00",
        ",",
        "(",
        ")",
        "Yes",
        " é",
        "好的",
        "。",
        "\\",
        "x0",
        "leave the rest to you",
        "}",
    ]);
    let unit = prop::collection::vec(piece, 1..6).prop_map(|p| p.concat());
    (prop::collection::vec(unit, 1..8), 1..40usize).prop_map(|(units, times)| {
        let mut text = String::new();
        for (i, unit) in units.iter().enumerate() {
            // The last unit repeats, to make loops of every shape.
            let n = if i + 1 == units.len() { times } else { 1 };
            for _ in 0..n {
                text.push_str(unit);
            }
        }
        text
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// However the answer is cut into pieces, the watch finds the same failures at the same
    /// places: streamed detection equals detection of the whole text.
    #[test]
    fn findings_do_not_depend_on_how_the_answer_is_cut(
        text in text_strategy(),
        cuts in proptest::collection::vec(1usize..12, 1..64),
    ) {
        let d = detectors(&[
            &rule("r", "refusal", "retry"),
            &rule("a", "abandonment", "audit"),
            &rule("l", "repetition", "stop"),
            "id = \"p\"\nkind = \"detect\"\npattern = 'help\\s+the'\naction = \"stop\"\n",
        ]);
        let whole = fed(&d, &[&text], Ending::Other);
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= text.len() {
                break;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            pieces.push(&text[at..end]);
            at = end;
        }
        let mut streamed = fed(&d, &pieces, Ending::Other);
        let mut whole = whole;
        // Within one piece rules fire in table order; across pieces, in text order.
        whole.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
        streamed.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
        let key = |f: &Finding| (f.rule_id.clone(), f.detector);
        proptest::prop_assert_eq!(
            whole.iter().map(key).collect::<Vec<_>>(),
            streamed.iter().map(key).collect::<Vec<_>>()
        );
        for (w, s) in whole.iter().zip(&streamed) {
            if w.detector == "repetition" || w.detector == "pattern" {
                proptest::prop_assert_eq!(w.at, s.at, "{}", w.detector);
            }
        }
    }
}

#[test]
fn units_split_lines_and_events_and_never_grow_past_their_cap() {
    let mut lines = answer::Units::new(false);
    lines.push(b"{\"a\":1}\n{\"b\"");
    assert_eq!(lines.next_unit().as_deref(), Some(&b"{\"a\":1}\n"[..]));
    assert_eq!(lines.next_unit(), None, "half a line waits");
    lines.push(b":2}\n");
    assert_eq!(lines.next_unit().as_deref(), Some(&b"{\"b\":2}\n"[..]));
    let mut events = answer::Units::new(true);
    events.push(b"data: {}\r\n\r\ndata: [DONE]\n\n");
    assert_eq!(
        events.next_unit().as_deref(),
        Some(&b"data: {}\r\n\r\n"[..])
    );
    assert_eq!(
        events.next_unit().as_deref(),
        Some(&b"data: [DONE]\n\n"[..])
    );
    // A line that never ends goes out once it passes the cap.
    let mut endless = answer::Units::new(false);
    endless.push(&vec![b'x'; answer::MAX_UNIT + 1]);
    assert_eq!(
        endless.next_unit().map(|u| u.len()),
        Some(answer::MAX_UNIT + 1)
    );
}
