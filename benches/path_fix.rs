//! Path rules (issue 15): lookup latency, index build, streaming cost and text held back
//! (bench binary): `cargo bench --bench path_fix`.
//!
//! The tree: 50,000 empty files in a temporary directory, made from the two real path lists
//! of the path corpus (`tests/fixtures/paths/ripgrep.txt` and `flask.txt`, 473 paths)
//! replicated under generated prefixes — `svcNNN/`, `svcNNN/third_party/<project>/` and
//! `svcNNN/pkgs/<project>-vK/src/` in turn, ripgrep and flask alternating — until 50,000 files
//! (the last copy cut short). So paths run from `svc000/README.md` (2 components) to 12
//! components, with the real names (`mod.rs`, `__init__.py`, `README.md` many times over).
//!
//! `cargo bench --bench path_fix -- lookup build stream held` runs only the parts named. The
//! numbers and what they mean are in BENCHMARKS.md, "Path rules (issue 15)".
//!
//! Four measurements, in one run:
//!
//! 1. **Lookup**: `Scope::decide` on candidate paths of six classes (existing, misspelled,
//!    miscased, misrooted, backslash-separated, fabricated), each call timed on its own, in
//!    shuffled order over several passes: p50/p99/max per class and overall, and the slowest
//!    candidate of each class. Target: ≤ 50 µs p99 per candidate. Then again (1b) on a second
//!    tree with the same copies under word-named top directories (`billing-api/`, …), since
//!    the `svcNNN` siblings are all within an edit or two of each other.
//! 2. **Index build** (`IndexData::build` on the tree, page cache warm): min/median of several
//!    builds, and the peak of live bytes allocated during one build (instrumented allocator,
//!    peakmem-alloc), plus the bytes the finished index keeps. Target: ≤ 1 s, ≤ 50 MB.
//! 3. **Prose cost per chunk**: the same `/api/chat` NDJSON stream (2,000 lines of one
//!    word-sized token of English prose, no path in it) through a `Rewriter` with (a) a replace
//!    rule and (b) the replace rule plus a path rule on the tree; ns per chunk and the ratio
//!    b/a (median of interleaved rounds). Also the stages alone (`Session::push`, no JSON),
//!    how many lines the rewriter rebuilt, and (c) a stream full of paths, for context, with
//!    its references decided once each for comparison. Target: b ≤ 1.10 × a.
//! 4. **Held back**: the recorded streams of `benches/held_back.rs`
//!    (`tests/fixtures/recorded/*.ndjson`) with that bench's rules, with and without a path
//!    rule: characters held after each line (median/p99/max).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code
#![allow(clippy::print_stdout)] // the report

use std::alloc::System;
use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};
use rawrxd::patch::rewrite::{Format, Rewriter};
use rawrxd::patch::{Compiled, Pipeline};
use rawrxd::paths::index::{IndexData, DEFAULT_FILE_LIMIT};
use rawrxd::paths::{PathFixer, Ref, Verdict};
use rawrxd::rules::{load_dir, parse_file, Endpoint};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Files in the generated tree.
const TREE_FILES: usize = 50_000;
/// Candidates per class, and how many times each is decided (shuffled every pass).
const PER_CLASS: usize = 500;
const PASSES: usize = 10;
/// Index builds timed (after one to warm the page cache).
const BUILDS: usize = 7;
/// Token lines per stream, and interleaved rounds of the streaming comparison.
const STREAM_LINES: usize = 2_000;
const ROUNDS: usize = 41;

const REPLACE_RULE: &str =
    "[[rule]]\nid = \"r\"\nkind = \"replace\"\nfind = \"confidential\"\nreplace = \"[redacted]\"\n";

/// The extra rules of `benches/held_back.rs` (kept the same, so its figures compare).
const HELD_BACK_RULES: &str = include_str!("../tests/fixtures/held_back_rules.toml");

/// Ordinary English prose without a file path in it (the text of measurement 3).
const PROSE: &str = "The meeting ran long, but most of the time went into the question of how \
the team should plan the next release. Everyone agreed that the first version had been too \
ambitious, and that a smaller change, shipped sooner, would teach them more than another month \
of careful design. Some of the older members worried that the customers would notice the rough \
edges, while the newer ones argued that people forgive a plain tool that works far sooner than \
a polished one that arrives late. In the end they chose a middle road: they would keep the \
features that had been tested, leave out the two that still surprised them, and write down \
what they had learned so that nobody would have to argue the same points again in the spring. \
After lunch the conversation turned to hiring, which was harder, because the budget was still \
uncertain and nobody wanted to promise a position that might disappear. The manager suggested \
that they wait until the numbers were final, then move quickly, since good people rarely stay \
on the market for long. It was nearly five when they finished, and the light outside had \
already started to fade over the river.";

