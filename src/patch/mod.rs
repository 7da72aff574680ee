//! The response-side rule pipeline: compiled matchers applied to model text, one-shot or as a
//! stream of chunks, with identical results for every way of splitting the text.
//!
//! A [`Pipeline`] is built (fallibly, off the request path) from validated rules. A request
//! asks it for the [`Compiled`] stages that apply to its model and endpoint (cached per set of
//! applicable rules), and opens one [`Session`] per text field it patches.
//!
//! **Both caches are bounded, whatever clients send.** The model name comes from the request
//! body, so a client controls it: the (model, endpoint) memo keeps at most
//! [`MAX_REMEMBERED_REQUESTS`] entries and only names up to [`MAX_REMEMBERED_MODEL_LEN`] bytes
//! (longer ones are matched against the globs every time), and the compiled stages are kept
//! for at most [`MAX_COMPILED_SETS`] distinct sets of applicable rules. A full cache starts
//! over (requests keep the `Arc`s they hold).
//!
//! Stages run in a fixed order, each on the previous one's output:
//! 1. `redact` rules (file order) — secrets are masked before anything else looks at the text;
//! 2. `block` rules (literals together, then patterns in file order);
//! 3. `replace` rules, all literals in one aho-corasick automaton per case-sensitivity;
//! 4. `regex` rules (file order).
//!
//! Shadow rules run in the same place but only report what they would have done.
//!
//! [`rewrite`] is the re-framer in front of the pipeline: it finds the model's text in NDJSON
//! lines, SSE events and whole JSON bodies and writes it back patched.
//!
//! May use: `rules`. Used by `audit`, `live`, `proxy`, `app`.

mod delay;
pub mod matcher;
mod path;
pub mod rewrite;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::paths::tools::fix_arguments;
use crate::paths::{PathFixer, Scope, Verdict};
use crate::rules::{Action, Endpoint, Kind, Mode, Rule, RuleError};
use matcher::{CompileError, Literal, LiteralMatcher, Matcher, RegexMatcher, Rewrite};
use path::PathMatcher;
use stream::{Decided, Effect, StageStream};

/// Per-rule counters, shared by every request using the pipeline.
#[derive(Debug, Default)]
pub struct RuleCounters {
    /// Matches decided (enforced or shadowed).
    pub hits: AtomicU64,
    /// Matches that changed the output.
    pub applied: AtomicU64,
    /// Matches of shadow rules (output unchanged).
    pub shadowed: AtomicU64,
}

/// The rules a pipeline was built from, with their counters.
#[derive(Debug, Default)]
pub struct RuleTable {
    pub rules: Vec<Rule>,
    /// Per rule, in `rules` order; shared with the [`CounterRegistry`] the pipeline was built
    /// with, so a rule's counts survive rebuilds.
    pub counters: Vec<Arc<RuleCounters>>,
}

/// Counters by rule id that outlive any one pipeline: each rebuild picks up the counters of
/// the rules it keeps.
#[derive(Debug, Default)]
pub struct CounterRegistry {
    by_id: Mutex<HashMap<String, Arc<RuleCounters>>>,
}

impl CounterRegistry {
    /// The counters of rule `id`, created on first use.
    pub fn get(&self, id: &str) -> Arc<RuleCounters> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        by_id.entry(id.to_string()).or_default().clone()
    }

    /// Every rule id seen so far with its (hits, applied, shadowed), sorted by id.
    pub fn snapshot(&self) -> Vec<(String, u64, u64, u64)> {
        let by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = by_id
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    c.hits.load(Ordering::Relaxed),
                    c.applied.load(Ordering::Relaxed),
                    c.shadowed.load(Ordering::Relaxed),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// One correction, for the audit log and stats.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub rule_id: String,
    pub kind: Kind,
    pub detected: String,
    pub corrected: String,
    pub shadow: bool,
    /// Path rules: how sure the fix is, which class of mistake, and whether it is only
    /// flagged (`fabricated_path`: text unchanged).
    pub path: Option<PathNote>,
}

