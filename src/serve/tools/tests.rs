#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn names() -> Vec<String> {
    vec!["get_weather".into(), "search".into()]
}

/// Adjacent texts joined, so a streamed result compares with a one-shot one.
fn joined(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for piece in pieces {
        match (out.last_mut(), piece) {
            (_, Piece::Text(t)) if t.is_empty() => {}
            (Some(Piece::Text(last)), Piece::Text(t)) => last.push_str(&t),
            (_, piece) => out.push(piece),
        }
    }
    out
}

fn one_shot(format: &CallFormat, text: &str) -> Vec<Piece> {
    let mut parser = CallParser::new(format.clone(), names());
    let mut pieces = parser.push(text);
    pieces.extend(parser.finish());
    joined(pieces)
}

fn streamed(format: &CallFormat, chunks: &[&str]) -> Vec<Piece> {
    let mut parser = CallParser::new(format.clone(), names());
    let mut pieces = Vec::new();
    for chunk in chunks {
        pieces.extend(parser.push(chunk));
    }
    pieces.extend(parser.finish());
    joined(pieces)
}

fn text(s: &str) -> Piece {
    Piece::Text(s.into())
}

fn call(name: &str, arguments: Value) -> Piece {
    Piece::Call(ToolCall {
        name: name.into(),
        arguments,
    })
}

fn tagged() -> CallFormat {
    CallFormat::Tagged {
        open: "<|tool_call|>".into(),
        close: Some("<|/tool_call|>".into()),
    }
}

#[test]
fn hermes_calls_between_text() {
    let out = one_shot(
        &CallFormat::Hermes,
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\":\"search\",\"arguments\":\"{\\\"q\\\": 1}\"}</tool_call> done",
    );
    assert_eq!(
        out,
        vec![
            text("Let me check.\n"),
            call("get_weather", json!({"city": "Paris"})),
            text("\n"),
            call("search", json!({"q": 1})),
            text(" done"),
        ]
    );
}

#[test]
fn malformed_calls_come_out_as_the_bytes_the_model_wrote() {
    for bad in [
        "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"search\", \"arguments\": [1]}</tool_call>",
        "<tool_call>{\"name\": \"search\", \"arguments\": \"[1]\"}</tool_call>",
        "<tool_call>{\"name\": \"search\", \"arguments\": {}}",
        "<tool_call>{\"name\": \"search\", \"arguments\": {}} and then </tool_call>",
        "<tool_call>{\"name\": \"search\", \"arguments\": {,}}</tool_call>",
        "<tool_call>{\"name\": \"search\", \"arguments\": {]}</tool_call>",
        "<tool_call>not json</tool_call>",
        "<tool_call>{\"name\": \"search\", \"argum",
        "<tool_call>",
        "<tool_ca",
        "<tool_call>[]</tool_call>",
    ] {
        assert_eq!(one_shot(&CallFormat::Hermes, bad), vec![text(bad)], "{bad}");
    }
}

#[test]
fn text_is_held_only_while_it_could_start_a_marker() {
    let mut parser = CallParser::new(CallFormat::Hermes, names());
    assert_eq!(parser.push("a < b, <tool"), vec![text("a < b, ")]);
    assert_eq!(parser.push("box> ok"), vec![text("<toolbox> ok")]);
    assert_eq!(parser.push("<tool_call>{\"name\": "), vec![]);
    assert_eq!(
        parser.push("\"search\", \"arguments\": {}}\n</tool_"),
        vec![]
    );
    assert_eq!(
        parser.push("call>after"),
        vec![call("search", json!({})), text("after")]
    );
    assert_eq!(parser.finish(), vec![]);
}

