use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> Result<Vec<Rule>, Vec<RuleError>> {
    parse_file(Path::new("rules/t.toml"), text)
}

fn errors(text: &str) -> Vec<RuleError> {
    parse(text).expect_err("expected errors")
}

fn rendered(errors: &[RuleError]) -> String {
    errors
        .iter()
        .map(RuleError::render)
        .collect::<Vec<_>>()
        .join("\n")
}

fn one(text: &str) -> Rule {
    let mut rules = parse(text).unwrap_or_else(|e| panic!("{}", rendered(&e)));
    assert_eq!(rules.len(), 1);
    rules.remove(0)
}

fn fixture(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rules")
        .join(dir)
}

/// Every match of `detector` in `text`.
fn matches(detector: Detector, text: &str) -> Vec<String> {
    Regex::new(detector.pattern())
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

fn alnum(n: usize) -> String {
    "aZ3kQ9xB7mP2".chars().cycle().take(n).collect::<String>()
}

fn pem(kind: &str, body_len: usize) -> String {
    let body: String = alnum(body_len);
    format!("-----BEGIN {kind}-----{body}-----END {kind}-----")
}

const RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi+Q4lWXk1jPlL8vA2xUzKqbFHd
v3H2lD3bBkc9Zx0rJ2X3mF1Jq9bQ7Vw9B6nq8Tq0Zr3z5Y+1T7Xl5gX0/9pZ1Q==
-----END RSA PRIVATE KEY-----";

const JWT_EXAMPLE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

/// Ordinary code and prose that no detector may touch.
const INNOCENT: &[&str] = &[
    "Thanks @alice and @bob for the review; ping @carol-dev on Slack.",
    "Use the sk- prefix for secret keys and the pk- prefix for public ones.",
    "We migrated sk-learn pipelines to the sk-this-is-a-very-long-kebab-case-identifier-name.",
    "The key AKIA1234 is too short, AKIAIOSFODNN7 too, and XAKIAIOSFODNN7EXAMPLE is glued.",
    "AKIAIOSFODNN7EXAMPLEXYZW is too long to be an access key id.",
    "ghp_short and gho_ are prefixes, not tokens; github_pat_ alone is a prefix.",
    "risk-assessment-for-monorepos-with-many-packages-and-long-names-0123456789",
    "task-0123456789abcdef0123456789abcdef0123456789",
    "The header eyJhbGciOiJIUzI1NiJ9 decodes to {\"alg\":\"HS256\"}.",
    "eyJfoo.eyJbar.baz is not a token.",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----",
    "-----BEGIN RSA PRIVATE KEY----- is how the header line starts.",
    r#"
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Config { pub api_key: Option<String>, pub retries: u32 }

fn main() -> anyhow::Result<()> {
let key = std::env::var("OPENAI_API_KEY")?; // sk-... from the environment
let mut map: HashMap<&str, usize> = HashMap::new();
map.insert("AKIA", 4);
println!("{key:?} {:?}", map.get("sk-"));
let jwt_header = "eyJ";
let s = format!("{}@{}", user, host);
Ok(())
}
"#,
    r#"
import numpy as np

@dataclass
class Layer:
weights: np.ndarray

@property
def shape(self):
    return self.weights.shape

def forward(x, layer):
y = x @ layer.weights
return y  # see user@localhost and pip install requests==2.31.0
"#,
    "npm i @scope/pkg@latest && pip install foo@1.2.3 && node@18.x",
    "A base64 blob: dGhpcyBpcyBub3QgYSBzZWNyZXQsIGp1c3QgYSBsb25nIHN0cmluZw==",
    "uuid 123e4567-e89b-12d3-a456-426614174000 and sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
];

#[test]
fn detectors_match_realistic_examples() {
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let sts = "ASIAY34FZKBOKMUTVV7A";
    assert_eq!(
        matches(
            Detector::AwsAccessKey,
            &format!("aws_access_key_id = {aws}\nkey={sts}.")
        ),
        [aws, sts]
    );

    let classic = format!("ghp_{}", alnum(36));
    let app = format!("ghs_{}", alnum(36));
    let fine = format!("github_pat_{}_{}", alnum(22), alnum(59));
    let text = format!("token: {classic}\nGITHUB_TOKEN={app} \"{fine}\"");
    assert_eq!(
        matches(Detector::GithubToken, &text),
        [classic.as_str(), &app, &fine]
    );

    let legacy = format!("sk-{}T3BlbkFJ{}", alnum(20), alnum(20));
    let project = format!("sk-proj-{}T3BlbkFJ{}-{}", alnum(70), alnum(60), alnum(20));
    let service = format!("sk-svcacct-{}", alnum(40));
    let compatible = format!("sk-{}", alnum(32));
    let text = format!(
        "OPENAI_API_KEY={legacy}\nclient = OpenAI(api_key=\"{project}\")\n{service} and {compatible}."
    );
    assert_eq!(
        matches(Detector::OpenaiKey, &text),
        [legacy.as_str(), &project, &service, &compatible]
    );

    let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----";
    let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\n-----END RSA PRIVATE KEY-----";
    let in_code =
        r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0Y3ZQBCAC6\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----";
    let text = format!(
        "{RSA_KEY}\n\nkey = \"\"\"\n{openssh}\n\"\"\"\n{encrypted}\nKEY = \"{in_code}\"\n{pgp}"
    );
    assert_eq!(
        matches(Detector::PrivateKey, &text),
        [RSA_KEY, openssh, encrypted, in_code, pgp]
    );
    // Two keys in a row are two matches, not one spanning both.
    let two = format!("{RSA_KEY}\n{RSA_KEY}");
    assert_eq!(matches(Detector::PrivateKey, &two).len(), 2);

    assert_eq!(
        matches(
            Detector::Jwt,
            &format!("Authorization: Bearer {JWT_EXAMPLE}\n")
        ),
        [JWT_EXAMPLE]
    );

    assert_eq!(
        matches(
            Detector::Email,
            "Write to jane.doe+news@mail.example.co.uk or ops@example.org."
        ),
        ["jane.doe+news@mail.example.co.uk", "ops@example.org"]
    );
}

#[test]
fn detectors_ignore_look_alikes() {
    for detector in Detector::ALL {
        for text in INNOCENT {
            assert_eq!(
                matches(detector, text),
                Vec::<String>::new(),
                "{} in {text:?}",
                detector.name()
            );
        }
    }
    // Bodies that are too long or too short are not keys, nor a BEGIN/END pair around no
    // key material (reqwest's test fixture, in a Rust string).
    assert!(matches(Detector::PrivateKey, &pem("PRIVATE KEY", 4097)).is_empty());
    assert!(matches(
        Detector::PrivateKey,
        "\"-----BEGIN RSA PRIVATE KEY-----\\n\\\n            -----END RSA PRIVATE KEY-----\\n\""
    )
    .is_empty());
    assert!(matches(
        Detector::PrivateKey,
        "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----"
    )
    .is_empty());
    assert!(matches(Detector::GithubToken, &format!("ghp_{}", alnum(35))).is_empty());
    assert!(matches(Detector::OpenaiKey, &format!("sk-{}", alnum(31))).is_empty());
    assert!(matches(Detector::Email, "see a@b.c and x@self.T").is_empty());
}

#[test]
fn detector_patterns_are_bounded_and_max_len_holds() {
    for detector in Detector::ALL {
        let name = detector.name();
        assert_eq!(Detector::parse(name), Some(detector));
        Regex::new(detector.pattern()).unwrap();
        let hir = syntax::parse(detector.pattern()).unwrap();
        let props = hir.properties();
        assert!(
            props.minimum_len().unwrap_or(0) > 0,
            "{name} can match empty"
        );
        let bytes = props.maximum_len();
        assert!(
            bytes.is_some_and(|n| n <= detector.max_len()),
            "{name}: longest match is {bytes:?} bytes, max_len {}",
            detector.max_len()
        );
        let chars = longest_match_chars(detector.pattern(), false);
        assert_eq!(chars, bytes, "{name} is not ASCII-only");
    }
    assert_eq!(Detector::parse("ssn"), None);
}

#[test]
fn detector_max_len_is_reached_by_a_maximal_example() {
    let label = format!("a{}.", alnum(62));
    let email = format!("{}@{}{}", alnum(64), label.repeat(6), "z".repeat(24));
    let cases = [
        (Detector::Email, email),
        (Detector::AwsAccessKey, format!("AKIA{}", "Z9".repeat(8))),
        (Detector::GithubToken, format!("ghp_{}", alnum(255))),
        (Detector::OpenaiKey, format!("sk-svcacct-{}", alnum(256))),
        (
            Detector::PrivateKey,
            format!(
                "-----BEGIN AAAAAAAAAAAAAAAA BBBBBBBBBBBBBBBB CCCCCCCCCCCCCCCC PRIVATE KEY BLOCK-----{}-----END AAAAAAAAAAAAAAAA BBBBBBBBBBBBBBBB CCCCCCCCCCCCCCCC PRIVATE KEY BLOCK-----",
                alnum(4096)
            ),
        ),
        (
            Detector::Jwt,
            format!("eyJ{}.eyJ{}.{}", alnum(512), alnum(4096), alnum(1536)),
        ),
    ];
    for (detector, example) in cases {
        assert_eq!(
            matches(detector, &example),
            [example.as_str()],
            "{}",
            detector.name()
        );
        assert_eq!(
            example.chars().count(),
            detector.max_len(),
            "{}",
            detector.name()
        );
    }
}

#[test]
fn design_example_parses_into_the_expected_rule() {
    let text = r#"
[[rule]]
id = "no-confidential"      # unique across all files; required
kind = "replace"            # replace | regex | redact | block | path | system_prompt | param | stop
find = "confidential"       # replace: literal text
replace = "[redacted]"
case_insensitive = false    # optional
whole_word = false          # optional
enabled = true              # optional, default true
mode = "enforce"            # enforce | shadow (shadow: audit only, output unchanged)
models = ["*"]              # optional globs on the request's model name
endpoints = ["*"]           # optional: generate | chat | openai_chat | openai_completions
"#;
    assert_eq!(
        one(text),
        Rule {
            id: "no-confidential".into(),
            enabled: true,
            mode: Mode::Enforce,
            models: vec!["*".into()],
            endpoints: vec![],
            action: Action::Replace {
                find: "confidential".into(),
                replace: "[redacted]".into(),
                case_insensitive: false,
                whole_word: false,
            },
            source: PathBuf::from("rules/t.toml"),
            description: None,
        }
    );
}

#[test]
fn every_kind_parses_with_its_defaults() {
    let text = r#"
[[rule]]
id = "r"
kind = "regex"
pattern = '(\w+)@example\.com'
replace = "$1@example.org"
mode = "shadow"
endpoints = ["chat", "openai_chat", "chat"]

[[rule]]
id = "d"
kind = "redact"
detector = "jwt"

[[rule]]
id = "rp"
kind = "redact"
pattern = 'secret-[0-9]{4}'
mask = "****"

[[rule]]
id = "b"
kind = "block"
find = "rm -rf /"
message = "blocked"
case_insensitive = true

[[rule]]
id = "bp"
kind = "block"
pattern = 'DROP TABLE \w+'
message = "no SQL"
max_len = 64

[[rule]]
id = "p"
kind = "path"
roots = ["/srv/work"]
action = "flag"
min_confidence = 1

[[rule]]
id = "s"
kind = "system_prompt"
text = "Be brief."
enabled = false

[[rule]]
id = "t"
kind = "param"
name = "temperature"
value = 0.7
op = "max"
models = ["llama3*"]

[[rule]]
id = "o"
kind = "param"
name = "keep_alive"
value = "10m"
op = "default"

[[rule]]
id = "st"
kind = "stop"
sequences = ["</answer>"]
description = "stop after the answer"
"#;
    let rules = parse(text).unwrap_or_else(|e| panic!("{}", rendered(&e)));
    let actions: Vec<_> = rules.iter().map(|r| r.action.clone()).collect();
    assert_eq!(
        actions,
        [
            Action::Regex {
                pattern: r"(\w+)@example\.com".into(),
                replace: "$1@example.org".into(),
                max_len: DEFAULT_MAX_LEN,
            },
            Action::Redact {
                detector: Some(Detector::Jwt),
                pattern: None,
                mask: DEFAULT_MASK.into(),
                max_len: Detector::Jwt.max_len(),
            },
            Action::Redact {
                detector: None,
                pattern: Some("secret-[0-9]{4}".into()),
                mask: "****".into(),
                max_len: DEFAULT_MAX_LEN,
            },
            Action::Block {
                find: Some("rm -rf /".into()),
                pattern: None,
                case_insensitive: true,
                message: "blocked".into(),
                max_len: 8,
            },
            Action::Block {
                find: None,
                pattern: Some(r"DROP TABLE \w+".into()),
                case_insensitive: false,
                message: "no SQL".into(),
                max_len: 64,
            },
            Action::Path {
                roots: vec!["/srv/work".into()],
                min_confidence: 1.0,
                fix: false,
            },
            Action::SystemPrompt {
                text: "Be brief.".into(),
                position: Position::Prepend,
            },
            Action::Param {
                name: "temperature".into(),
                value: serde_json::json!(0.7),
                op: ParamOp::Max,
            },
            Action::Param {
                name: "keep_alive".into(),
                value: serde_json::json!("10m"),
                op: ParamOp::Default,
            },
            Action::Stop {
                sequences: vec!["</answer>".into()],
            },
        ]
    );
    let kinds: Vec<_> = rules.iter().map(Rule::kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Regex,
            Kind::Redact,
            Kind::Redact,
            Kind::Block,
            Kind::Block,
            Kind::Path,
            Kind::SystemPrompt,
            Kind::Param,
            Kind::Param,
            Kind::Stop
        ]
    );
    assert_eq!(rules[0].mode, Mode::Shadow);
    assert_eq!(rules[0].endpoints, [Endpoint::Chat, Endpoint::OpenaiChat]);
    assert!(!rules[6].enabled);
    assert_eq!(rules[7].models, ["llama3*"]);
    assert_eq!(
        rules[9].description.as_deref(),
        Some("stop after the answer")
    );
}