/// A deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The temporary tree; removed when dropped.
struct Tree {
    root: PathBuf,
    files: Vec<String>,
    dirs: usize,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn path_list(name: &str) -> Vec<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/paths")
        .join(name);
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// How the top directories of the tree are named.
#[derive(Clone, Copy, PartialEq)]
enum Naming {
    /// `svc000` … `svc211`: siblings one or two edits apart (the main tree).
    Numbered,
    /// `billing-api`, `auth-worker`, …: words (a second tree, for comparison).
    Words,
}

/// The top directory of copy `i`.
fn top_dir(naming: Naming, i: usize) -> String {
    const AREAS: [&str; 16] = [
        "billing",
        "auth",
        "search",
        "media",
        "ledger",
        "notify",
        "profile",
        "report",
        "gateway",
        "catalog",
        "orders",
        "payments",
        "shipping",
        "inventory",
        "pricing",
        "identity",
    ];
    const ROLES: [&str; 14] = [
        "", "-api", "-worker", "-web", "-core", "-jobs", "-admin", "-sync", "-cli", "-proxy",
        "-store", "-feed", "-bot", "-ml",
    ];
    match naming {
        Naming::Numbered => format!("svc{i:03}"),
        Naming::Words => format!(
            "{}{}{}",
            AREAS[i % AREAS.len()],
            ROLES[(i / AREAS.len()) % ROLES.len()],
            if i >= AREAS.len() * ROLES.len() {
                "-2"
            } else {
                ""
            }
        ),
    }
}

/// 50,000 empty files: the two projects' paths, one copy after the other, under prefixes of
/// three shapes.
fn build_tree(naming: Naming) -> Tree {
    let projects = [
        ("ripgrep", path_list("ripgrep.txt")),
        ("flask", path_list("flask.txt")),
    ];
    let tag = match naming {
        Naming::Numbered => "svc",
        Naming::Words => "words",
    };
    let root = std::env::temp_dir().join(format!("rawrxd-path-fix-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let mut files = Vec::with_capacity(TREE_FILES);
    let mut dirs = HashSet::new();
    let mut copy = 0;
    'copies: loop {
        let (project, list) = &projects[copy % 2];
        let top = top_dir(naming, copy);
        let prefix = match copy % 3 {
            0 => format!("{top}/"),
            1 => format!("{top}/third_party/{project}/"),
            _ => format!("{top}/pkgs/{project}-v{}/src/", copy % 5),
        };
        for path in list {
            if files.len() == TREE_FILES {
                break 'copies;
            }
            let rel = format!("{prefix}{path}");
            let full = root.join(&rel);
            let parent = full.parent().unwrap();
            if dirs.insert(parent.to_path_buf()) {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&full, "").unwrap();
            files.push(rel);
        }
        copy += 1;
    }
    // Every directory on the way, for the report.
    let mut all_dirs = HashSet::new();
    for file in &files {
        let mut rest = file.as_str();
        while let Some(i) = rest.rfind('/') {
            rest = &rest[..i];
            if !all_dirs.insert(rest) {
                break;
            }
        }
    }
    let dirs = all_dirs.len();
    Tree { root, files, dirs }
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

// ---------------------------------------------------------------------------------------
// 1. Lookup

const CLASSES: [&str; 6] = [
    "existing",
    "misspelled",
    "miscased",
    "misrooted",
    "backslash",
    "fabricated",
];

/// The stem of a file name (up to its extension).
fn stem(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

/// One or two random edits (substitution, insertion, deletion, swap of neighbours) in
/// `word[..limit]`.
fn misspell(rng: &mut Rng, word: &str, limit: usize) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    let mut limit = limit;
    let edits = 1 + rng.below(2);
    for _ in 0..edits {
        let letter = (b'a' + rng.below(26) as u8) as char;
        let at = rng.below(limit.max(1));
        match rng.below(4) {
            0 => chars[at] = letter,
            1 => {
                chars.insert(at, letter);
                limit += 1;
            }
            2 if limit > 4 => {
                chars.remove(at);
                limit -= 1;
            }
            _ if at + 1 < limit => chars.swap(at, at + 1),
            _ => chars[at] = letter,
        }
    }
    chars.into_iter().collect()
}

/// `PER_CLASS` candidates of `class`, made from the tree's files (none of them existing,
/// except for `existing`).
fn candidates(class: &str, tree: &Tree, rng: &mut Rng) -> Vec<String> {
    let exists: HashSet<&str> = tree.files.iter().map(String::as_str).collect();
    let lower: HashSet<String> = tree.files.iter().map(|f| f.to_lowercase()).collect();
    let names: HashSet<String> = tree
        .files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap().to_lowercase())
        .collect();
    const ADJECTIVES: [&str; 10] = [
        "quantum", "async", "legacy", "shadow", "turbo", "smart", "hyper", "lazy", "secure", "fast",
    ];
    const NOUNS: [&str; 10] = [
        "cache", "pool", "router", "bridge", "engine", "widget", "ledger", "beacon", "oracle",
        "vault",
    ];
    const WRONG_DIRS: [&str; 6] = ["src", "lib", "app", "pkg", "core", "internal"];
    let mut out = Vec::with_capacity(PER_CLASS);
    while out.len() < PER_CLASS {
        let file = rng.pick(&tree.files).clone();
        let parts: Vec<&str> = file.split('/').collect();
        let candidate = match class {
            "existing" => file.clone(),
            "misspelled" => {
                let mut parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
                let last = parts.len() - 1;
                let name_stem = stem(&parts[last]).chars().count();
                if name_stem >= 5 && rng.below(10) < 7 {
                    parts[last] = misspell(rng, &parts[last], name_stem);
                } else {
                    let dirs: Vec<usize> = (0..last)
                        .filter(|&i| parts[i].chars().count() >= 4)
                        .collect();
                    if dirs.is_empty() {
                        continue;
                    }
                    let i = *rng.pick(&dirs);
                    let n = parts[i].chars().count();
                    parts[i] = misspell(rng, &parts[i], n);
                }
                let c = parts.join("/");
                if lower.contains(&c.to_lowercase()) {
                    continue;
                }
                c
            }
            "miscased" => {
                let mut chars: Vec<char> = file.chars().collect();
                let letters: Vec<usize> = (0..chars.len())
                    .filter(|&i| chars[i].is_ascii_alphabetic())
                    .collect();
                for _ in 0..1 + rng.below(3) {
                    let i = *rng.pick(&letters);
                    chars[i] = if chars[i].is_ascii_lowercase() {
                        chars[i].to_ascii_uppercase()
                    } else {
                        chars[i].to_ascii_lowercase()
                    };
                }
                chars.into_iter().collect()
            }
            "misrooted" => match rng.below(3) {
                // A missing leading directory (or two).
                0 => {
                    let drop = 1 + rng.below(2);
                    if parts.len() <= drop + 1 {
                        continue;
                    }
                    parts[drop..].join("/")
                }
                // An extra one.
                1 => format!("{}/{file}", rng.pick(&WRONG_DIRS)),
                // A wrong one.
                _ => {
                    let mut parts: Vec<&str> = parts.clone();
                    if parts.len() < 3 {
                        continue;
                    }
                    let i = rng.below(parts.len() - 1);
                    parts[i] = *rng.pick(&WRONG_DIRS);
                    parts.join("/")
                }
            },
            "backslash" => {
                if !file.contains('/') {
                    continue;
                }
                file.replace('/', "\\")
            }
            "fabricated" => {
                let ext = match file.rsplit('/').next().unwrap().rsplit_once('.') {
                    Some((s, e)) if !s.is_empty() => e.to_string(),
                    _ => continue,
                };
                let name = format!("{}_{}.{ext}", rng.pick(&ADJECTIVES), rng.pick(&NOUNS));
                if names.contains(&name) {
                    continue;
                }
                let dir = &parts[..parts.len() - 1];
                let mut c = dir.join("/");
                if rng.below(3) == 0 {
                    c.push_str(&format!(
                        "/{}{}",
                        rng.pick(&NOUNS),
                        ["s", "_util", "er", "ing"][rng.below(4)]
                    ));
                }
                format!("{c}/{name}").trim_start_matches('/').to_string()
            }
            other => panic!("{other}"),
        };
        if class != "existing" && exists.contains(candidate.as_str()) {
            continue;
        }
        out.push(candidate);
    }
    out
}

fn verdict_kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Keep => "keep",
        Verdict::Fix { .. } => "fix",
        Verdict::Flag { .. } => "flag",
    }
}

