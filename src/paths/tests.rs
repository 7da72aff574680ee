use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::text::{clean, core, create_intent, distance, next_token};
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempTree(PathBuf);

impl TempTree {
    fn new(files: &[&str]) -> TempTree {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rawrxd-paths-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in files {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        TempTree(dir.canonicalize().unwrap())
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn root(&self) -> String {
        self.0.to_str().unwrap().to_string()
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SHOP: &[&str] = &[
    "src/main.rs",
    "src/lib.rs",
    "src/commands/mod.rs",
    "src/commands/search.rs",
    "src/util/mod.rs",
    "crates/printer/src/standard.rs",
    "crates/printer/src/json.rs",
    "crates/cli/src/json.rs",
    "docs/config.yml",
    "README.md",
    "LICENSE-MIT",
    ".github/workflows/ci.yml",
    "src/os.rs",
];

fn fixer(tree: &TempTree) -> Arc<PathFixer> {
    Arc::new(PathFixer::open(&[tree.root()], 0.8, true).unwrap())
}

fn prose(scope: &Scope, raw: &str) -> Verdict {
    scope.decide(raw, false, Ref::Prose { quoted: true })
}

fn fixed(verdict: Verdict) -> Option<(String, &'static str)> {
    match verdict {
        Verdict::Fix { text, class, .. } => Some((text, class)),
        _ => None,
    }
}

#[test]
fn tokens_are_cut_at_quotes_brackets_and_equals() {
    let text = "see `src/mian.rs`, [x](docs/a.md) and --file=src/x.rs: done";
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some((start, Some(end))) = next_token(text, at, true) {
        let token = &text[start..end];
        if let Some(c) = core(token) {
            tokens.push(token[c.start..c.end].to_string());
        }
        at = end;
    }
    assert!(tokens.contains(&"src/mian.rs".to_string()), "{tokens:?}");
    assert!(tokens.contains(&"docs/a.md".to_string()), "{tokens:?}");
    assert!(tokens.contains(&"src/x.rs".to_string()), "{tokens:?}");
}

#[test]
fn the_core_drops_line_suffixes_and_sentence_punctuation() {
    let c = core("src/main.rs:12:5.").unwrap();
    assert_eq!(&"src/main.rs:12:5."[c.start..c.end], "src/main.rs");
    let c = core("**src/lib.rs**").unwrap();
    assert_eq!(&"**src/lib.rs**"[c.start..c.end], "src/lib.rs");
    for not_a_path in [
        "src/**/*.rs",
        "^src/.*$",
        "https://x.io/a.rs",
        "std::path",
        "a@b.com",
    ] {
        assert!(core(not_a_path).is_none(), "{not_a_path}");
    }
    // `__init__.py` keeps its underscores.
    let c = core("__init__.py").unwrap();
    assert_eq!(c.start, 0);
}

#[test]
fn cleaning_maps_look_alikes_and_separators() {
    assert_eq!(clean("src\\cmd\\mod.rs").0, "src/cmd/mod.rs");
    assert_eq!(clean("src//x.rs").0, "src/x.rs");
    assert_eq!(clean("src\u{FF0F}ma\u{200B}in.rs").0, "src/main.rs");
    assert_eq!(clean("sr\u{0441}/main.rs").0, "src/main.rs"); // Cyrillic es
    assert!(clean("src\u{2215}x.rs").1.unicode);
}

#[test]
fn create_intent_reads_the_same_sentence_only() {
    assert!(create_intent("I'll create a new file "));
    assert!(create_intent("*** Add File: "));
    assert!(!create_intent("I created a.rs. Now open "));
    assert!(!create_intent("Open "));
}

#[test]
fn distance_is_bounded_levenshtein() {
    assert_eq!(distance("mian.rs", "main.rs", 2), Some(1));
    assert_eq!(distance("serach", "search", 2), Some(1));
    assert_eq!(distance("kitten", "sitting", 3), Some(3));
    assert_eq!(distance("", "ab", 2), Some(2));
    // The ASCII path and the general one agree.
    for (a, b) in [
        ("paths.rs", "psath.rs"),
        ("abc", "cab"),
        ("ca", "abc"),
        ("config", "cnofig"),
    ] {
        let ascii = distance(a, b, 3);
        let wide = distance(&format!("{a}é"), &format!("{b}é"), 3);
        assert_eq!(ascii, wide, "{a} {b}");
    }
    assert_eq!(distance("ѕrc", "src", 2), Some(1));
    assert_eq!(distance("comands", "commands", 2), Some(1));
    assert_eq!(distance("abc", "xyz", 2), None);
}

#[test]
fn existing_outside_and_created_paths_are_kept() {
    let tree = TempTree::new(SHOP);
    let (scope, _) = fixer(&tree).scope(None);
    for raw in [
        "src/main.rs",
        "./src/lib.rs",
        "/etc/passwd",
        "/etc/pasword",
        "../../secrets.txt",
        "~/.ssh/id_rsa",
        "C:\\Windows\\System32\\drivers\\etc\\hosts",
        "/home/someone/project/src/main.rs",
        "src/../src/mian.rs",
    ] {
        assert_eq!(prose(&scope, raw), Verdict::Keep, "{raw}");
    }
    let absolute = format!("{}/src/main.rs", tree.root());
    assert_eq!(prose(&scope, &absolute), Verdict::Keep);
    // One edit from src/main.rs, but the model says it creates it.
    assert_eq!(
        scope.decide("src/mainn.rs", true, Ref::Prose { quoted: true }),
        Verdict::Keep
    );
}

#[test]
fn each_class_is_fixed_in_the_authors_form() {
    let tree = TempTree::new(SHOP);
    let (scope, _) = fixer(&tree).scope(None);
    let cases = [
        ("src\\commands\\mod.rs", "src/commands/mod.rs", "separator"),
        (".\\src\\lib.rs", "./src/lib.rs", "separator"),
        ("src\u{FF0F}main.rs", "src/main.rs", "unicode"),
        ("SRC/Main.rs", "src/main.rs", "case"),
        ("docs/config.yaml", "docs/config.yml", "extension"),
        (
            "printer/src/standard.rs",
            "crates/printer/src/standard.rs",
            "missing_dir",
        ),
        (
            "lib/printer/src/standard.rs",
            "crates/printer/src/standard.rs",
            "wrong_dir",
        ),
        ("src/comands/search.rs", "src/commands/search.rs", "typo"),
        ("src/comands/mod.rs", "src/commands/mod.rs", "typo"),
        (
            "standard.rs",
            "crates/printer/src/standard.rs",
            "missing_dir",
        ),
        ("src/commands/serach.rs", "src/commands/search.rs", "typo"),
        ("./src/mian.rs", "./src/main.rs", "typo"),
        ("LICENSE-MTI", "LICENSE-MIT", "typo"),
    ];
    for (raw, want, class) in cases {
        assert_eq!(
            fixed(prose(&scope, raw)),
            Some((want.to_string(), class)),
            "{raw}"
        );
    }
    let absolute = format!("{}/src/mian.rs", tree.root());
    assert_eq!(
        fixed(prose(&scope, &absolute)).map(|f| f.0),
        Some(format!("{}/src/main.rs", tree.root()))
    );
}

#[test]
fn ambiguous_far_and_short_names_are_only_flagged() {
    let tree = TempTree::new(SHOP);
    let (scope, _) = fixer(&tree).scope(None);
    // json.rs is in two crates.
    match prose(&scope, "src/json.rs") {
        Verdict::Flag { reason, .. } => assert!(reason.starts_with("ambiguous"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        prose(&scope, "src/quantum_flux.rs"),
        Verdict::Flag { .. }
    ));
    // `io.rs` is one edit from `os.rs`, but too short to call it a typo.
    assert!(matches!(prose(&scope, "src/io.rs"), Verdict::Flag { .. }));
    // A URL without its scheme is not a path.
    assert_eq!(
        prose(&scope, "github.com/acme/shop/blob/main/src/mian.rs"),
        Verdict::Keep
    );
    // Not a file the workspace could have (no such extension): not a path at all.
    assert_eq!(
        scope.decide("flask.sansio", false, Ref::Prose { quoted: false }),
        Verdict::Keep
    );
}

#[test]
fn a_bare_word_is_a_path_only_when_a_file_has_exactly_that_name() {
    let tree = TempTree::new(&["lib/node.js", "src/code.js", "deep/setup.py"]);
    let (scope, _) = fixer(&tree).scope(None);
    let bare = |raw| scope.decide(raw, false, Ref::Prose { quoted: false });
    // "Node.js" the runtime: no case fix into lib/node.js, no typo fix into code.js.
    assert_eq!(bare("Node.js"), Verdict::Keep);
    assert_eq!(bare("Code.js"), Verdict::Keep);
    assert_eq!(bare("mode.js"), Verdict::Keep);
    // A file with exactly that name elsewhere: the missing directory is added.
    assert_eq!(
        fixed(bare("setup.py")).map(|f| f.0),
        Some("deep/setup.py".to_string())
    );
    // In backticks the same words are paths, fixed or flagged.
    assert_eq!(
        fixed(prose(&scope, "Node.js")).map(|f| f.0),
        Some("lib/node.js".to_string())
    );
}

#[test]
fn min_confidence_and_flag_rules_only_flag() {
    let tree = TempTree::new(SHOP);
    let strict = Arc::new(PathFixer::open(&[tree.root()], 0.99, true).unwrap());
    let (scope, _) = strict.scope(None);
    assert!(matches!(prose(&scope, "src/mian.rs"), Verdict::Flag { .. }));
    // Cleaning is certain.
    assert!(fixed(prose(&scope, "src\\main.rs")).is_some());
    let flag_only = Arc::new(PathFixer::open(&[tree.root()], 0.5, false).unwrap());
    let (scope, _) = flag_only.scope(None);
    assert!(matches!(
        prose(&scope, "src\\main.rs"),
        Verdict::Flag { .. }
    ));
}

#[test]
fn two_roots_make_a_match_in_both_ambiguous_unless_a_workspace_is_named() {
    let a = TempTree::new(&["src/app.py", "README.md"]);
    let b = TempTree::new(&["src/app.py", "setup.py"]);
    let fixer = Arc::new(PathFixer::open(&[a.root(), b.root()], 0.8, true).unwrap());
    let (scope, honoured) = fixer.scope(None);
    assert!(honoured);
    assert!(matches!(prose(&scope, "src/App.py"), Verdict::Flag { .. }));
    let (scope, honoured) = fixer.scope(Some(&b.root()));
    assert!(honoured);
    assert_eq!(
        fixed(prose(&scope, "src/App.py")).map(|f| f.0),
        Some("src/app.py".to_string())
    );
    // A workspace outside every root is ignored.
    let (_, honoured) = fixer.scope(Some("/etc"));
    assert!(!honoured);
    // Not canonical: `..` is refused, never resolved (the request canonicalizes first).
    let (_, honoured) = fixer.scope(Some(&format!("{}/src/../..", a.root())));
    assert!(!honoured);
    // A workspace inside a root: relative paths are relative to it.
    let (scope, honoured) = fixer.scope(Some(&format!("{}/src", a.root())));
    assert!(honoured);
    assert_eq!(
        fixed(prose(&scope, "App.py")).map(|f| f.0),
        Some("app.py".to_string())
    );
}

#[test]
fn the_index_honours_ignore_files_and_skips_git() {
    let tree = TempTree::new(&[
        "src/main.rs",
        "target/debug/build.rs",
        ".github/workflows/ci.yml",
        ".git/config.yml",
        "notes.log",
    ]);
    std::fs::write(tree.path().join(".gitignore"), "target/\n*.log\n").unwrap();
    let data = index::IndexData::build(tree.path(), 100);
    let names: Vec<&str> = (0..data.len() as u32).map(|i| data.file(i)).collect();
    assert!(names.contains(&"src/main.rs"));
    assert!(names.contains(&".github/workflows/ci.yml"));
    assert!(!names.iter().any(|n| n.starts_with("target/")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(".git/")), "{names:?}");
    assert!(!names.contains(&"notes.log"));
    let limited = index::IndexData::build(tree.path(), 1);
    assert!(limited.truncated);
    assert_eq!(limited.len(), 1);
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_root_are_not_followed() {
    let outside = TempTree::new(&["secret/keys.rs"]);
    let tree = TempTree::new(&["src/main.rs"]);
    std::os::unix::fs::symlink(outside.path(), tree.path().join("link")).unwrap();
    let data = index::IndexData::build(tree.path(), 100);
    assert!(data.by_name("keys.rs").is_empty());
    let (scope, _) = fixer(&tree).scope(None);
    assert!(matches!(
        prose(&scope, "secret/keys.rs"),
        Verdict::Flag { .. }
    ));
}

#[test]
fn a_missing_root_is_an_error_not_a_crash() {
    let error = PathFixer::open(&["/no/such/rawrxd/root".to_string()], 0.8, true).unwrap_err();
    assert!(error.contains("/no/such/rawrxd/root"), "{error}");
}

#[test]
fn a_file_created_now_is_found_within_a_second() {
    let tree = TempTree::new(&["src/main.rs"]);
    let fixer = fixer(&tree);
    let (scope, _) = fixer.scope(None);
    assert!(matches!(
        prose(&scope, "src/Fresh_File.rs"),
        Verdict::Flag { .. }
    ));
    std::fs::write(tree.path().join("src/fresh_file.rs"), "").unwrap();
    let started = Instant::now();
    loop {
        if let Some((text, _)) = fixed(prose(&scope, "src/Fresh_File.rs")) {
            assert_eq!(text, "src/fresh_file.rs");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not indexed after 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn args(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    }
}

#[test]
fn tool_arguments_fix_path_keys_and_commands_but_never_contents_or_creations() {
    use serde_json::json;
    let tree = TempTree::new(SHOP);
    let (scope, _) = fixer(&tree).scope(None);
    let mut read = args(json!({"path": "“src/mian.rs”", "old_str": "src/mian.rs"}));
    let found = tools::fix_arguments(&scope, "read_file", &mut read, true);
    assert_eq!(read["path"], "src/main.rs");
    assert_eq!(read["old_str"], "src/mian.rs");
    assert_eq!(found.len(), 1);
    let mut list = args(json!({"paths": ["src/lib.rs", "SRC/LIB.RS"], "pattern": "src/mian.rs"}));
    tools::fix_arguments(&scope, "grep", &mut list, true);
    assert_eq!(list["paths"], json!(["src/lib.rs", "src/lib.rs"]));
    assert_eq!(list["pattern"], "src/mian.rs");
    let mut shell = args(json!({"command": "cat src/mian.rs | head -n 5"}));
    tools::fix_arguments(&scope, "run_shell", &mut shell, true);
    assert_eq!(shell["command"], "cat src/main.rs | head -n 5");
    // Shadow: reported, unchanged.
    let mut shadow = args(json!({"path": "src/mian.rs"}));
    assert_eq!(
        tools::fix_arguments(&scope, "read_file", &mut shadow, false).len(),
        1
    );
    assert_eq!(shadow["path"], "src/mian.rs");
    // Creating a file one edit from an existing one: never touched.
    for (tool, value) in [
        (
            "write_file",
            json!({"path": "src/mainn.rs", "content": "x"}),
        ),
        ("create_file", json!({"file_path": "src/mainn.rs"})),
        (
            "str_replace_editor",
            json!({"command": "create", "path": "src/mainn.rs"}),
        ),
        ("run_shell", json!({"command": "touch src/mainn.rs"})),
        ("run_shell", json!({"command": "echo x > src/mainn.rs"})),
    ] {
        let mut a = args(value.clone());
        assert!(
            tools::fix_arguments(&scope, tool, &mut a, true).is_empty(),
            "{tool} {value}"
        );
        assert_eq!(serde_json::Value::Object(a), value);
    }
}

#[test]
fn a_bare_division_slash_in_prose_is_cleaned() {
    let tree = TempTree::new(SHOP);
    let (scope, _) = fixer(&tree).scope(None);
    assert_eq!(
        fixed(scope.decide("src\u{2215}main.rs", false, Ref::Prose { quoted: false })),
        Some(("src/main.rs".to_string(), "unicode"))
    );
}

#[test]
fn a_rebuilt_rule_set_reuses_the_live_index_of_a_root() {
    let tree = TempTree::new(&["src/main.rs"]);
    let first = index::RootIndex::shared("a", tree.path(), 100).unwrap();
    let again = index::RootIndex::shared("b", tree.path(), 100).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    drop((first, again));
    // Once nothing holds it, the next rule set indexes the tree afresh.
    std::fs::write(tree.path().join("src/lib.rs"), "").unwrap();
    let fresh = index::RootIndex::shared("a", tree.path(), 100).unwrap();
    assert_eq!(fresh.load().len(), 2);
}

#[test]
fn a_file_in_a_new_directory_is_found_and_that_directory_watched() {
    let tree = TempTree::new(&["src/main.rs"]);
    let fixer = fixer(&tree);
    let (scope, _) = fixer.scope(None);
    let wait_for = |raw: &str, want: &str| {
        let started = Instant::now();
        loop {
            if fixed(prose(&scope, raw)).is_some_and(|(text, _)| text == want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{want} not indexed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::create_dir_all(tree.path().join("src/net")).unwrap();
    std::fs::write(tree.path().join("src/net/socket.rs"), "").unwrap();
    wait_for("src/net/Socket.rs", "src/net/socket.rs");
    // The new directory is watched now: a later file in it is found too.
    std::fs::write(tree.path().join("src/net/frame.rs"), "").unwrap();
    wait_for("src/net/Frame.rs", "src/net/frame.rs");
}

/// Optimal string alignment distance, the plain way (the reference for `distance`).
fn osa(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j - 1] + cost)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

proptest::proptest! {
    #[test]
    fn distance_agrees_with_the_plain_computation(
        a in "[abc./_]{0,12}",
        b in "[abc./_]{0,12}",
        max in 0usize..4,
    ) {
        let want = osa(&a, &b);
        proptest::prop_assert_eq!(distance(&a, &b, max), (want <= max).then_some(want));
    }
}

#[test]
fn a_typo_in_one_directory_of_a_deep_path_is_found_through_near_siblings() {
    let tree = TempTree::new(&[
        "svc012/third_party/flask/src/Templates/layout.html",
        "svc013/third_party/flask/src/Templates/base.html",
        "svc014/third_party/flask/src/templates/other.html",
        "Ünïcode/Dëep/Tree/notes.txt",
        "twins/alpha1/x/y/z/same.txt",
        "twins/alpha2/x/y/z/same.txt",
    ]);
    let (scope, _) = fixer(&tree).scope(None);
    // One edit in a deep directory (no suffix of the path names a file): one file.
    assert_eq!(
        fixed(prose(
            &scope,
            "svc012/third_party/flask/src/templatez/layout.html"
        )),
        Some((
            "svc012/third_party/flask/src/Templates/layout.html".to_string(),
            "typo"
        ))
    );
    // One edit in the top directory and one in the name: the rest of the directories are
    // looked up as one chain under each near sibling (case and non-ASCII letters aside).
    assert_eq!(
        fixed(prose(
            &scope,
            "svc015/third_party/flask/src/TEMPLATES/othr.html"
        )),
        Some((
            "svc014/third_party/flask/src/templates/other.html".to_string(),
            "typo"
        ))
    );
    assert_eq!(
        fixed(prose(&scope, "Ünïcodf/DËEP/tree/nots.txt")),
        Some(("Ünïcode/Dëep/Tree/notes.txt".to_string(), "typo"))
    );
    // The same rest under two siblings one edit away: ambiguous, flagged.
    match prose(&scope, "twins/alpha3/x/y/z/sane.txt") {
        Verdict::Flag { reason, .. } => assert!(reason.starts_with("ambiguous"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