#[test]
fn a_file_reports_every_error_with_its_line() {
    let text = r#"[[rule]]
id = "bad id!"
kind = "replace"
find = "x"
pattern = "y"

[[rule]]
id = "re"
kind = "regex"
pattern = "a("
replace = "$1"
max_len = 0

[[rule]]
kind = "redact"
detector = "ssn"
mode = "loud"
endpoints = ["chat", "grpc"]

[[rule]]
id = "empty"
kind = "block"
pattern = "a*"
case_insensitive = "yes"

[[rule]]
id = "p"
kind = "path"
min_confidence = 1.5
action = "fix-it"
patern = "x"

[[rule]]
id = "re"
kind = "teleport"
"#;
    let errors = errors(text);
    insta::assert_snapshot!(rendered(&errors), @r###"
    rules/t.toml:1: rule "bad id!": field `replace`: missing (required by kind `replace`)
    rules/t.toml:2: rule "bad id!": field `id`: "bad id!" may only contain letters, digits, `_`, `.` and `-`
    rules/t.toml:5: rule "bad id!": field `pattern`: does not apply to kind `replace` (its fields: find, replace, case_insensitive, whole_word)
    rules/t.toml:10: rule "re": field `pattern`: regex parse error:
        a(
         ^
    error: unclosed group
    rules/t.toml:12: rule "re": field `max_len`: must be between 1 and 65536, not 0
    rules/t.toml:14: field `id`: missing; every rule needs a unique id
    rules/t.toml:16: field `detector`: unknown detector "ssn"; known detectors: email, aws_access_key, github_token, openai_key, private_key, jwt
    rules/t.toml:17: field `mode`: unknown mode "loud"; expected enforce or shadow
    rules/t.toml:18: field `endpoints`: unknown endpoint "grpc"; expected one of: generate, chat, openai_chat, openai_completions, *
    rules/t.toml:20: rule "empty": field `message`: missing (required by kind `block`)
    rules/t.toml:23: rule "empty": field `pattern`: "a*" can match the empty string, so it would match everywhere; make it consume at least one character (e.g. `a+` rather than `a*`)
    rules/t.toml:24: rule "empty": field `case_insensitive`: expected true or false, found a string
    rules/t.toml:26: rule "p": field `roots`: missing (required by kind `path`)
    rules/t.toml:29: rule "p": field `min_confidence`: must be between 0 and 1, not 1.5
    rules/t.toml:30: rule "p": field `action`: unknown action "fix-it"; expected fix or flag
    rules/t.toml:31: rule "p": field `patern`: unknown field (did you mean `pattern`?)
    rules/t.toml:34: rule "re": field `id`: duplicate id; first defined at rules/t.toml:8
    rules/t.toml:35: rule "re": field `kind`: unknown kind "teleport"; expected one of: replace, regex, redact, block, path, system_prompt, param, stop, alias, detect
    "###);
}

#[test]
fn toml_syntax_errors_have_a_line() {
    let errors = errors("[[rule]]\nid = \"a\"\nkind = \n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(3));
    assert!(errors[0].message.starts_with("TOML: "), "{}", errors[0]);
    assert!(errors[0].rule_id.is_none());
}

#[test]
fn top_level_keys_other_than_rule_are_errors() {
    let errors = errors("version = 2\n\n[[rule]]\nid = \"a\"\nkind = \"stop\"\nsequences = [\"x\"]\n\n[meta]\nx = 1\n");
    assert_eq!(errors.len(), 2, "{}", rendered(&errors));
    assert_eq!(errors[0].line, Some(1));
    assert!(errors[0].message.contains("`version`"));
    assert_eq!(errors[1].line, Some(8));
    assert!(errors[1].message.contains("`meta`"));

    let errors = errors_of("[rule]\nid = \"a\"\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("[[rule]]"), "{}", errors[0]);
    assert_eq!(errors[0].line, Some(1));
}

fn errors_of(text: &str) -> Vec<RuleError> {
    errors(text)
}

#[test]
fn a_file_without_rules_is_valid_and_empty() {
    assert_eq!(parse(""), Ok(vec![]));
    assert_eq!(parse("# only comments\n\n"), Ok(vec![]));
}

#[test]
fn inline_rule_arrays_work_too() {
    let rules = parse("rule = [{ id = \"a\", kind = \"stop\", sequences = [\"x\"] }]\n").unwrap();
    assert_eq!(rules[0].id, "a");
}

#[test]
fn fields_of_other_kinds_are_named_with_the_kind() {
    let errors = errors(
        "[[rule]]\nid = \"x\"\nkind = \"regex\"\npattern = \"a\"\nreplace = \"b\"\ncase_insensitive = true\nmask = \"m\"\n",
    );
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_deref()).collect();
    assert_eq!(fields, [Some("case_insensitive"), Some("mask")]);
    assert_eq!(errors[0].line, Some(6));
    assert!(errors[0].message.contains("kind `regex`"), "{}", errors[0]);
}

#[test]
fn patterns_are_compiled_and_bounded() {
    let rule = |pattern: &str, extra: &str| {
        format!("[[rule]]\nid = \"x\"\nkind = \"redact\"\npattern = '{pattern}'\n{extra}")
    };
    let message = |text: String| {
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{}", rendered(&errors));
        (errors[0].field.clone().unwrap(), errors[0].message.clone())
    };
    for empty in ["a*", "", "(?:)", r"\b", "x|", "(?m)^"] {
        let (field, text) = message(rule(empty, ""));
        assert_eq!(field, "pattern");
        assert!(text.contains("empty string"), "{empty}: {text}");
    }
    let (_, text) = message(rule("[a-z", ""));
    assert!(text.starts_with("regex parse error"), "{text}");
    // Bounded longer than max_len (explicit or default): the field at fault is named.
    let (field, text) = message(rule("[A-Z]{300}", ""));
    assert_eq!(field, "pattern");
    assert!(text.contains("up to 300 characters"), "{text}");
    let (field, _) = message(rule("[A-Z]{30}", "max_len = 20\n"));
    assert_eq!(field, "max_len");
    parse(&rule("[A-Z]{30}", "max_len = 30\n")).unwrap();
    // Unbounded patterns are cut at max_len by the pipeline; that is the user's call.
    parse(&rule("token=[A-Z]+", "")).unwrap();
    let (_, text) = message(rule("x", "max_len = 70000\n"));
    assert!(text.contains("between 1 and 65536"));
    let (_, text) = message(rule("x", "max_len = -1\n"));
    assert!(text.contains("between 1 and 65536"));
    // A detector's own bound is the floor for max_len.
    let (field, _) = message(
        "[[rule]]\nid = \"x\"\nkind = \"redact\"\ndetector = \"jwt\"\nmax_len = 100\n".into(),
    );
    assert_eq!(field, "max_len");
}

#[test]
fn replacement_groups_must_exist() {
    let rule = |pattern: &str, replace: &str| {
        format!("[[rule]]\nid = \"x\"\nkind = \"regex\"\npattern = '{pattern}'\nreplace = '{replace}'\n")
    };
    for ok in [
        "$1", "${1}x", "$$1", "$0", "${word}", "$word!", "cost: $", "${",
    ] {
        parse(&rule(r"(?P<word>\w+)", ok)).unwrap_or_else(|e| panic!("{ok}: {}", rendered(&e)));
    }
    let errors = errors(&rule(r"(\w+)", "$1st"));
    assert_eq!(errors[0].field.as_deref(), Some("replace"));
    assert!(errors[0].message.contains("${1}st"), "{}", errors[0]);
    let errors = errors_of(&rule(r"(\w+)", "$2"));
    assert!(errors[0].message.contains("group `2`"), "{}", errors[0]);
}

#[test]
fn either_or_fields_and_required_fields() {
    let errors = errors("[[rule]]\nid = \"x\"\nkind = \"redact\"\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, None);
    assert!(errors[0].message.contains("`detector`"));
    let errors = errors_of(
        "[[rule]]\nid = \"x\"\nkind = \"block\"\nfind = \"a\"\npattern = \"b\"\nmessage = \"m\"\n",
    );
    assert_eq!(errors.len(), 1, "{}", rendered(&errors));
    assert_eq!(errors[0].field.as_deref(), Some("pattern"));
    let missing = |kind: &str| {
        errors_of(&format!("[[rule]]\nid = \"x\"\nkind = \"{kind}\"\n"))
            .into_iter()
            .map(|e| e.field.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(missing("replace"), ["find", "replace"]);
    assert_eq!(missing("regex"), ["pattern", "replace"]);
    assert_eq!(missing("block"), ["message", ""]);
    assert_eq!(missing("system_prompt"), ["text"]);
    assert_eq!(missing("param"), ["name", "value"]);
    assert_eq!(missing("stop"), ["sequences"]);
    assert_eq!(missing("path"), ["roots"]);
    parse("[[rule]]\nid = \"x\"\nkind = \"path\"\nroots = [\".\"]\n").unwrap();
    // A field of the wrong type is reported once, not also as missing.
    let errors = errors_of("[[rule]]\nid = \"x\"\nkind = \"stop\"\nsequences = \"x\"\n");
    assert_eq!(errors.len(), 1, "{}", rendered(&errors));
    assert!(errors[0].message.contains("array of strings"));
}

#[test]
fn value_checks() {
    let errors = errors(
        r#"[[rule]]
id = "a"
kind = "param"
name = "num_ctx"
value = "big"
op = "max"

[[rule]]
id = "b"
kind = "param"
name = "x"
value = nan
op = "clamp"

[[rule]]
id = "c"
kind = "stop"
sequences = []

[[rule]]
id = "d"
kind = "stop"
sequences = ["", "x"]

[[rule]]
id = "e"
kind = "system_prompt"
text = ""
position = "middle"

[[rule]]
id = "f"
kind = "replace"
find = ""
replace = ""
models = []
endpoints = []
"#,
    );
    let summary: Vec<_> = errors
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e.rule_id.as_deref().unwrap_or("-"),
                e.line.unwrap_or(0),
                e.field.as_deref().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "a 5 value",
            "b 11 name",
            "b 12 value",
            "b 13 op",
            "c 18 sequences",
            "d 23 sequences",
            "e 28 text",
            "e 29 position",
            "f 34 find",
            "f 36 models",
            "f 37 endpoints",
        ],
        "{}",
        rendered(&errors)
    );
    // Empty text is fine when it replaces the system prompt.
    let rule = one(
        "[[rule]]\nid = \"x\"\nkind = \"system_prompt\"\ntext = \"\"\nposition = \"replace\"\n",
    );
    assert_eq!(
        rule.action,
        Action::SystemPrompt {
            text: String::new(),
            position: Position::Replace
        }
    );
}

#[test]
fn ids_are_checked() {
    for bad in ["", "has space", "ünï", "a/b", &"x".repeat(129)] {
        let text = format!("[[rule]]\nid = {bad:?}\nkind = \"stop\"\nsequences = [\"x\"]\n");
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{bad}: {}", rendered(&errors));
        assert_eq!(errors[0].field.as_deref(), Some("id"));
        assert_eq!(errors[0].line, Some(2));
    }
    one("[[rule]]\nid = \"Ok_id-1.2\"\nkind = \"stop\"\nsequences = [\"x\"]\n");
}

#[test]
fn duplicate_ids_in_one_file() {
    let rule = "[[rule]]\nid = \"same\"\nkind = \"stop\"\nsequences = [\"x\"]\n\n";
    let errors = errors(&rule.repeat(3));
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].line, Some(7));
    assert_eq!(errors[1].line, Some(12));
    assert!(
        errors[1].message.contains("rules/t.toml:2"),
        "{}",
        errors[1]
    );
}

#[test]
fn load_dir_rejects_ids_duplicated_across_files() {
    let dir = fixture("dup");
    let errors = load_dir(&dir).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", rendered(&errors));
    let error = &errors[0];
    assert_eq!(error.file, dir.join("b.toml"));
    assert_eq!(error.line, Some(9));
    assert_eq!(error.rule_id.as_deref(), Some("shared-id"));
    assert!(
        error
            .message
            .contains(&format!("{}:3", dir.join("a.toml").display())),
        "{error}"
    );
}

#[test]
fn load_dir_reads_sorted_toml_files_and_tolerates_a_missing_dir() {
    assert_eq!(load_dir(&fixture("does-not-exist")), Ok(vec![]));
    let errors = load_dir(&fixture("unreadable")).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].file.ends_with("latin1.toml"));
    assert!(
        errors[0].message.starts_with("cannot read"),
        "{}",
        errors[0]
    );
    let errors = load_dir(&fixture("dup/a.toml")).unwrap_err();
    assert!(
        errors[0].message.contains("rule directory"),
        "{}",
        errors[0]
    );
}

