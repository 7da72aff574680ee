//! The pipeline's promises, checked by property tests: for every split of a text into chunks
//! the streamed output equals the one-shot output, and every prefix the stream releases is a
//! prefix of the final output (so no byte of a rewritten match ever leaks).

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::rules::{Action, Detector, Mode, Rule};

pub(crate) fn rule(id: &str, action: Action) -> Rule {
    Rule {
        id: id.into(),
        enabled: true,
        mode: Mode::Enforce,
        models: vec!["*".into()],
        endpoints: Vec::new(),
        action,
        source: "test.toml".into(),
        description: None,
    }
}

pub(crate) fn replace(id: &str, find: &str, to: &str) -> Rule {
    rule(
        id,
        Action::Replace {
            find: find.into(),
            replace: to.into(),
            case_insensitive: false,
            whole_word: false,
        },
    )
}

pub(crate) fn regex(id: &str, pattern: &str, to: &str) -> Rule {
    rule(
        id,
        Action::Regex {
            pattern: pattern.into(),
            replace: to.into(),
            max_len: 256,
        },
    )
}

pub(crate) fn compiled(rules: Vec<Rule>) -> Arc<Compiled> {
    Pipeline::new(rules)
        .unwrap()
        .select("m", None)
        .expect("rules apply")
}

/// Streams `text` split at `cuts`, checking every released prefix; returns the output.
fn stream(compiled: &Arc<Compiled>, text: &str, cuts: &[usize]) -> String {
    let mut session = compiled.session();
    let mut out = String::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|&c| c % (text.len() + 1))
        .filter(|&c| text.is_char_boundary(c))
        .collect();
    bounds.sort_unstable();
    bounds.push(text.len());
    let mut prefixes = Vec::new();
    for cut in bounds {
        if cut < at {
            continue;
        }
        out.push_str(&session.push(&text[at..cut]));
        prefixes.push(out.clone());
        at = cut;
    }
    out.push_str(&session.finish());
    for prefix in prefixes {
        assert!(
            out.starts_with(&prefix),
            "released {prefix:?} but the final output is {out:?}"
        );
    }
    out
}

#[test]
fn straddling_literal_never_leaks() {
    let c = compiled(vec![replace("no-conf", "confidential", "[redacted]")]);
    let mut session = c.session();
    let first = session.push("this is confid");
    assert_eq!(first, "this is ");
    let second = session.push("ential stuff");
    assert_eq!(second, "[redacted] stuff");
    assert_eq!(session.finish(), "");
    assert_eq!(session.held(), 0);
}

#[test]
fn ordinary_text_is_not_delayed() {
    let c = compiled(vec![replace("no-conf", "confidential", "[redacted]")]);
    let mut session = c.session();
    assert_eq!(session.push("hello world "), "hello world ");
    assert_eq!(session.push("con"), "");
    assert_eq!(session.push("cert"), "concert");
}

#[test]
fn regex_captures_and_liveness() {
    let c = compiled(vec![regex("ver", r"v(\d)\.(\d)", "version $1-$2")]);
    let mut session = c.session();
    assert_eq!(session.push("see v1"), "see ");
    assert_eq!(session.push(".2 now"), "version 1-2 now");
}

#[test]
fn redact_detectors_mask_secrets_split_anywhere() {
    let key = "AKIAIOSFODNN7EXAMPLE";
    let c = compiled(vec![rule(
        "aws",
        Action::Redact {
            detector: Some(Detector::AwsAccessKey),
            pattern: None,
            mask: "[AWS]".into(),
            max_len: Detector::AwsAccessKey.max_len(),
        },
    )]);
    let text = format!("key={key} done");
    for cut in 0..text.len() {
        let out = stream(&c, &text, &[cut]);
        assert_eq!(out, "key=[AWS] done", "cut at {cut}");
    }
}

#[test]
fn block_cuts_the_stream_with_its_message() {
    let c = compiled(vec![
        rule(
            "no-rm",
            Action::Block {
                find: Some("rm -rf /".into()),
                pattern: None,
                case_insensitive: false,
                message: "[blocked]".into(),
                max_len: 256,
            },
        ),
        replace("x", "run", "execute"),
    ]);
    let mut session = c.session();
    let mut out = session.push("run this: rm -r");
    out.push_str(&session.push("f / and more"));
    assert_eq!(out, "execute this: [blocked]");
    assert_eq!(session.blocked(), Some("[blocked]"));
    assert_eq!(session.push("ignored"), "");
    let hits = session.take_hits();
    assert!(hits.iter().any(|h| h.rule_id == "no-rm"));
}

