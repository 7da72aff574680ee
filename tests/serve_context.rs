//! Issue 18: conversations and prompts longer than the context, on the real model — chat drops
//! whole old messages (never system messages, never the last), generate keeps the prompt's
//! tail, a last message that cannot fit is the only 400, a generation that reaches the
//! context's end shifts it and goes on, and a slot's cache is reused after a drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};
use support::{post_json, serve_in_process};

const MODEL: &str = "gemma-3-270m-q4_k_m";

/// The tests read engine counters, so they run one at a time against one server.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| serve_in_process(2, 1024))
}

fn engine_stat(key: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ps = runtime
        .block_on(support::call(server(), "GET", "/api/ps", b""))
        .json();
    // Before the first request loads the model there is nothing to count yet.
    if ps["models"].as_array().is_some_and(Vec::is_empty) {
        return 0;
    }
    ps["models"][0]["rawrxd"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {ps}"))
}

fn chat(messages: &[Value], options: Value) -> (u16, Value) {
    post_json(
        server(),
        "/api/chat",
        &json!({"model": MODEL, "messages": messages, "stream": false, "options": options}),
    )
}

fn msg(role: &str, content: &str) -> Value {
    json!({"role": role, "content": content})
}

const SYSTEM: &str = "You are a careful assistant for a software team. You answer questions \
    about their build system, their tests and their deployment scripts in short plain sentences, \
    and you never invent file names.";

/// A conversation of `pairs` question/answer turns of about 60 tokens each, then a question.
fn conversation(pairs: usize) -> Vec<Value> {
    let mut messages = vec![msg("system", SYSTEM)];
    for i in 0..pairs {
        messages.push(msg(
            "user",
            &format!(
                "Question {i}: the build of module {i} failed after the change to the parser \
                 in stage {i}; which of the test suites should run again before the release \
                 branch is cut, and why does the cache of stage {i} matter here?"
            ),
        ));
        messages.push(msg(
            "assistant",
            &format!(
                "Answer {i}: run the unit tests of module {i} and the integration suite of \
                 stage {i} again, because the cache of stage {i} holds parser output that the \
                 change made stale, so older results would hide the failure."
            ),
        ));
    }
    messages.push(msg("user", "What is the capital of France?"));
    messages
}

/// The system message and the messages from the `from`-th question on.
fn suffix(messages: &[Value], from: usize) -> Vec<Value> {
    let mut out = vec![messages[0].clone()];
    out.extend_from_slice(&messages[1 + 2 * from..]);
    out
}

#[test]
fn a_long_chat_drops_its_oldest_messages_and_answers_like_the_kept_part_alone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (num_ctx, num_predict) = (512u64, 8u64);
    let options = json!({"num_ctx": num_ctx, "num_predict": num_predict, "temperature": 0});
    let messages = conversation(12);

    // Ground truth, one request per possible cut: the prompt length of the system message
    // plus the conversation from question `from` on.
    let lengths: Vec<u64> = (0..=12)
        .map(|from| {
            let (status, body) = chat(
                &suffix(&messages, from),
                json!({"num_predict": 1, "temperature": 0}),
            );
            assert_eq!(status, 200, "{body}");
            body["prompt_eval_count"].as_u64().unwrap()
        })
        .collect();
    assert!(
        lengths[0] > num_ctx,
        "the whole chat must not fit: {lengths:?}"
    );
    // The fewest questions dropped that leave room for the answer.
    let from = (0..=12)
        .find(|&f| lengths[f] + num_predict <= num_ctx)
        .unwrap();
    assert!(from > 0 && from < 12, "{from} {lengths:?}");

    let (status, whole) = chat(&messages, options.clone());
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["prompt_eval_count"].as_u64().unwrap(), lengths[from]);
    let (_, kept) = chat(&suffix(&messages, from), options);
    assert_eq!(
        whole["message"]["content"], kept["message"]["content"],
        "the answer is the kept conversation's"
    );
    assert!(!whole["message"]["content"].as_str().unwrap().is_empty());
}

#[test]
fn the_openai_endpoint_fits_a_long_chat_too() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // The OpenAI endpoint has no num_ctx: the slot's 1024 tokens are the limit.
    let messages = conversation(30);
    let (status, body) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": messages, "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt + 4 <= 1024 && prompt > 512, "{body}");
}