fn lookup(tree: &Tree, label: &str) -> Duration {
    println!(
        "== {label}: Scope::decide per candidate (Ref::Prose {{ quoted: true }}, create = false)"
    );
    let fixer = Arc::new(
        PathFixer::open(&[tree.root.display().to_string()], 0.8, true).expect("path fixer"),
    );
    assert_eq!(fixer.indexed_files(), TREE_FILES);
    for warning in fixer.warnings() {
        println!("   warning: {warning}");
    }
    let (scope, _) = fixer.scope(None);
    let mut rng = Rng(0x15_2026_1203);
    let mut all: Vec<(usize, String)> = Vec::new();
    for (c, class) in CLASSES.iter().enumerate() {
        all.extend(
            candidates(class, tree, &mut rng)
                .into_iter()
                .map(|s| (c, s)),
        );
    }
    // What each class exercises: verdicts (and fix classes) of one pass, and an example.
    println!(
        "   candidates per class: {PER_CLASS}, each decided {PASSES} times (shuffled every pass)"
    );
    for (c, class) in CLASSES.iter().enumerate() {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (_, raw) in all.iter().filter(|(k, _)| *k == c) {
            let v = scope.decide(raw, false, Ref::Prose { quoted: true });
            let key = match &v {
                Verdict::Fix { class, .. } => format!("fix:{class}"),
                Verdict::Flag { reason, .. } => {
                    let why = reason.split([':', '(']).next().unwrap_or("").trim();
                    format!("flag:{why}")
                }
                Verdict::Keep => "keep".to_string(),
            };
            *counts.entry(key).or_default() += 1;
        }
        let example = &all.iter().find(|(k, _)| *k == c).unwrap().1;
        let example_verdict = scope.decide(example, false, Ref::Prose { quoted: true });
        println!(
            "   {class:<10} verdicts {counts:?}; e.g. {example:?} -> {} {}",
            verdict_kind(&example_verdict),
            match &example_verdict {
                Verdict::Fix { text, .. } => text.clone(),
                Verdict::Flag { reason, .. } => reason.clone(),
                Verdict::Keep => String::new(),
            }
        );
    }
    // Warm-up pass, then the timed passes.
    for (_, raw) in &all {
        black_box(scope.decide(raw, false, Ref::Prose { quoted: true }));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); CLASSES.len()];
    // Per candidate, for the slowest ones.
    let mut by_candidate: Vec<Vec<Duration>> = vec![Vec::new(); all.len()];
    let mut order: Vec<usize> = (0..all.len()).collect();
    for _ in 0..PASSES {
        rng.shuffle(&mut order);
        for &i in &order {
            let (c, raw) = &all[i];
            let started = Instant::now();
            let verdict = scope.decide(raw, false, Ref::Prose { quoted: true });
            let elapsed = started.elapsed();
            black_box(verdict);
            times[*c].push(elapsed);
            by_candidate[i].push(elapsed);
        }
    }
    println!(
        "   {:<10} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "class", "calls", "p50", "p99", "max", "mean"
    );
    let mut overall = Vec::new();
    let row = |name: &str, t: &mut Vec<Duration>| {
        t.sort();
        let mean = t.iter().sum::<Duration>() / t.len() as u32;
        println!(
            "   {name:<10} {:>7} {:>10} {:>10} {:>10} {:>10}",
            t.len(),
            us(percentile(t, 0.5)),
            us(percentile(t, 0.99)),
            us(*t.last().unwrap()),
            us(mean)
        );
        percentile(t, 0.99)
    };
    for (c, class) in CLASSES.iter().enumerate() {
        overall.extend_from_slice(&times[c]);
        row(class, &mut times[c]);
    }
    let p99 = row("overall", &mut overall);
    // The slowest candidate of each class (by its median over the passes), and its verdict.
    for (c, class) in CLASSES.iter().enumerate() {
        let Some((i, t)) = by_candidate
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| all[*i].0 == c)
            .map(|(i, t)| {
                t.sort();
                (i, percentile(t, 0.5))
            })
            .max_by_key(|(_, t)| *t)
        else {
            continue;
        };
        let raw = &all[i].1;
        let name = raw.rsplit(['/', '\\']).next().unwrap_or("").to_lowercase();
        let same_name = tree
            .files
            .iter()
            .filter(|f| f.rsplit('/').next().unwrap().to_lowercase() == name)
            .count();
        let verdict = scope.decide(raw, false, Ref::Prose { quoted: true });
        println!(
            "   slowest {class}: {} median, {raw:?} ({same_name} files named {name:?}) -> {}",
            us(t),
            match &verdict {
                Verdict::Fix { text, class, .. } => format!("fix ({class}) {text}"),
                Verdict::Flag { reason, .. } => format!("flag: {reason}"),
                Verdict::Keep => "keep".to_string(),
            }
        );
    }
    println!(
        "   target ≤ 50 µs p99 per candidate: overall p99 {} -> {}",
        us(p99),
        if p99 <= Duration::from_micros(50) {
            "MET"
        } else {
            "NOT MET"
        }
    );
    p99
}

