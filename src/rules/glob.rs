//! Model globs: which rules apply to a model name (`*` wildcards, `x` ≡ `x:latest`).

/// A model name and its other spelling: `x:latest` ↔ `x`. A name's tag is what follows a
/// `:` in its last `/`-separated segment, so `host:5000/x` has no tag.
pub(super) fn model_spellings(model: &str) -> Vec<String> {
    let last_segment = model.rsplit('/').next().unwrap_or(model);
    let mut names = vec![model.to_string()];
    if let Some(untagged) = model.strip_suffix(":latest") {
        names.push(untagged.to_string());
    } else if !model.is_empty() && !last_segment.contains(':') {
        names.push(format!("{model}:latest"));
    }
    names
}

/// Glob match with `*` (any run, including none) and `?` (one character), ignoring ASCII case.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether model glob `glob` matches `model` in either spelling (`x` ≡ `x:latest`), ignoring
/// ASCII case: how a rule's `models` and an `alias` rule's `from` select models.
pub fn model_matches(glob: &str, model: &str) -> bool {
    model_spellings(model)
        .iter()
        .any(|name| glob_match(glob, name))
}