#[test]
fn shadow_rules_report_but_do_not_change_or_delay() {
    let mut r = replace("shadowed", "secret", "[x]");
    r.mode = Mode::Shadow;
    let c = compiled(vec![r]);
    let mut session = c.session();
    assert_eq!(session.push("my sec"), "my sec");
    assert_eq!(session.push("ret"), "ret");
    assert_eq!(session.finish(), "");
    let hits = session.take_hits();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].shadow);
    let counters = &c.table.counters[0];
    assert_eq!(counters.shadowed.load(Ordering::Relaxed), 1);
    assert_eq!(counters.applied.load(Ordering::Relaxed), 0);
}

#[test]
fn selection_caches_stay_bounded_whatever_model_names_clients_send() {
    // One rule for every model, and one rule each for models named `family-N-*` (N < 70):
    // names can pick 71 distinct sets of rules, more than the compiled cache keeps.
    let mut rules = vec![replace("all", "a", "b")];
    for n in 0..70 {
        rules.push(Rule {
            models: vec![format!("family-{n}-*")],
            ..replace(&format!("f{n}"), &format!("w{n}"), "x")
        });
    }
    let pipeline = Pipeline::new(rules).unwrap();
    let sizes = |p: &Pipeline| {
        (
            p.by_request.lock().unwrap().len(),
            p.cache.lock().unwrap().len(),
        )
    };
    // Random names, as a hostile client would send.
    for i in 0..5_000 {
        let model = format!("random-model-{i}");
        assert!(pipeline.select(&model, Some(Endpoint::Chat)).is_some());
        let (memo, compiled) = sizes(&pipeline);
        assert!(memo <= MAX_REMEMBERED_REQUESTS, "{memo}");
        assert!(compiled <= MAX_COMPILED_SETS, "{compiled}");
    }
    // Names that select different rule sets: the compiled cache starts over instead of growing.
    for round in 0..2 {
        for n in 0..70 {
            let selected = pipeline
                .select(&format!("family-{n}-{round}"), None)
                .unwrap();
            assert_eq!(selected.apply(&format!("a w{n}")).text, "b x");
            assert!(sizes(&pipeline).1 <= MAX_COMPILED_SETS);
        }
    }
    // A huge name is matched (it still gets its rules) but never stored.
    let memo_before = sizes(&pipeline).0;
    let huge = format!("family-7-{}", "z".repeat(64 << 10));
    let selected = pipeline.select(&huge, None).unwrap();
    assert_eq!(selected.apply("w7").text, "x");
    assert_eq!(
        sizes(&pipeline).0,
        memo_before,
        "a long name was remembered"
    );
    let longest_kept = "m".repeat(MAX_REMEMBERED_MODEL_LEN);
    pipeline.select(&longest_kept, None);
    assert!(pipeline
        .by_request
        .lock()
        .unwrap()
        .contains_key(&(longest_kept, None)));
}

#[test]
fn thousands_of_literals_in_one_automaton() {
    let rules: Vec<Rule> = (0..2000)
        .map(|i| replace(&format!("r{i}"), &format!("word{i}x"), &format!("W{i}")))
        .collect();
    let c = compiled(rules);
    assert_eq!(c.stages.len(), 1, "one aho-corasick stage for all literals");
    assert_eq!(c.apply("a word17x b word1999x").text, "a W17 b W1999");
}

#[test]
fn utf8_is_never_split() {
    let c = compiled(vec![replace("e", "é", "e")]);
    let text = "café crème brûlée";
    let bytes = text.as_bytes();
    let mut session = c.session();
    let mut out = String::new();
    // Feed whole chars only (the framing layer works on strings), in 1-char pieces.
    for (i, ch) in text.char_indices() {
        let _ = bytes[i];
        out.push_str(&session.push(&ch.to_string()));
    }
    out.push_str(&session.finish());
    assert_eq!(out, "cafe crème brûlee");
}