// ---------------------------------------------------------------------------------------
// 2. Index build

fn index_build(tree: &Tree) {
    println!("== 2. index build: IndexData::build on the tree");
    // Warm the page cache (and the dentry cache).
    let warm = IndexData::build(&tree.root, DEFAULT_FILE_LIMIT);
    assert_eq!(warm.len(), TREE_FILES);
    drop(warm);
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..BUILDS {
        GLOBAL.reset_peak_memory();
        let started = Instant::now();
        let data = IndexData::build(&tree.root, DEFAULT_FILE_LIMIT);
        let elapsed = started.elapsed();
        peak = peak.max(GLOBAL.get_peak_memory());
        assert_eq!(data.len(), TREE_FILES);
        drop(black_box(data));
        times.push(elapsed);
    }
    times.sort();
    // What the finished index keeps: after a reset the counter starts at 0, dropping the index
    // takes it to minus its size, and one allocation of PROBE bytes (never touched, so never
    // paged in) then peaks at PROBE minus that size.
    let data = IndexData::build(&tree.root, DEFAULT_FILE_LIMIT);
    GLOBAL.reset_peak_memory();
    drop(data);
    const PROBE: usize = 1 << 30;
    let probe: Vec<u8> = Vec::with_capacity(PROBE);
    let retained = PROBE - GLOBAL.get_peak_memory();
    drop(black_box(probe));
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "   {BUILDS} builds after a warm-up: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        times[0].as_secs_f64() * 1e3,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "   peak live bytes during a build: {:.1} MB; kept by the finished index: {:.1} MB ({:.0} B per file)",
        mb(peak),
        mb(retained),
        retained as f64 / TREE_FILES as f64
    );
    // What loading a rule costs: canonicalize, the same build, and the recursive watcher. No
    // other fixer on this root is alive here, so `RootIndex::shared` has nothing to reuse and
    // each open walks and watches the tree anew.
    let mut opens = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let fixer = PathFixer::open(&[tree.root.display().to_string()], 0.8, true).unwrap();
        opens.push(started.elapsed());
        drop(fixer);
    }
    opens.sort();
    println!(
        "   PathFixer::open (build + inotify watch of {} directories): min {:.1} ms, median {:.1} ms",
        tree.dirs + 1,
        opens[0].as_secs_f64() * 1e3,
        percentile(&opens, 0.5).as_secs_f64() * 1e3
    );
    let time_ok = percentile(&times, 0.5) <= Duration::from_secs(1);
    let mem_ok = peak <= 50_000_000;
    println!(
        "   target ≤ 1 s warm: {}; target ≤ 50 MB: {}",
        if time_ok { "MET" } else { "NOT MET" },
        if mem_ok { "MET" } else { "NOT MET" }
    );
}