#[test]
fn a_last_message_that_cannot_fit_is_the_only_400() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let long = "apple banana cherry ".repeat(200); // ~600 tokens
    let mut messages = conversation(3);
    *messages.last_mut().unwrap() = msg("user", &long);
    let (status, body) = chat(&messages, json!({"num_ctx": 256, "num_predict": 4}));
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("context length of 256"), "{error}");
    // The same message fits a larger context, with every earlier turn dropped.
    let (status, body) = chat(&messages, json!({"num_ctx": 1024, "num_predict": 4}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn generate_keeps_the_first_tokens_and_the_tail_of_a_long_prompt() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let generate = |prompt: &str, options: Value| {
        post_json(
            server(),
            "/api/generate",
            &json!({"model": MODEL, "prompt": prompt, "raw": true, "stream": false, "options": options}),
        )
    };
    let head = "Alpha beta gamma";
    let tail = " the end of the story is near";
    let long = format!("{head}{}{tail}", " apple banana cherry".repeat(400));
    let truncated_before = engine_stat("prompts_truncated");
    let (status, body) = generate(
        &long,
        json!({"num_ctx": 256, "num_predict": 6, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(engine_stat("prompts_truncated"), truncated_before + 1);
    let prompt = body["prompt_eval_count"].as_u64().unwrap() as usize;
    assert_eq!(
        prompt,
        256 - 6,
        "cut to the context minus the answer's room"
    );
    let context: Vec<u64> = body["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    // The tokens of the head and of the tail, from short prompts.
    let tokens = |text: &str| -> Vec<u64> {
        let (_, b) = generate(text, json!({"num_predict": 1, "temperature": 0}));
        let c = b["context"].as_array().unwrap().clone();
        let n = b["prompt_eval_count"].as_u64().unwrap() as usize;
        c[..n].iter().map(|t| t.as_u64().unwrap()).collect()
    };
    let head_tokens = tokens(head);
    assert_eq!(
        context[..4],
        head_tokens[..4],
        "the first num_keep (4) tokens stay"
    );
    let tail_tokens = tokens(&format!(" apple banana cherry{tail}"));
    // Without the BOS and the first words, whose tokens may merge differently.
    let tail_only = &tail_tokens[tail_tokens.len() - 6..];
    assert_eq!(
        &context[prompt - 6..prompt],
        tail_only,
        "the prompt's tail stays"
    );
    // Chat-templated generate is cut the same way instead of refused.
    let (status, body) = post_json(
        server(),
        "/api/generate",
        &json!({"model": MODEL, "prompt": long, "stream": false, "options": {"num_ctx": 256, "num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_generation_that_reaches_the_end_of_the_context_shifts_it_and_goes_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let shifts_before = engine_stat("context_shifts");
    let (status, body) = post_json(
        server(),
        "/api/generate",
        &json!({"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "raw": true, "stream": false,
                "options": {"num_ctx": 64, "num_predict": 200, "temperature": 0}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 200, "{body}");
    assert_eq!(body["done_reason"], "length");
    let shifts = engine_stat("context_shifts") - shifts_before;
    // Every shift frees about half of the 60 tokens after the first 4.
    assert!(shifts >= 5, "{shifts} shifts");
    // The counting goes on past the context: the output is still numbers.
    let text = body["response"].as_str().unwrap();
    let numbers = text
        .split(',')
        .filter(|s| s.trim().parse::<u64>().is_ok())
        .count();
    assert!(numbers > 40, "{text}");
}

#[test]
fn a_slot_reuses_the_kept_prefix_after_a_drop() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let options = json!({"num_ctx": 512, "num_predict": 4, "temperature": 0});
    let mut messages = conversation(12);
    let (status, first) = chat(&messages, options.clone());
    assert_eq!(status, 200, "{first}");
    // The next turn: the answer and a new question; more old turns go.
    messages.push(first["message"].clone());
    messages.push(msg("user", "And the capital of Italy?"));
    let reused_before = engine_stat("prompt_tokens_reused");
    let evaluated_before = engine_stat("prompt_tokens_evaluated");
    let (status, second) = chat(&messages, options);
    assert_eq!(status, 200, "{second}");
    let reused = engine_stat("prompt_tokens_reused") - reused_before;
    let evaluated = engine_stat("prompt_tokens_evaluated") - evaluated_before;
    let prompt = second["prompt_eval_count"].as_u64().unwrap();
    assert_eq!(reused + evaluated, prompt);
    // The system prompt (~40 tokens) and the start of the turn are taken from the cache.
    assert!(reused >= 40, "reused {reused} of {prompt}");
}