/// What a path rule says about one reference, beyond its text.
#[derive(Debug, Clone, PartialEq)]
pub struct PathNote {
    pub confidence: f64,
    /// The class of the fix (`case`, `typo`, …) or why it is flagged (with the nearest
    /// candidates).
    pub reasoning: String,
    pub flagged: bool,
}

/// What a request brings that rules may use: the workspace (`x-rawrxd-workspace`).
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Canonical (see [`Context::for_workspace`]); path rules refuse anything else.
    pub workspace: Option<String>,
}

impl Context {
    /// The context of a request naming `workspace`: canonicalized here, once per request
    /// (symlinks and `..` resolved before any rule compares it with its roots). A directory
    /// that does not resolve is kept as written, and so refused by every path rule unless it
    /// is already a plain absolute path inside a root.
    pub fn for_workspace(workspace: Option<String>) -> Context {
        let workspace = workspace.map(|raw| {
            std::path::Path::new(&raw)
                .canonicalize()
                .ok()
                .and_then(|p| p.to_str().map(str::to_string))
                .unwrap_or(raw)
        });
        Context { workspace }
    }
}

enum StageMatcher {
    Shared(Arc<dyn Matcher>),
    /// A path rule: its matcher is made per request, for the request's workspace.
    Path(Arc<PathFixer>, usize),
}

struct Stage {
    matcher: StageMatcher,
    effect: Effect,
    shadow: bool,
}

/// The stages for one set of applicable rules.
pub struct Compiled {
    table: Arc<RuleTable>,
    stages: Vec<Stage>,
}

/// Every response-side rule, compiled.
pub struct Pipeline {
    table: Arc<RuleTable>,
    /// Per rule index: its path fixer (indexed roots), for `path` rules.
    fixers: Vec<Option<Arc<PathFixer>>>,
    /// Per rule index: its regex matcher, for `regex`, `redact` and pattern `block` rules.
    regexes: Vec<Option<Arc<RegexMatcher>>>,
    cache: Mutex<HashMap<Vec<bool>, Arc<Compiled>>>,
    /// (model, endpoint) → its stages: matching every rule's globs on each request would cost
    /// more than the patching itself with thousands of rules.
    by_request: Mutex<HashMap<RequestKey, Option<Arc<Compiled>>>>,
}

/// A request's model name and endpoint.
type RequestKey = (String, Option<Endpoint>);

/// Distinct (model, endpoint) pairs remembered before the memo starts over.
pub const MAX_REMEMBERED_REQUESTS: usize = 1024;
/// Longest model name (bytes) whose selection is remembered; no real model name comes close.
pub const MAX_REMEMBERED_MODEL_LEN: usize = 256;
/// Distinct sets of applicable rules kept compiled before that cache starts over (model globs
/// can split the rules into many sets; each set's automata can take megabytes).
pub const MAX_COMPILED_SETS: usize = 64;

fn is_response_side(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Replace | Kind::Regex | Kind::Redact | Kind::Block | Kind::Path
    )
}

impl Pipeline {
    /// A pipeline without rules.
    pub fn empty() -> Self {
        Pipeline {
            table: Arc::new(RuleTable::default()),
            fixers: Vec::new(),
            regexes: Vec::new(),
            cache: Mutex::new(HashMap::new()),
            by_request: Mutex::new(HashMap::new()),
        }
    }

    /// Compiles every pattern now, so a bad one is reported before anything goes live.
    pub fn new(rules: Vec<Rule>) -> Result<Self, Vec<RuleError>> {
        Self::with_counters(rules, &CounterRegistry::default())
    }