// ---------------------------------------------------------------------------------------
// 3. Prose cost per chunk

fn compiled(toml: &str, model: &str, endpoint: Endpoint) -> Arc<Compiled> {
    let rules = parse_file(Path::new("bench.toml"), toml).expect("rules");
    Pipeline::new(rules)
        .expect("pipeline")
        .select(model, Some(endpoint))
        .expect("rules apply")
}

fn path_rule(root: &Path) -> String {
    format!(
        "[[rule]]\nid = \"fix-paths\"\nkind = \"path\"\nroots = [{:?}]\n",
        root.display().to_string()
    )
}

/// `text` cut the way a model's tokens come: a word with the space before it, punctuation
/// on its own, and inside a path at each `/` and `.` and every 5 characters.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        let boundary = c == ' '
            || c == '\n'
            || c == '/'
            || c == '\\'
            || c == '`'
            || c.is_ascii_punctuation() && c != '_' && c != '-'
            || current.chars().count() >= 5 && !current.ends_with(' ');
        if boundary && !current.is_empty() && !current.chars().all(|c| c == ' ') {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn prose_tokens() -> Vec<String> {
    let words = tokens(PROSE);
    let mut out = Vec::with_capacity(STREAM_LINES);
    let mut i = 0;
    while out.len() < STREAM_LINES {
        out.push(words[i % words.len()].clone());
        i += 1;
        if i % words.len() == 0 {
            out.push("\n\n".to_string());
        }
    }
    out.truncate(STREAM_LINES);
    out
}

/// A path reference in the text of [`path_tokens`]: where it ends, the path as decided, and
/// whether it is quoted.
struct Reference {
    end: usize,
    raw: String,
    quoted: bool,
}

/// Sentences that name paths of the tree — existing, misspelled, miscased, misrooted,
/// backslashed, fabricated — in backticks, bare and with `:line`; and the references in
/// them.
fn path_tokens(tree: &Tree) -> (Vec<String>, Vec<Reference>) {
    let mut rng = Rng(0xC0FFEE);
    let mut pool = Vec::new();
    for class in CLASSES {
        pool.extend(candidates(class, tree, &mut rng).into_iter().take(50));
    }
    let mut text = String::new();
    let mut refs = Vec::new();
    let mut out = Vec::new();
    while out.len() < STREAM_LINES {
        let (a, b, c) = (rng.pick(&pool), rng.pick(&pool), rng.pick(&pool));
        let line = 1 + rng.below(400);
        text.push_str(&format!("Open `{a}`"));
        refs.push((text.len() - 1, a.clone(), true));
        text.push_str(&format!(" and look at {b}"));
        refs.push((text.len(), b.clone(), false));
        text.push_str(&format!(":{line}, then compare it with \"{c}\""));
        refs.push((text.len() - 1, c.clone(), true));
        text.push_str(". ");
        if rng.below(4) == 0 {
            text.push_str("\n\n");
        }
        out = tokens(&text);
    }
    out.truncate(STREAM_LINES);
    let length: usize = out.iter().map(String::len).sum();
    let refs = refs
        .into_iter()
        .filter(|(end, _, _)| *end <= length)
        .map(|(end, raw, quoted)| Reference { end, raw, quoted })
        .collect();
    (out, refs)
}

fn ndjson(tokens: &[String]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| {
            let mut line = serde_json::to_vec(&serde_json::json!({
                "model": "m",
                "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": t},
                "done": false
            }))
            .unwrap();
            line.push(b'\n');
            line
        })
        .collect();
    lines.push(
        b"{\"model\":\"m\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\"}\n"
            .to_vec(),
    );
    lines
}