#[test]
fn llama3_bare_objects_at_the_start_and_after_python_tag() {
    let f = CallFormat::Llama3;
    assert_eq!(
        one_shot(&f, " {\"name\": \"search\", \"parameters\": {\"q\": \"x\"}}; {\"name\": \"get_weather\", \"arguments\": {}}"),
        vec![
            text(" "),
            call("search", json!({"q": "x"})),
            text("; "),
            call("get_weather", json!({})),
        ]
    );
    // An object that is not a call is text, and so is a `{` later in the answer.
    let prose = "{\"answer\": 42} and {\"name\": \"search\", \"parameters\": {}}";
    assert_eq!(one_shot(&f, prose), vec![text(prose)]);
    assert_eq!(
        one_shot(
            &f,
            "Sure.<|python_tag|>{\"name\": \"search\", \"parameters\": {}}"
        ),
        vec![text("Sure."), call("search", json!({}))]
    );
    // Streaming: the leading object is held while open, plain text is not.
    let mut parser = CallParser::new(f.clone(), names());
    assert_eq!(parser.push("{\"name\": \"sea"), vec![]);
    assert_eq!(parser.finish(), vec![text("{\"name\": \"sea")]);
    let mut parser = CallParser::new(f, names());
    assert_eq!(parser.push("Hello {"), vec![text("Hello {")]);
}

#[test]
fn mistral_lists_and_tagged_markers() {
    assert_eq!(
        one_shot(
            &CallFormat::Mistral,
            "[TOOL_CALLS][{\"name\": \"search\", \"arguments\": {\"q\": \"a\"}, \"id\": \"abcdefghi\"}, {\"name\": \"get_weather\", \"arguments\": {}}]"
        ),
        vec![
            call("search", json!({"q": "a"})),
            call("get_weather", json!({}))
        ]
    );
    // One bad call spoils the list: all of it is text.
    let bad = "[TOOL_CALLS][{\"name\": \"search\", \"arguments\": {}}, {\"name\": \"nope\", \"arguments\": {}}]";
    assert_eq!(one_shot(&CallFormat::Mistral, bad), vec![text(bad)]);
    assert_eq!(
        one_shot(
            &tagged(),
            "x<|tool_call|>[{\"name\": \"search\", \"arguments\": {}}]<|/tool_call|>y"
        ),
        vec![text("x"), call("search", json!({})), text("y")]
    );
}

#[test]
fn mistral_named_calls() {
    let f = CallFormat::Mistral;
    assert_eq!(
        one_shot(
            &f,
            "[TOOL_CALLS]search[ARGS]{\"q\": \"a\"}[TOOL_CALLS]get_weather[CALL_ID]abc123def[ARGS] {}"
        ),
        vec![call("search", json!({"q": "a"})), call("get_weather", json!({}))]
    );
    for bad in [
        "[TOOL_CALLS]nope[ARGS]{}",
        "[TOOL_CALLS]search[ARGS][1]",
        "[TOOL_CALLS]search[ARGS]",
        "[TOOL_CALLS]search [ARGS]{}",
        "[TOOL_CALLS]search[CALL_ID]x-y[ARGS]{}",
        "[TOOL_CALLS] Sure, here it is.",
    ] {
        assert_eq!(one_shot(&f, bad), vec![text(bad)], "{bad}");
    }
    let mut parser = CallParser::new(f, names());
    assert_eq!(parser.push("[TOOL_CALLS]sea"), vec![]);
    assert_eq!(parser.push("rch[CALL"), vec![]);
    assert_eq!(parser.push("_ID]x1[ARGS]{\"q\""), vec![]);
    assert_eq!(
        parser.push(": 1} ok"),
        vec![call("search", json!({"q": 1})), text(" ok")]
    );
}

#[test]
fn no_tools_means_no_calls() {
    let mut parser = CallParser::new(CallFormat::Hermes, Vec::new());
    let s = "<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>";
    let mut out = parser.push(s);
    out.extend(parser.finish());
    assert_eq!(joined(out), vec![text(s)]);
}

/// Fragments that put the parser's every branch to work when joined in any order.
const FRAGMENTS: &[&str] = &[
    "Hello ",
    " ",
    "\n",
    ";",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    "é😀",
    "<",
    "<tool",
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "<|python_tag|>",
    "<|tool_call|>",
    "<|/tool_call|>",
    "{\"name\": \"search\", \"arguments\": {\"q\": \"}\"}}",
    "{\"name\": \"get_weather\", \"parameters\": {}}",
    "[{\"name\": \"search\", \"arguments\": {}}]",
    "{\"name\": \"unknown\", \"arguments\": {}}",
    "{\"name\": \"search\", \"arguments\": \"{}\"}",
    "<tool_call>\n{\"name\": \"search\", \"arguments\": {}}\n</tool_call>",
    "search",
    "[ARGS]",
    "[CALL_ID]abc123def",
    "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}",
];