    /// As [`Pipeline::new`], counting each rule's hits in `registry` (by rule id).
    pub fn with_counters(
        rules: Vec<Rule>,
        registry: &CounterRegistry,
    ) -> Result<Self, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut regexes = Vec::with_capacity(rules.len());
        let mut fixers = Vec::with_capacity(rules.len());
        for rule in &rules {
            let fixer = match &rule.action {
                Action::Path {
                    roots,
                    min_confidence,
                    fix,
                } if rule.enabled => match PathFixer::open(roots, *min_confidence, *fix) {
                    Ok(fixer) => Some(Arc::new(fixer)),
                    Err(message) => {
                        errors.push(RuleError {
                            file: rule.source.clone(),
                            line: None,
                            rule_id: Some(rule.id.clone()),
                            field: Some("roots".into()),
                            message,
                        });
                        None
                    }
                },
                _ => None,
            };
            fixers.push(fixer);
        }
        for (index, rule) in rules.iter().enumerate() {
            let built = match &rule.action {
                Action::Regex {
                    pattern,
                    replace,
                    max_len,
                } => Some(RegexMatcher::new(
                    pattern,
                    *max_len,
                    index,
                    Rewrite::Template(replace.clone()),
                )),
                Action::Redact {
                    detector,
                    pattern,
                    mask,
                    max_len,
                } => {
                    let pattern = match (detector, pattern) {
                        (Some(detector), _) => detector.pattern(),
                        (None, Some(pattern)) => pattern.as_str(),
                        (None, None) => "",
                    };
                    Some(RegexMatcher::new(
                        pattern,
                        *max_len,
                        index,
                        Rewrite::Fixed(mask.clone()),
                    ))
                }
                Action::Block {
                    pattern: Some(pattern),
                    max_len,
                    ..
                } => Some(RegexMatcher::new(
                    pattern,
                    *max_len,
                    index,
                    Rewrite::Fixed(String::new()),
                )),
                _ => None,
            };
            match built.transpose() {
                Ok(matcher) => regexes.push(matcher.map(Arc::new)),
                Err(CompileError(message)) => {
                    errors.push(RuleError {
                        file: rule.source.clone(),
                        line: None,
                        rule_id: Some(rule.id.clone()),
                        field: Some("pattern".into()),
                        message,
                    });
                    regexes.push(None);
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let counters = rules.iter().map(|rule| registry.get(&rule.id)).collect();
        let pipeline = Pipeline {
            table: Arc::new(RuleTable { rules, counters }),
            fixers,
            regexes,
            cache: Mutex::new(HashMap::new()),
            by_request: Mutex::new(HashMap::new()),
        };
        // Build the set where every rule applies, to surface automaton errors now.
        let all: Vec<bool> = pipeline.table.rules.iter().map(|r| r.enabled).collect();
        pipeline.compile(&all).map_err(|CompileError(message)| {
            vec![RuleError {
                file: "rules".into(),
                line: None,
                rule_id: None,
                field: None,
                message,
            }]
        })?;
        Ok(pipeline)
    }

    /// True when no enabled response-side rule exists (nothing to patch, for any request).
    pub fn is_empty(&self) -> bool {
        !self
            .table
            .rules
            .iter()
            .any(|r| r.enabled && is_response_side(r.kind()))
    }

    pub fn table(&self) -> &Arc<RuleTable> {
        &self.table
    }

    /// Each enabled path rule's index: (rule id, roots, files indexed, warnings).
    pub fn path_indexes(&self) -> Vec<(String, Vec<String>, usize, Vec<String>)> {
        self.fixers
            .iter()
            .zip(&self.table.rules)
            .filter_map(|(fixer, rule)| {
                let fixer = fixer.as_ref()?;
                Some((
                    rule.id.clone(),
                    fixer.roots(),
                    fixer.indexed_files(),
                    fixer.warnings(),
                ))
            })
            .collect()
    }

    /// The compiled stages for a request, or `None` when no response-side rule applies.
    pub fn select(&self, model: &str, endpoint: Option<Endpoint>) -> Option<Arc<Compiled>> {
        if model.len() > MAX_REMEMBERED_MODEL_LEN {
            return self.select_uncached(model, endpoint);
        }
        let key = (model.to_string(), endpoint);
        if let Some(known) = self
            .by_request
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return known;
        }
        let selected = self.select_uncached(model, endpoint);
        if let Ok(mut memo) = self.by_request.lock() {
            if memo.len() >= MAX_REMEMBERED_REQUESTS {
                memo.clear();
            }
            memo.insert(key, selected.clone());
        }
        selected
    }

    fn select_uncached(&self, model: &str, endpoint: Option<Endpoint>) -> Option<Arc<Compiled>> {
        let active: Vec<bool> = self
            .table
            .rules
            .iter()
            .map(|r| is_response_side(r.kind()) && r.applies_to(model, endpoint))
            .collect();
        if !active.iter().any(|&a| a) {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(compiled) = cache.get(&active) {
            return Some(compiled.clone());
        }
        match self.compile(&active) {
            Ok(compiled) => {
                let compiled = Arc::new(compiled);
                if cache.len() >= MAX_COMPILED_SETS {
                    cache.clear();
                }
                cache.insert(active, compiled.clone());
                Some(compiled)
            }
            Err(error) => {
                tracing::error!("rules could not be compiled for model {model:?}: {error}");
                None
            }
        }
    }

    fn compile(&self, active: &[bool]) -> Result<Compiled, CompileError> {
        let rules = &self.table.rules;
        let on = |i: usize| active.get(i).copied().unwrap_or(false);
        let shadow = |i: usize| rules[i].mode == Mode::Shadow;
        let mut stages = Vec::new();
        let regex_stages = |kind: Kind, effect: Effect, stages: &mut Vec<Stage>| {
            for (i, rule) in rules.iter().enumerate() {
                if on(i) && rule.kind() == kind {
                    if let Some(matcher) = &self.regexes[i] {
                        stages.push(Stage {
                            matcher: StageMatcher::Shared(matcher.clone()),
                            effect,
                            shadow: shadow(i),
                        });
                    }
                }
            }
        };
        regex_stages(Kind::Redact, Effect::Rewrite, &mut stages);
        // Literal groups: (case_insensitive, shadow) → literals.
        for (kind, effect) in [
            (Kind::Block, Effect::Block),
            (Kind::Replace, Effect::Rewrite),
        ] {
            let mut groups: Vec<((bool, bool), Vec<Literal>)> = Vec::new();
            for (i, rule) in rules.iter().enumerate() {
                if !on(i) {
                    continue;
                }
                let (find, replace, case_insensitive, whole_word) = match &rule.action {
                    Action::Replace {
                        find,
                        replace,
                        case_insensitive,
                        whole_word,
                    } if kind == Kind::Replace => {
                        (find, replace.clone(), *case_insensitive, *whole_word)
                    }
                    Action::Block {
                        find: Some(find),
                        case_insensitive,
                        ..
                    } if kind == Kind::Block => (find, String::new(), *case_insensitive, false),
                    _ => continue,
                };
                let key = (case_insensitive, shadow(i));
                let literal = Literal {
                    find: find.clone(),
                    replace,
                    whole_word,
                    rule: i,
                };
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, group)) => group.push(literal),
                    None => groups.push((key, vec![literal])),
                }
            }
            for ((case_insensitive, shadow), literals) in groups {
                stages.push(Stage {
                    matcher: StageMatcher::Shared(Arc::new(LiteralMatcher::new(
                        &literals,
                        case_insensitive,
                    )?)),
                    effect,
                    shadow,
                });
            }
            if kind == Kind::Block {
                regex_stages(Kind::Block, Effect::Block, &mut stages);
            }
        }
        regex_stages(Kind::Regex, Effect::Rewrite, &mut stages);
        for (i, fixer) in self.fixers.iter().enumerate() {
            if let (true, Some(fixer)) = (on(i), fixer) {
                stages.push(Stage {
                    matcher: StageMatcher::Path(fixer.clone(), i),
                    effect: Effect::Rewrite,
                    shadow: shadow(i),
                });
            }
        }
        Ok(Compiled {
            table: self.table.clone(),
            stages,
        })
    }
}