/// The message text of an NDJSON `/api/chat` stream.
fn content(ndjson: &[u8]) -> String {
    ndjson
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            v["message"]["content"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

/// One stream through a fresh rewriter: (time, output, path hits).
fn stream(compiled: &Arc<Compiled>, lines: &[Vec<u8>]) -> (Duration, Vec<u8>, usize) {
    let started = Instant::now();
    let mut rewriter = Rewriter::new(compiled.clone(), Endpoint::Chat, Format::Ndjson);
    let mut out = Vec::with_capacity(lines.len() * 128);
    for line in lines {
        out.extend(rewriter.feed(line));
    }
    out.extend(rewriter.finish());
    let elapsed = started.elapsed();
    let hits = rewriter
        .take_hits()
        .iter()
        .filter(|h| h.path.is_some())
        .count();
    (elapsed, out, hits)
}

/// Streams `lines` again and again for 5 s: (streams, time).
#[inline(never)]
fn profile(compiled: &Arc<Compiled>, lines: &[Vec<u8>]) -> (u32, Duration) {
    let started = Instant::now();
    let mut runs = 0u32;
    while started.elapsed() < Duration::from_secs(5) {
        black_box(stream(compiled, lines));
        runs += 1;
    }
    (runs, started.elapsed())
}

/// The same text through a session alone (no JSON): the stages' own cost.
fn session(compiled: &Arc<Compiled>, tokens: &[String]) -> (Duration, String) {
    let started = Instant::now();
    let mut session = compiled.session();
    let mut out = String::with_capacity(tokens.len() * 8);
    for token in tokens {
        out.push_str(&session.push(token));
    }
    out.push_str(&session.finish());
    (started.elapsed(), out)
}

fn per_chunk(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9 / STREAM_LINES as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn streaming(tree: &Tree) -> f64 {
    println!("== 3. cost per chunk: /api/chat NDJSON, {STREAM_LINES} token lines, Rewriter::feed per line");
    let replace = compiled(REPLACE_RULE, "m", Endpoint::Chat);
    let with_path = compiled(
        &format!("{REPLACE_RULE}\n{}", path_rule(&tree.root)),
        "m",
        Endpoint::Chat,
    );
    let prose = prose_tokens();
    let (paths, refs) = path_tokens(tree);
    assert!(refs.iter().all(|r| r.end <= paths.concat().len()));
    let prose_lines = ndjson(&prose);
    let path_lines = ndjson(&paths);
    let prose_text: String = prose.concat();
    assert!(!prose_text.contains('/') && !prose_text.contains('\\'));
    println!(
        "   prose: {} chars, e.g. {:?}; paths: {} chars, e.g. {:?}",
        prose_text.chars().count(),
        &prose[..8],
        paths.concat().chars().count(),
        &paths[..12]
    );
    // The path rule must leave prose as it is (the text; it may cut it into other chunks).
    let (_, out_a, _) = stream(&replace, &prose_lines);
    let (_, out_b, hits_b) = stream(&with_path, &prose_lines);
    assert!(
        content(&out_a) == prose_text,
        "the replace rule changed prose"
    );
    assert!(content(&out_b) == prose_text, "the path rule changed prose");
    assert_eq!(hits_b, 0);
    let (_, _, hits_c) = stream(&with_path, &path_lines);
    println!("   the path rule left the prose unchanged (0 hits); on the path text it fixed or flagged {hits_c} of {} references", refs.len());
    // Lines the rewriter had to rebuild (parse and serialize again) rather than pass on as
    // they came.
    let rebuilt = |out: &[u8]| {
        let out: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
        out.iter()
            .zip(&prose_lines)
            .filter(|(o, i)| **o != i.as_slice())
            .count()
            + out.len().abs_diff(prose_lines.len())
    };
    println!(
        "   prose lines not passed through as they came: (a) {} of {}, (b) {} of {}",
        rebuilt(&out_a),
        prose_lines.len(),
        rebuilt(&out_b),
        prose_lines.len()
    );

    // Interleaved rounds, the order rotated each round.
    type Case<'a> = (&'a str, &'a Arc<Compiled>, &'a [Vec<u8>], &'a [String]);
    let cases: [Case; 4] = [
        ("(a) prose, replace rule", &replace, &prose_lines, &prose),
        (
            "(b) prose, replace + path rule",
            &with_path,
            &prose_lines,
            &prose,
        ),
        ("(c) paths, replace rule", &replace, &path_lines, &paths),
        (
            "(c) paths, replace + path rule",
            &with_path,
            &path_lines,
            &paths,
        ),
    ];
    for (_, c, lines, toks) in &cases {
        black_box(stream(c, lines));
        black_box(session(c, toks));
    }
    // `PATH_FIX_PROFILE=a` (or `b`) streams that prose case alone for 5 s and stops, for
    // `perf record` (or `valgrind --tool=callgrind --toggle-collect='path_fix::profile*'`).
    if let Ok(case) = std::env::var("PATH_FIX_PROFILE") {
        let compiled = if case == "b" { &with_path } else { &replace };
        let (runs, took) = profile(compiled, &prose_lines);
        println!(
            "   profiled ({case}): {runs} streams, {:.0} ns per chunk",
            per_chunk(took / runs)
        );
        return 0.0;
    }
    let mut rewriter_ns = vec![Vec::new(); cases.len()];
    let mut session_ns = vec![Vec::new(); cases.len()];
    let mut ratio = Vec::new();
    let mut session_ratio = Vec::new();
    // The path text's references, each decided once (as `Scope::decide` calls), for
    // comparison with the path stage's cost on (c): how often a reference is decided again.
    let fixer = Arc::new(
        PathFixer::open(&[tree.root.display().to_string()], 0.8, true).expect("path fixer"),
    );
    let (scope, _) = fixer.scope(None);
    let mut once = Vec::new();
    let mut repeat = Vec::new();
    for round in 0..ROUNDS {
        let mut this = [0.0; 4];
        let mut this_session = [0.0; 4];
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let (_, c, lines, toks) = cases[i];
            this[i] = per_chunk(stream(c, lines).0);
            this_session[i] = per_chunk(session(c, toks).0);
        }
        for i in 0..cases.len() {
            rewriter_ns[i].push(this[i]);
            session_ns[i].push(this_session[i]);
        }
        ratio.push(this[1] / this[0]);
        session_ratio.push(this_session[1] / this_session[0]);
        let started = Instant::now();
        for r in &refs {
            black_box(scope.decide(&r.raw, false, Ref::Prose { quoted: r.quoted }));
        }
        let decided = per_chunk(started.elapsed());
        once.push(decided);
        repeat.push((this_session[3] - this_session[2]) / decided);
    }
    println!(
        "   {:<32} {:>16} {:>16}",
        "stream", "Rewriter ns/chunk", "Session ns/chunk"
    );
    for (i, (name, ..)) in cases.iter().enumerate() {
        println!(
            "   {name:<32} {:>16.0} {:>16.0}",
            median(rewriter_ns[i].clone()),
            median(session_ns[i].clone())
        );
    }
    println!(
        "   (c) for comparison: the {} references of the path text, each decided once = {:.0} ns per chunk; \
         (c) Session with minus without the path rule = {:.1}x that",
        refs.len(),
        median(once.clone()),
        median(repeat)
    );
    let ratio = median(ratio);
    let session_ratio = median(session_ratio);
    println!(
        "   (b)/(a), median of {ROUNDS} paired rounds: Rewriter {ratio:.3}, Session {session_ratio:.3}"
    );
    // The least disturbed round of each case (a VM's neighbours only ever add time).
    let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "   (b)/(a), fastest round of each: Rewriter {:.3} ({:.0} / {:.0} ns), Session {:.3}",
        fastest(&rewriter_ns[1]) / fastest(&rewriter_ns[0]),
        fastest(&rewriter_ns[1]),
        fastest(&rewriter_ns[0]),
        fastest(&session_ns[1]) / fastest(&session_ns[0]),
    );
    println!(
        "   target ≤ 1.10 (≤ 10% more per chunk, whole Rewriter): {}",
        if ratio <= 1.10 { "MET" } else { "NOT MET" }
    );
    ratio
}

// ---------------------------------------------------------------------------------------
// 4. Held back

struct Held {
    after_line: Vec<usize>,
    lines: usize,
    held_lines: usize,
    path_hits: usize,
}

fn replay(compiled: &Arc<Compiled>, recordings: &[String]) -> Held {
    let mut held = Held {
        after_line: Vec::new(),
        lines: 0,
        held_lines: 0,
        path_hits: 0,
    };
    for text in recordings {
        let mut rewriter = Rewriter::new(compiled.clone(), Endpoint::Generate, Format::Ndjson);
        for line in text.split_inclusive('\n') {
            rewriter.feed(line.as_bytes());
            let n = rewriter.held_chars();
            held.after_line.push(n);
            held.lines += 1;
            if n > 0 {
                held.held_lines += 1;
            }
        }
        rewriter.finish();
        held.path_hits += rewriter
            .take_hits()
            .iter()
            .filter(|h| h.path.is_some())
            .count();
    }
    held.after_line.sort_unstable();
    held
}

fn held_back(tree: &Tree) {
    println!("== 4. characters held back after each line, recorded streams");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/fixtures/recorded");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no recordings in {}", dir.display());
    let recordings: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let existing = {
        let mut rules = load_dir(&root.join("rules")).expect("default pack");
        rules.extend(parse_file(Path::new("extra.toml"), HELD_BACK_RULES).expect("extra rules"));
        rules
    };
    let set = |path_root: Option<&Path>, others: bool| {
        let mut rules = if others { existing.clone() } else { Vec::new() };
        if let Some(r) = path_root {
            rules.extend(parse_file(Path::new("path.toml"), &path_rule(r)).unwrap());
        }
        Pipeline::new(rules)
            .expect("pipeline")
            .select("gemma3:270m", Some(Endpoint::Generate))
            .expect("rules apply")
    };
    let runs = [
        ("held_back's rules (5 pack + 5 extra)", set(None, true)),
        (
            "  + path rule (root: the tree)",
            set(Some(&tree.root), true),
        ),
        (
            "  + path rule (root: this repository)",
            set(Some(root), true),
        ),
        (
            "path rule alone (root: the tree)",
            set(Some(&tree.root), false),
        ),
    ];
    println!(
        "   {} recordings, {} lines",
        recordings.len(),
        recordings.iter().map(|r| r.lines().count()).sum::<usize>()
    );
    println!(
        "   {:<40} {:>6} {:>6} {:>6} {:>18} {:>9}",
        "rules", "median", "p99", "max", "lines with held", "path hits"
    );
    for (name, compiled) in &runs {
        let h = replay(compiled, &recordings);
        println!(
            "   {name:<40} {:>6} {:>6} {:>6} {:>8} ({:>5.1}%) {:>9}",
            percentile(&h.after_line, 0.5),
            percentile(&h.after_line, 0.99),
            h.after_line.last().copied().unwrap_or(0),
            h.held_lines,
            100.0 * h.held_lines as f64 / h.lines.max(1) as f64,
            h.path_hits
        );
    }
}