fn format_strategy() -> impl Strategy<Value = CallFormat> {
    prop_oneof![
        Just(CallFormat::Hermes),
        Just(CallFormat::Llama3),
        Just(CallFormat::Mistral),
        Just(tagged()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// For any split of the answer into pieces, the result equals the one-shot result, and
    /// the texts and calls together account for every byte (calls re-checked by position).
    #[test]
    fn any_split_gives_the_one_shot_result(
        format in format_strategy(),
        parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let answer: String = parts.concat();
        let expected = one_shot(&format, &answer);
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|i| i.index(answer.len() + 1))
            .filter(|&i| answer.is_char_boundary(i))
            .collect();
        at.sort_unstable();
        at.dedup();
        let mut chunks = Vec::new();
        let mut last = 0;
        for i in at {
            chunks.push(&answer[last..i]);
            last = i;
        }
        chunks.push(&answer[last..]);
        prop_assert_eq!(streamed(&format, &chunks), expected.clone());
        // With no calls, the text is the answer itself.
        if expected.iter().all(|p| matches!(p, Piece::Text(_))) {
            let all: String = expected
                .iter()
                .map(|p| match p { Piece::Text(t) => t.as_str(), Piece::Call(_) => "" })
                .collect();
            prop_assert_eq!(all, answer);
        }
    }

    /// Arbitrary text never panics and, without calls, comes back whole.
    #[test]
    fn arbitrary_text_comes_back(answer in "\\PC{0,64}", format in format_strategy()) {
        let out = one_shot(&format, &answer);
        let calls = out.iter().filter(|p| matches!(p, Piece::Call(_))).count();
        if calls == 0 {
            prop_assert_eq!(out, if answer.is_empty() { vec![] } else { vec![text(&answer)] });
        }
    }
}

#[test]
fn parse_tools_reads_names_and_reports_missing_ones() {
    let tools = [
        json!({"type": "function", "function": {"name": "a", "description": "A",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}),
        json!({"type": "function", "function": {"name": "b"}}),
    ];
    let defs = parse_tools(&tools).unwrap();
    assert_eq!(defs[0].name, "a");
    assert_eq!(defs[0].description, "A");
    assert_eq!(defs[1].parameters, json!({"type": "object"}));
    let err =
        parse_tools(&[json!({"type": "function", "function": {"description": "x"}})]).unwrap_err();
    assert!(err.contains("tools[0]") && err.contains("no name"), "{err}");
    assert!(parse_tools(&[json!({"type": "retrieval"})]).is_err());
    assert!(parse_tools(&[
        json!({"type": "function", "function": {"name": "a", "parameters": 3}})
    ])
    .is_err());
}

#[test]
fn a_compiled_template_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Jinja>();
    shared::<CallParser>();
}

#[test]
fn call_ids_have_their_shapes_and_differ() {
    let a = openai_tool_call_id();
    let b = openai_tool_call_id();
    assert_ne!(a, b);
    assert!(a.starts_with("call_") && a.len() == 29);
    assert!(a[5..].chars().all(|c| c.is_ascii_alphanumeric()));
    let m = CallFormat::Mistral.call_id();
    assert_eq!(m.len(), 9);
    assert!(m.chars().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn jinja_renders_like_transformers() {
    let source = "{{ bos_token }}{% for m in messages %}{{ m.role | upper }}: {{ m.content }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.arguments | tojson }}|{{ c.function.arguments | tojson(indent=2) }}|{{ c.function.arguments }}\n{% endfor %}{% endif %}{% endfor %}{{ none }}|{{ true }}|{{ 1e16 }}|{{ '  x '.strip() }}|{{ 'a,b'.split(',') }}|{% if tools is none %}no tools{% endif %}{{ eos_token }}";
    let jinja = Jinja::new(source, "<s>", "</s>").unwrap();
    assert!(jinja.supports_tools());
    assert_eq!(jinja.call_format(), None);
    let messages = [
        json!({"role": "user", "content": "hi <b> & \"you\""}),
        json!({"role": "assistant", "content": null, "tool_calls": [{"type": "function",
            "function": {"name": "f", "arguments": {"b": 1.0, "a": ["é", true, null]}}}]}),
    ];
    let out = jinja.render(&messages, None, true).unwrap();
    assert_eq!(
        out,
        "<s>USER: hi <b> & \"you\"\nASSISTANT: None\n{\"b\": 1.0, \"a\": [\"é\", true, null]}|{\n  \"b\": 1.0,\n  \"a\": [\n    \"é\",\n    true,\n    null\n  ]\n}|{'b': 1.0, 'a': ['é', True, None]}\nNone|True|1e+16|x|['a', 'b']|no tools</s>"
    );
}

#[test]
fn generation_blocks_render_their_content() {
    // transformers' `{% generation %}` (AssistantTracker) marks training tokens only.
    let source = "{% for m in messages %}\n  {%- generation -%}\n {{ m.content }}\n  {% endgeneration %}\n{% endfor %}";
    let jinja = Jinja::new(source, "", "").unwrap();
    let m = [json!({"content": "a"}), json!({"content": "b"})];
    assert_eq!(jinja.render(&m, None, false).unwrap(), "a\nb\n");
}

#[test]
fn jinja_errors_are_errors_not_panics() {
    let jinja = Jinja::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
    let err = jinja.render(&[], None, false).unwrap_err();
    assert!(err.contains("roles must alternate"), "{err}");
    assert!(Jinja::new("{% for %}", "", "").is_err());
    let jinja = Jinja::new("{{ messages[0].x.y }}", "", "").unwrap();
    assert!(jinja
        .render(&[json!({"role": "user"})], None, false)
        .is_err());
    // Loop controls, as transformers enables them.
    let jinja = Jinja::new(
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert!(!jinja.supports_tools());
    let m = [json!({"content": "a"}), json!({"content": "b"})];
    assert_eq!(jinja.render(&m, None, false).unwrap(), "a");
}

#[test]
fn formats_are_read_from_templates() {
    let hermes = "{% for t in tools %}{{ t | tojson }}{% endfor %}{% for m in messages %}{% for c in m.tool_calls or [] %}<tool_call>\n{{ c.function | tojson }}\n</tool_call>{% endfor %}{{ m.content }}<|im_end|>{% endfor %}";
    assert_eq!(
        Jinja::new(hermes, "", "").unwrap().call_format(),
        Some(CallFormat::Hermes)
    );
    // Markers only the rendered probe call shows.
    let probe = "{% for m in messages %}<|{{ m.role }}|>{% if m.tool_calls %}<|tool_call|>{{ m.tool_calls | map(attribute='function') | list | tojson }}<|/tool_call|>{% else %}{{ m.content }}{% endif %}<|end|>{% endfor %}{% if tools %}{% endif %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
    assert_eq!(
        Jinja::new(probe, "", "").unwrap().call_format(),
        Some(tagged())
    );
    // `<tool_call>` with XML inside (Qwen3-Coder, GLM): no format this parser reads.
    let xml = "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n<function={{ c.function.name }}>\n</function>\n</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}{% endfor %}{{ tools | length }}";
    assert_eq!(Jinja::new(xml, "", "").unwrap().call_format(), None);
    // Cohere-like markers, the turn's end left out of the closing one.
    let cohere = "{% for m in messages %}<|TURN|>{% if m.tool_calls %}<|START_ACTION|>{{ m.tool_calls | map(attribute='function') | list | tojson }}<|END_ACTION|>{% else %}<|START_RESPONSE|>{{ m.content }}<|END_RESPONSE|>{% endif %}<|END_OF_TURN|>{% endfor %}{{ tools | length }}";
    assert_eq!(
        Jinja::new(cohere, "", "").unwrap().call_format(),
        Some(CallFormat::Tagged {
            open: "<|START_ACTION|>".into(),
            close: Some("<|END_ACTION|>".into())
        })
    );
    // A template without tools has no call format.
    assert_eq!(
        Jinja::new("{{ messages[0].content }}<tool_call>", "", "")
            .unwrap()
            .call_format(),
        None
    );
}

#[test]
fn grammars_wrap_the_call_object_in_the_formats_markers() {
    let tools = [
        json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}}}),
        json!({"type": "function", "function": {"name": "search"}}),
    ];
    let g = forced_grammar(&tools, &Forced::Named("search".into()), &CallFormat::Hermes).unwrap();
    assert!(
        g.starts_with("root ::= \"<tool_call>\\n\" rawrxd-call \"\\n</tool_call>\"\n"),
        "{g}"
    );
    assert_eq!(g.matches("root ::=").count(), 1, "{g}");
    assert!(g.contains("rawrxd-call ::="), "{g}");
    assert!(!g.contains("get_weather"), "{g}");
    let any = forced_grammar(&tools, &Forced::Any, &CallFormat::Llama3).unwrap();
    assert!(
        any.contains("get_weather") && any.contains("search"),
        "{any}"
    );
    assert!(any.contains("parameters"), "{any}");
    assert!(
        forced_grammar(&tools, &Forced::Named("nope".into()), &CallFormat::Hermes)
            .unwrap_err()
            .contains("nope")
    );
    assert!(forced_grammar(&[], &Forced::Any, &CallFormat::Hermes).is_err());
}