#[test]
fn default_pack_loads_and_redacts_only_secrets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = load_dir(&dir).unwrap_or_else(|e| panic!("{}", rendered(&e)));
    let ids: Vec<_> = rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "redact-aws-access-key",
            "redact-github-token",
            "redact-openai-key",
            "redact-private-key",
            "redact-jwt"
        ]
    );
    let mut text = INNOCENT.concat();
    text.push_str("git config user.email dev@example.com\n");
    for rule in &rules {
        assert!(rule.applies_to("llama3.2", Some(Endpoint::Chat)));
        let Action::Redact {
            detector: Some(detector),
            mask,
            max_len,
            ..
        } = &rule.action
        else {
            panic!("{} is not a detector rule", rule.id);
        };
        assert_eq!(*mask, format!("[REDACTED:{}]", detector.name()));
        assert_eq!(*max_len, detector.max_len());
        assert_ne!(*detector, Detector::Email);
        assert!(matches(*detector, &text).is_empty(), "{}", rule.id);
    }
}

#[test]
fn models_are_globs_and_latest_is_implied() {
    let rule = |models: &[&str]| Rule {
        id: "x".into(),
        enabled: true,
        mode: Mode::Enforce,
        models: models.iter().map(|m| m.to_string()).collect(),
        endpoints: vec![],
        action: Action::Stop {
            sequences: vec!["x".into()],
        },
        source: "<test>".into(),
        description: None,
    };
    let covers = |models: &[&str], model: &str| rule(models).applies_to(model, None);
    assert!(covers(&["*"], "anything:7b"));
    assert!(covers(&["*"], ""));
    assert!(covers(&["llama3"], "llama3:latest"));
    assert!(covers(&["llama3:latest"], "llama3"));
    assert!(!covers(&["llama3"], "llama3:8b"));
    assert!(covers(&["llama3:*"], "llama3:8b"));
    assert!(covers(&["llama3*"], "llama3.2:1b"));
    assert!(covers(&["Llama3"], "llama3"));
    assert!(covers(&["qwen?.5*"], "qwen2.5-coder:7b"));
    assert!(!covers(&["qwen?.5"], "qwen2.5-coder"));
    assert!(covers(&["gemma*", "phi*"], "phi4"));
    assert!(!covers(&["gemma*", "phi*"], "mistral"));
    assert!(covers(&["hf.co/*"], "hf.co/bartowski/model:Q4_K_M"));
    assert!(covers(&["registry:5000/x"], "registry:5000/x:latest"));
    assert!(covers(&["*b*c*"], "abxxc"));
    assert!(!covers(&["*b*c"], "abxxcd"));
    let mut disabled = rule(&["*"]);
    disabled.enabled = false;
    assert!(!disabled.applies_to("x", None));
}