impl Compiled {
    /// A fresh streaming session (one per text field of a response), without request context.
    pub fn session(self: &Arc<Self>) -> Session {
        self.session_in(&Context::default())
    }

    /// A fresh streaming session for a request with `context`.
    pub fn session_in(self: &Arc<Self>, context: &Context) -> Session {
        Session {
            stages: self
                .stages
                .iter()
                .map(|s| {
                    let matcher: Arc<dyn Matcher> = match &s.matcher {
                        StageMatcher::Shared(m) => m.clone(),
                        StageMatcher::Path(fixer, rule) => {
                            let (scope, _) = fixer.scope(context.workspace.as_deref());
                            Arc::new(PathMatcher::new(scope, *rule))
                        }
                    };
                    StageStream::new(matcher, s.effect, s.shadow)
                })
                .collect(),
            compiled: self.clone(),
            hits: Vec::new(),
            blocked: None,
            done: false,
            spare_in: String::new(),
            spare_out: String::new(),
            decided: Vec::new(),
        }
    }

    /// Whether every path rule honours `workspace` (it is one of its roots or inside one).
    pub fn honours_workspace(&self, workspace: &str) -> bool {
        self.stages.iter().all(|s| match &s.matcher {
            StageMatcher::Path(fixer, _) => fixer.scope(Some(workspace)).1,
            StageMatcher::Shared(_) => true,
        })
    }