mod with_model {
    //! Grammars loaded by llama.cpp, and what the model writes under them parsed back.
    use super::*;
    use std::num::NonZeroU32;

    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;
    use llama_cpp_2::sampling::LlamaSampler;

    /// Greedy generation from `prompt` under `grammar` until the grammar lets it end.
    fn generate(model: &LlamaModel, grammar: &str, prompt: &str) -> String {
        let backend = crate::serve::engine::backend().unwrap();
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(1024))
            .with_n_threads(2)
            .with_n_threads_batch(2);
        let mut ctx = model.new_context(backend, params).unwrap();
        let vocab = model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, false);
        let mut batch = LlamaBatch::new(512, 1);
        batch.add_sequence(&tokens, 0, false).unwrap();
        ctx.decode(&mut batch).unwrap();
        let mut sampler = LlamaSampler::chain_simple([
            LlamaSampler::grammar(model, grammar, "root").unwrap(),
            LlamaSampler::greedy(),
        ]);
        let mut out = Vec::new();
        for pos in (tokens.len() as i32..).take(400) {
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                return String::from_utf8(out).unwrap();
            }
            out.extend(vocab.token_to_piece(token, true, None));
            batch.clear();
            batch.add(token, pos, &[0], true).unwrap();
            ctx.decode(&mut batch).unwrap();
        }
        panic!(
            "no end within 400 tokens: {}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    #[allow(clippy::print_stderr)] // says why it skips
    fn llama_cpp_takes_the_grammars_and_their_output_parses_back() {
        let Some(path) = std::env::var_os("RAWRXD_TEST_MODEL") else {
            eprintln!("skipped: RAWRXD_TEST_MODEL is not set (scripts/fetch-model.sh)");
            return;
        };
        let backend = crate::serve::engine::backend().unwrap();
        let model =
            LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).unwrap();
        let tools = [
            json!({"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {
                    "city": {"type": "string", "enum": ["Paris", "Rome"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                "required": ["city", "days"]}}}),
            json!({"type": "function", "function": {"name": "search", "parameters": {
                "type": "object", "properties": {"q": {"type": "string", "maxLength": 20}},
                "required": ["q"]}}}),
        ];
        let prompt = "What is the weather in Paris for the next three days? Call a tool.\n";
        // Each format once, each kind of forcing in turn (a grammar-constrained step checks
        // the whole vocabulary, so every generation costs seconds in a debug build).
        let cases = [
            (CallFormat::Hermes, Forced::Any),
            (CallFormat::Llama3, Forced::Named("search".into())),
            (CallFormat::Mistral, Forced::Any),
            (tagged(), Forced::Named("search".into())),
            (
                CallFormat::Tagged {
                    open: ">>>call".into(),
                    close: None,
                },
                Forced::Named("get_weather".into()),
            ),
        ];
        for (format, forced) in cases {
            let grammar = forced_grammar(&tools, &forced, &format).unwrap();
            let out = generate(&model, &grammar, prompt);
            let parsed = one_shot(&format, &out);
            let [Piece::Call(call)] = parsed.as_slice() else {
                panic!("{format:?} {forced:?}: {out:?} parsed as {parsed:?}");
            };
            if let Forced::Named(name) = &forced {
                assert_eq!(&call.name, name, "{out}");
            }
            let required = if call.name == "search" { "q" } else { "city" };
            assert!(call.arguments.get(required).is_some(), "{out}");
        }
        // A grammar llama.cpp refuses is an error, not a crash.
        assert!(LlamaSampler::grammar(&model, "root ::= undefined-rule", "root").is_err());
    }
}