pub(crate) fn alphabet_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("c"),
            Just(" "),
            Just("ab"),
            Just("é"),
            Just("\n"),
            Just("1")
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

fn literal() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('b'), Just('c'), Just('é')],
        1..5,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

pub(crate) fn rule_set() -> impl Strategy<Value = Vec<Rule>> {
    let one = prop_oneof![
        (literal(), "[A-Z]{0,3}", any::<bool>(), any::<bool>()).prop_map(|(find, to, ci, ww)| {
            rule(
                "lit",
                Action::Replace {
                    find,
                    replace: to,
                    case_insensitive: ci,
                    whole_word: ww,
                },
            )
        }),
        prop_oneof![
            Just(r"a+b"),
            Just(r"\bab\b"),
            Just(r"b{2,4}"),
            Just(r"c[ab]?c"),
            Just(r"(a|ab)(c|bcd)"),
            Just(r"1\d*"),
            Just(r"é+"),
            Just(r"^a"),
            Just(r"b$"),
        ]
        .prop_map(|p| regex("re", p, "<$0>")),
        // Unbounded patterns cut at a small max_len (characters).
        (
            prop_oneof![Just(r"[ab]+"), Just(r"é+|c+"), Just(r"\w+")],
            1usize..5
        )
            .prop_map(|(p, max_len)| {
                rule(
                    "cut",
                    Action::Regex {
                        pattern: p.into(),
                        replace: "<$0>".into(),
                        max_len,
                    },
                )
            }),
        (literal(), "[A-Z]{1,3}").prop_map(|(find, message)| {
            rule(
                "blk",
                Action::Block {
                    find: Some(find),
                    pattern: None,
                    case_insensitive: false,
                    message,
                    max_len: 256,
                },
            )
        }),
        (prop_oneof![Just(r"ab+c"), Just(r"c\d")], "[A-Z]{1,3}").prop_map(|(p, message)| {
            rule(
                "blkre",
                Action::Block {
                    find: None,
                    pattern: Some(p.into()),
                    case_insensitive: false,
                    message,
                    max_len: 256,
                },
            )
        }),
        (prop_oneof![Just(r"a\d"), Just(r"bc+")], any::<bool>()).prop_map(|(p, shadow)| {
            let mut r = rule(
                "red",
                Action::Redact {
                    detector: None,
                    pattern: Some(p.into()),
                    mask: "#".into(),
                    max_len: 8,
                },
            );
            if shadow {
                r.mode = Mode::Shadow;
            }
            r
        }),
    ];
    proptest::collection::vec(one, 1..5).prop_map(|mut rules| {
        for (i, r) in rules.iter_mut().enumerate() {
            r.id = format!("{}-{i}", r.id);
        }
        rules
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn streamed_equals_one_shot_for_every_split(
        rules in rule_set(),
        text in alphabet_text(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let c = compiled(rules);
        let whole = c.apply(&text).text;
        let streamed = stream(&c, &text, &cuts);
        prop_assert_eq!(streamed, whole);
    }

    #[test]
    fn byte_by_byte_equals_one_shot(rules in rule_set(), text in alphabet_text()) {
        let c = compiled(rules);
        let cuts: Vec<usize> = (0..=text.len()).collect();
        prop_assert_eq!(stream(&c, &text, &cuts), c.apply(&text).text);
    }

    #[test]
    fn one_literal_equals_str_replace(find in literal(), to in "[A-Z]{0,3}", text in alphabet_text()) {
        let c = compiled(vec![replace("r", &find, &to)]);
        prop_assert_eq!(c.apply(&text).text, text.replace(&find, &to));
    }

    #[test]
    fn one_regex_equals_regex_replace_all(
        pattern in prop_oneof![Just(r"a+b"), Just(r"\bab\b"), Just(r"b{2,4}"), Just(r"(a|ab)(c|bcd)"), Just(r"é+"), Just(r"^a"), Just(r"b$")],
        text in alphabet_text(),
    ) {
        let c = compiled(vec![regex("r", pattern, "<$0>")]);
        let want = regex::Regex::new(pattern).unwrap().replace_all(&text, "<$0>").into_owned();
        prop_assert_eq!(c.apply(&text).text, want);
    }
}