    /// Whether a path rule is among the stages (tool calls need looking at).
    pub fn has_path_rules(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s.matcher, StageMatcher::Path(..)))
    }

    /// The path rules, scoped to a request, for tool-call arguments.
    pub fn tool_fixer(self: &Arc<Self>, context: &Context) -> ToolFixer {
        let scopes = self
            .stages
            .iter()
            .filter_map(|s| match &s.matcher {
                StageMatcher::Path(fixer, rule) => {
                    Some((fixer.scope(context.workspace.as_deref()).0, *rule, s.shadow))
                }
                StageMatcher::Shared(_) => None,
            })
            .collect();
        ToolFixer {
            compiled: self.clone(),
            scopes,
        }
    }

    /// Applies the rules to a whole text at once.
    pub fn apply(self: &Arc<Self>, text: &str) -> Patched {
        self.apply_in(text, &Context::default())
    }

    /// Applies the rules to a whole text at once, for a request with `context`.
    pub fn apply_in(self: &Arc<Self>, text: &str, context: &Context) -> Patched {
        let mut session = self.session_in(context);
        let mut out = session.push(text);
        out.push_str(&session.finish());
        Patched {
            text: out,
            blocked: session.blocked.clone(),
            hits: session.take_hits(),
        }
    }
}

/// The result of [`Compiled::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Patched {
    pub text: String,
    /// The block message, when a block rule cut the text.
    pub blocked: Option<String>,
    pub hits: Vec<Hit>,
}

/// The rules applied to one stream of text.
pub struct Session {
    compiled: Arc<Compiled>,
    stages: Vec<StageStream>,
    hits: Vec<Hit>,
    blocked: Option<String>,
    done: bool,
    spare_in: String,
    spare_out: String,
    decided: Vec<Decided>,
}