#[test]
fn a_long_call_streamed_in_small_pieces_costs_linear_time() {
    // 512 KiB of arguments in 4-byte pieces: 131,072 pushes. Re-scanning the held JSON on
    // every push would read ~34 GB; resumed scanning reads each byte once.
    let value = "x".repeat(512 * 1024);
    let answer = format!(
        "<tool_call>{{\"name\": \"search\", \"arguments\": {{\"q\": \"{value}\"}}}}</tool_call>"
    );
    let started = std::time::Instant::now();
    let mut parser = CallParser::new(CallFormat::Hermes, names());
    let mut pieces = Vec::new();
    for chunk in answer.as_bytes().chunks(4) {
        pieces.extend(parser.push(std::str::from_utf8(chunk).unwrap()));
    }
    pieces.extend(parser.finish());
    assert_eq!(pieces, vec![call("search", json!({ "q": value }))]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_call_past_the_limit_goes_out_as_text() {
    let answer = format!(
        "<tool_call>{{\"name\": \"search\", \"arguments\": {{\"q\": \"{}\"}}}}</tool_call>",
        "x".repeat(parse::MAX_CALL)
    );
    assert_eq!(one_shot(&CallFormat::Hermes, &answer), vec![text(&answer)]);
    // A marker inside the over-long call is read again, alike at once and in pieces.
    // Streamed, it is released once past the limit, before the answer ends.
    let mut parser = CallParser::new(CallFormat::Hermes, names());
    let released: usize = answer
        .as_bytes()
        .chunks(4096)
        .flat_map(|c| parser.push(std::str::from_utf8(c).unwrap()))
        .map(|p| match p {
            Piece::Text(t) => t.len(),
            Piece::Call(_) => panic!("a call"),
        })
        .sum();
    assert!(released > parse::MAX_CALL, "{released}");
    let inner = "<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>";
    let nested = format!(
        "<tool_call>{{\"a\": \"{}{inner}\"}}",
        "x".repeat(parse::MAX_CALL)
    );
    let expected = vec![
        text(&nested[..nested.len() - inner.len() - 2]),
        call("search", json!({})),
        text("\"}"),
    ];
    assert_eq!(one_shot(&CallFormat::Hermes, &nested), expected);
    let chunks: Vec<&str> = nested
        .as_bytes()
        .chunks(7)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    assert_eq!(streamed(&CallFormat::Hermes, &chunks), expected);
}

#[test]
fn a_template_that_loops_without_end_fails_instead_of_hanging() {
    let endless = "{% for a in range(10000) %}{% for b in range(10000) %}\
                   {% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}";
    let jinja = Jinja::new(endless, "", "").unwrap();
    let started = std::time::Instant::now();
    let result = jinja.render(&[json!({"role": "user", "content": "hi"})], None, true);
    assert!(
        result.is_err(),
        "rendered {} bytes",
        result.map(|r| r.len()).unwrap_or(0)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // The fuel is far more than a long agent session needs: 600 messages with calls and
    // results, 40 tools, through Qwen 2.5's template.
    let qwen = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/templates/Qwen-Qwen2.5-7B-Instruct.jinja"
    ))
    .unwrap();
    let jinja = Jinja::new(&qwen, "", "").unwrap();
    let tools: Vec<Value> = (0..40)
        .map(|i| {
            json!({"type": "function", "function": {"name": format!("tool_{i}"),
            "description": "does a thing", "parameters": {"type": "object",
            "properties": {"path": {"type": "string"}, "n": {"type": "integer"}}}}})
        })
        .collect();
    let mut messages = vec![json!({"role": "system", "content": "You are an agent."})];
    for i in 0..200 {
        messages.push(json!({"role": "user", "content": format!("step {i}")}));
        messages.push(
            json!({"role": "assistant", "content": "", "tool_calls": [{"type": "function",
            "function": {"name": "tool_1", "arguments": {"path": "src/main.rs", "n": i}}}]}),
        );
        messages.push(json!({"role": "tool", "content": "fn main() {}"}));
    }
    let prompt = jinja.render(&messages, Some(&tools), true).unwrap();
    assert!(prompt.contains("step 199"));
}