#[test]
fn endpoints_parse_and_restrict() {
    assert_eq!(Endpoint::of_path("/api/generate"), Some(Endpoint::Generate));
    assert_eq!(Endpoint::of_path("/api/chat"), Some(Endpoint::Chat));
    assert_eq!(
        Endpoint::of_path("/v1/chat/completions"),
        Some(Endpoint::OpenaiChat)
    );
    assert_eq!(
        Endpoint::of_path("/v1/completions"),
        Some(Endpoint::OpenaiCompletions)
    );
    assert_eq!(Endpoint::of_path("/api/tags"), None);
    for e in Endpoint::ALL {
        assert_eq!(Endpoint::parse(e.name()), Some(e));
    }
    let with = |endpoints: &str| {
        one(&format!(
            "[[rule]]\nid = \"x\"\nkind = \"stop\"\nsequences = [\"x\"]\nendpoints = {endpoints}\n"
        ))
    };
    let all = with(r#"["*"]"#);
    assert!(all.endpoints.is_empty());
    assert!(all.applies_to("m", None));
    assert!(with(r#"["chat", "*"]"#).endpoints.is_empty());
    let chat = with(r#"["chat", "openai_chat"]"#);
    assert!(chat.applies_to("m", Some(Endpoint::Chat)));
    assert!(chat.applies_to("m", Some(Endpoint::OpenaiChat)));
    assert!(!chat.applies_to("m", Some(Endpoint::Generate)));
    assert!(!chat.applies_to("m", None));
}

#[test]
fn specs_from_json_validate_like_files() {
    let spec: RuleSpec = serde_json::from_str(
        r#"{"id": "api-1", "kind": "param", "name": "temperature", "value": 0.2, "op": "min"}"#,
    )
    .unwrap();
    let rule = validate_spec(Path::new("<api>"), None, &spec).unwrap();
    assert_eq!(rule.source, PathBuf::from("<api>"));
    assert_eq!(
        rule.action,
        Action::Param {
            name: "temperature".into(),
            value: serde_json::json!(0.2),
            op: ParamOp::Min
        }
    );
    assert!(serde_json::from_str::<RuleSpec>(r#"{"id": "x", "nope": 1}"#).is_err());
    let spec = RuleSpec {
        kind: Some("replace".into()),
        pattern: Some("x".into()),
        ..RuleSpec::default()
    };
    let errors = validate_spec(Path::new("<api>"), Some(3), &spec).unwrap_err();
    assert_eq!(errors.len(), 4, "{}", rendered(&errors));
    assert!(errors.iter().all(|e| e.line == Some(3)));
    assert_eq!(
        serde_json::to_string(&spec).unwrap(),
        r#"{"kind":"replace","pattern":"x"}"#
    );
}

#[test]
fn errors_render_the_known_parts() {
    let error = RuleError {
        file: "rules/a.toml".into(),
        line: Some(12),
        rule_id: Some("x".into()),
        field: Some("pattern".into()),
        message: "bad".into(),
    };
    assert_eq!(
        error.to_string(),
        "rules/a.toml:12: rule \"x\": field `pattern`: bad"
    );
    let bare = RuleError::in_file(Path::new("rules"), None, "cannot read");
    assert_eq!(bare.render(), "rules: cannot read");
}

proptest! {
    #[test]
    fn a_glob_without_wildcards_matches_only_itself(
        name in "[a-z0-9.:/-]{0,20}",
        other in "[a-z0-9.:/-]{0,20}",
    ) {
        let prefix_glob = format!("{name}*");
        let suffix_glob = format!("*{name}");
        let (longer, shorter) = (format!("{name}{other}"), format!("{other}{name}"));
        prop_assert!(glob_match(&name, &name));
        prop_assert!(glob_match("*", &name));
        prop_assert!(glob_match(&prefix_glob, &longer));
        prop_assert!(glob_match(&suffix_glob, &shorter));
        prop_assert_eq!(glob_match(&name, &other), name == other);
        let questions: String = name.chars().map(|_| '?').collect();
        prop_assert!(glob_match(&questions, &name));
    }

    #[test]
    fn parsing_never_panics(lines in proptest::collection::vec(prop_oneof![
        Just("[[rule]]".to_string()),
        Just("[rule]".to_string()),
        Just("id = \"a\"".to_string()),
        Just("kind = \"regex\"".to_string()),
        Just("kind = \"redact\"".to_string()),
        Just("pattern = '(a'".to_string()),
        Just("max_len = 99999999999".to_string()),
        Just("value = 1979-05-27T07:32:00Z".to_string()),
        "[a-z_]{1,10} = [0-9\"\\[\\]]{0,5}",
        ".{0,20}",
    ], 0..12)) {
        let _ = parse(&lines.join("\n"));
    }
}