impl Session {
    /// Feeds a chunk; returns the text that can be released now (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        self.run(chunk, false)
    }

    /// The stream is over: returns everything still held, patched.
    pub fn finish(&mut self) -> String {
        self.run("", true)
    }

    /// The block message, once a block rule has cut the stream; later input is dropped.
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// True once the stream is finished or blocked.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes currently held back across all stages.
    pub fn held(&self) -> usize {
        self.stages.iter().map(StageStream::held).sum()
    }

    /// Characters currently held back across all stages.
    pub fn held_chars(&self) -> usize {
        self.stages.iter().map(StageStream::held_chars).sum()
    }

    /// Corrections decided since the last call.
    pub fn take_hits(&mut self) -> Vec<Hit> {
        std::mem::take(&mut self.hits)
    }

    fn run(&mut self, chunk: &str, eof: bool) -> String {
        if self.done {
            return String::new();
        }
        // Two buffers handed from stage to stage, reused across calls: no allocation per
        // stage per chunk.
        let mut input = std::mem::take(&mut self.spare_in);
        let mut output = std::mem::take(&mut self.spare_out);
        input.clear();
        input.push_str(chunk);
        let mut decided = std::mem::take(&mut self.decided);
        let mut blocked = None;
        for i in 0..self.stages.len() {
            output.clear();
            let stage = &mut self.stages[i];
            stage.push(&input, &mut output, &mut decided);
            if eof || blocked.is_some() {
                stage.finish(&mut output, &mut decided);
            }
            let blocked_here = stage.blocked();
            self.record(&mut decided, i);
            // A block releases what downstream stages hold, then its message. A downstream
            // block on that text cuts it earlier, so the last one's message wins.
            if blocked_here.is_some() {
                blocked = blocked_here;
            }
            std::mem::swap(&mut input, &mut output);
        }
        self.decided = decided;
        let mut result = String::with_capacity(input.len());
        result.push_str(&input);
        self.spare_in = input;
        self.spare_out = output;
        if let Some(rule) = blocked {
            let message = match &self.compiled.table.rules[rule].action {
                Action::Block { message, .. } => message.clone(),
                _ => String::new(),
            };
            result.push_str(&message);
            self.blocked = Some(message);
            self.done = true;
        } else if eof {
            self.done = true;
        }
        result
    }

    fn record(&mut self, decided: &mut Vec<Decided>, stage: usize) {
        if decided.is_empty() {
            return;
        }
        let shadow = self.compiled.stages[stage].shadow;
        for d in decided.drain(..) {
            let table = &self.compiled.table;
            count(&table.counters[d.rule], shadow, d.path.as_ref());
            let rule = &table.rules[d.rule];
            self.hits.push(Hit {
                rule_id: rule.id.clone(),
                kind: rule.kind(),
                detected: d.detected,
                corrected: d.corrected,
                shadow,
                path: d.path,
            });
        }
    }
}

/// Counts one decided match: a shadowed one, an applied one, or (a flagged path) neither.
fn count(counters: &RuleCounters, shadow: bool, path: Option<&PathNote>) {
    counters.hits.fetch_add(1, Ordering::Relaxed);
    if shadow {
        counters.shadowed.fetch_add(1, Ordering::Relaxed);
    } else if !path.is_some_and(|p| p.flagged) {
        counters.applied.fetch_add(1, Ordering::Relaxed);
    }
}

/// The path rules of one request, for tool-call arguments.
pub struct ToolFixer {
    compiled: Arc<Compiled>,
    /// (scope, rule index, shadow) per path rule, in stage order.
    scopes: Vec<(Scope, usize, bool)>,
}

impl ToolFixer {
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Fixes the paths in one tool call's arguments in place; returns the corrections.
    pub fn fix(
        &self,
        tool: &str,
        arguments: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Vec<Hit> {
        let mut hits = Vec::new();
        for (scope, rule, shadow) in &self.scopes {
            let table = &self.compiled.table;
            let rule_def = &table.rules[*rule];
            for finding in fix_arguments(scope, tool, arguments, !shadow) {
                let (corrected, note) = match finding.verdict {
                    Verdict::Fix {
                        text,
                        confidence,
                        class,
                    } => (
                        text,
                        PathNote {
                            confidence,
                            reasoning: class.to_string(),
                            flagged: false,
                        },
                    ),
                    Verdict::Flag { confidence, reason } => (
                        finding.detected.clone(),
                        PathNote {
                            confidence,
                            reasoning: reason,
                            flagged: true,
                        },
                    ),
                    Verdict::Keep => continue,
                };
                count(&table.counters[*rule], *shadow, Some(&note));
                hits.push(Hit {
                    rule_id: rule_def.id.clone(),
                    kind: Kind::Path,
                    detected: finding.detected,
                    corrected,
                    shadow: *shadow,
                    path: Some(note),
                });
            }
        }
        hits
    }
}

#[cfg(test)]
pub(crate) mod tests;