fn main() {
    // `cargo bench --bench path_fix -- lookup build stream held` runs the named parts only.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    let started = Instant::now();
    let tree = build_tree(Naming::Numbered);
    let deepest = tree
        .files
        .iter()
        .map(|f| f.split('/').count())
        .max()
        .unwrap();
    let shallowest = tree
        .files
        .iter()
        .map(|f| f.split('/').count())
        .min()
        .unwrap();
    println!(
        "path_fix: tree {} — {} files, {} directories, {shallowest} to {deepest} components; made in {:.1} s",
        tree.root.display(),
        tree.files.len(),
        tree.dirs,
        started.elapsed().as_secs_f64()
    );
    if run("lookup") {
        lookup(&tree, "1. lookup, tree of svcNNN/ copies");
    }
    if run("build") {
        index_build(&tree);
    }
    if run("stream") {
        streaming(&tree);
    }
    if run("held") {
        held_back(&tree);
    }
    drop(tree);
    if run("lookup") {
        // The same copies under word-named top directories: how much of the lookup cost is
        // the numbered siblings, all within two edits of each other.
        let started = Instant::now();
        let words = build_tree(Naming::Words);
        println!(
            "path_fix: second tree {} — {} files, {} directories; made in {:.1} s",
            words.root.display(),
            words.files.len(),
            words.dirs,
            started.elapsed().as_secs_f64()
        );
        lookup(
            &words,
            "1b. lookup, the same copies under word-named top directories",
        );
    }
}
