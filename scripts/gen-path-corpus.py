#!/usr/bin/env python3
"""Generates tests/fixtures/paths/corpus.jsonl, the labelled corpus for the path-hallucination
fixer, from two real path lists. Run from the repository root:
`python3 scripts/gen-path-corpus.py`. Python 3.11, standard library only, deterministic
(random.Random(15); no iteration over sets).

Path lists (tests/fixtures/paths/, one relative path a line, '/' separators, LC_ALL=C sorted):
  ripgrep.txt  github.com/BurntSushi/ripgrep  commit 3fce3b5bb0236da2df6d99672afb8a719642eca7
  flask.txt    github.com/pallets/flask       commit 2ac89889f4cc330eabd50f295dcef02828522c69
both made with
  git ls-tree -r --name-only HEAD | grep '^[A-Za-z0-9._/-]*$' | grep -v '^\\.git/' | LC_ALL=C sort
(237 and 236 files; nothing had to be trimmed).

Every label is computed from the item's own path list by `Project.oracle` (see README.md
next to the corpus for the rules); a generated candidate whose oracle answer does not match
the class it was made for is dropped, not relabelled.
"""
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXDIR = os.path.join(HERE, "..", "tests", "fixtures", "paths")
ROOT = "{ROOT}"

rng = random.Random(15)


# --------------------------------------------------------------------------- distance


def lev(a, b, k):
    """Levenshtein distance of a and b (exact case), or k+1 if it is above k."""
    if abs(len(a) - len(b)) > k:
        return k + 1
    # a common prefix or suffix never changes the distance
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    a, b = a[i:], b[i:]
    n -= i
    j = 0
    while j < n and a[-1 - j] == b[-1 - j]:
        j += 1
    if j:
        a, b = a[:-j], b[:-j]
    if not a or not b:
        return min(max(len(a), len(b)), k + 1)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        rowmin = i
        for j, cb in enumerate(b, 1):
            v = prev[j] + 1
            w = cur[j - 1] + 1
            if w < v:
                v = w
            w = prev[j - 1] + (ca != cb)
            if w < v:
                v = w
            cur[j] = v
            if v < rowmin:
                rowmin = v
        if rowmin > k:
            return k + 1
        prev = cur
    return min(prev[-1], k + 1)


# --------------------------------------------------------------------------- projects


class Project:
    def __init__(self, name):
        self.name = name
        with open(os.path.join(FIXDIR, name + ".txt"), encoding="ascii") as fh:
            self.files = [ln.strip() for ln in fh if ln.strip()]
        assert self.files == sorted(self.files)
        self.fileset = set(self.files)
        dirs = set()
        for f in self.files:
            parts = f.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
        self.dirs = dirs
        self.lower = {}
        self.by_name = {}
        for f in self.files:
            self.lower.setdefault(f.lower(), []).append(f)
            self.by_name.setdefault(f.rsplit("/", 1)[-1], []).append(f)
        # files worth talking about (no benchmark dumps, binary test data, images)
        skip = ("benchsuite/runs/", "tests/data/", "docs/_static/")
        self.pool = [f for f in self.files if not f.startswith(skip) and not f.endswith(".png")]
        self.dir_list = sorted(dirs)

    def exists(self, p):
        return p in self.fileset or p in self.dirs

    def dist_signal(self, p, k=2):
        best, cands = k + 1, []
        for f in self.files:
            if abs(len(f) - len(p)) > best:
                continue
            d = lev(p, f, best)
            if d < best:
                best, cands = d, [f]
            elif d == best and d <= k:
                cands.append(f)
        return (cands, best) if best <= k else (None, None)

    def suffix_signal(self, p):
        """Longest '/'-boundary suffix of p (p itself first) that some file ends with."""
        parts = p.split("/")
        for i in range(len(parts)):
            s = "/".join(parts[i:])
            m = [f for f in self.files if f == s or f.endswith("/" + s)]
            if m:
                return m, s
        return None, None

    def oracle(self, p):
        """Label of a clean (ASCII, '/'-separated) path relative to the root.

        Returns (verdict, target_or_candidates, via, detail) with verdict one of
        exists / dir / fix / ambiguous / notfound / conflict.
        Signals in priority order: unique case-insensitive match, .yml<->.yaml swap,
        Levenshtein <= 2 (strictly closest file), '/'-boundary suffix (longest first,
        ending at the bare file name). The first signal that has candidates decides;
        if any signal names one file different from the decision (or one file while
        the decision is a tie), the path is a 'conflict' and never used.
        """
        if p in self.fileset:
            return ("exists", p, None, None)
        if p in self.dirs:
            return ("dir", p, None, None)
        sig = []
        sig.append(("case", self.lower.get(p.lower()), None))
        y = None
        if p.endswith(".yml") and p[:-4] + ".yaml" in self.fileset:
            y = [p[:-4] + ".yaml"]
        elif p.endswith(".yaml") and p[:-5] + ".yml" in self.fileset:
            y = [p[:-5] + ".yml"]
        sig.append(("yaml", y, None))
        dc, dd = self.dist_signal(p)
        sig.append(("dist", dc, dd))
        sc, ss = self.suffix_signal(p)
        sig.append(("suffix", sc, ss))
        decided = next(((n, c, x) for n, c, x in sig if c), None)
        if decided is None:
            return ("notfound", None, None, None)
        name, c, x = decided
        for n2, c2, _ in sig:
            if c2 and len(c2) == 1 and (len(c) > 1 or c2[0] != c[0]):
                return ("conflict", c, name, (n2, c2))
        if len(c) == 1:
            return ("fix", c[0], name, x)
        return ("ambiguous", c, name, x)

    def others(self, exclude, n):
        pool = [f for f in self.pool if f not in exclude]
        return rng.sample(pool, n)


PROJ = [Project("ripgrep"), Project("flask")]
BYNAME = {p.name: p for p in PROJ}

# --------------------------------------------------------------------------- rendering

PROSE = [
    "The logic lives in {P}.",
    "Let me open {P} to see how this is wired up.",
    "I checked {P}, and the default is set there.",
    "Looking at {P}, the function returns early when the input is empty.",
    "You can find the entry point in {P} (near the top).",
    "{P} is where the configuration gets loaded.",
    "Check {P}: it defines the helper we need.",
    "The relevant code is in {P}; the rest is boilerplate.",
    "I'll update {P} next.",
    "Did you mean {P}?",
    "Files involved: {Q}, {P}, and {R}.",
    "Here is what I changed:\n- {P}\n- {Q}",
    "Steps:\n1. Open {P}\n2. Find the match arm\n3. Re-run the tests",
    "According to {P} the option is parsed before the config file is read.",
    "First read {Q}, then {P}.",
    "Both {P} and {Q} need the same fix.",
    "The error comes from {P} when the value is missing.",
    "See {P} for the full list.",
    "As shown in {P}, this is handled lazily.",
    "I found the definition in {P}!",
    "Take a look at {P} - it has the tests for this.",
    "* {P}: main implementation\n* {Q}: related code",
    "The change touches {P} only.",
    "Open {P} and search for the constructor.",
    "In {P} the value is cloned twice, which we can avoid.",
    "Summary: modified {Q} and {P}, no other files.",
]
LINK = [
    "See [{L}]({T}) for details.",
    "The implementation is in [{L}]({T}).",
    "- [{L}]({T}): where this is defined",
    "I compared it with [{L}]({T}), and the two differ.",
]
LINK_LABELS = ["this file", "the source", "here", "the module", "the docs"]
CREATE = [
    "I'll create a new file {P} for this.",
    "Let me add a new file called {P}.",
    "Creating {P} with the following contents:",
    "I'm going to create {P} to hold the new tests.",
    "Next, I'll write a new file at {P}.",
    "New file: {P}",
    "We need a new module, so I'll create {P}.",
    "I will add {P} as a new file and register it.",
]
WRAPS = ["`", "`", "`", "`", '"', '"', "'", "", "", "", ""]


def wrap(tok, w):
    return w + tok + w


def prose(proj, pair, wrapper=None, templates=PROSE, allow_link=True, bare_ok=True):
    """pair = (written token, expected token). Returns (text, expect, desc)."""
    w = rng.choice(WRAPS) if wrapper is None else wrapper
    if w == "" and not bare_ok:
        w = "`"
    if allow_link and rng.random() < 0.12:
        t = rng.choice(LINK)
        if rng.random() < 0.5:
            lab = (wrap(pair[0], "`"), wrap(pair[1], "`"))
        else:
            lab = (rng.choice(LINK_LABELS),) * 2
        return (t.format(L=lab[0], T=pair[0]), t.format(L=lab[1], T=pair[1]), "markdown link")
    t = rng.choice(templates)
    q, r = proj.others({pair[1].split(":")[0]}, 2)
    text = t.format(P=wrap(pair[0], w), Q=wrap(q, w), R=wrap(r, w))
    exp = t.format(P=wrap(pair[1], w), Q=wrap(q, w), R=wrap(r, w))
    return text, exp, {"`": "backticked", '"': "double-quoted", "'": "single-quoted", "": "bare"}[w]


READ_TOOLS = [("read_file", "path"), ("open_file", "file_path"), ("view", "target_file")]
SHELL = [
    "cat {p} | head -n 40",
    "head -n 60 {p}",
    "sed -n '1,80p' {p}",
    "wc -l {p}",
    "grep -n 'TODO' {p}",
    "git log --oneline -5 -- {p}",
    "git diff HEAD -- {p}",
    "nl -ba {p} | sed -n '30,60p'",
    "cat {p}",
]
GREP_PATTERNS = ["fn new", "TODO", "def ", "unwrap()", "import ", "class ", r"\bSearcher\b",
                 "#[test]", "return None", "pub struct"]
SNIPPETS = {
    ".rs": [("let mut count = 0;", "let mut count: u64 = 0;"),
            ("// TODO: handle errors", "// Errors are handled by the caller."),
            ("fn new() -> Self {", "pub fn new() -> Self {")],
    ".py": [("return None", "return default"),
            ("# TODO: validate", "# validated by the caller"),
            ("def __init__(self):", "def __init__(self) -> None:")],
    "": [("old text", "new text"), ("TODO", "DONE")],
}


def snippet(path):
    ext = os.path.splitext(path)[1]
    return rng.choice(SNIPPETS.get(ext, SNIPPETS[""]))


def tool(proj, pair, kinds=("read", "read", "read", "grep", "shell", "sre_view", "sre_replace")):
    """Tool call whose one path argument is pair[0] (written) / pair[1] (expected)."""
    k = rng.choice(kinds)
    w, e = pair
    if k == "read":
        name, key = rng.choice(READ_TOOLS)
        return ({"name": name, "arguments": {key: w}}, {"name": name, "arguments": {key: e}}, name)
    if k == "grep":
        r = rng.random()
        if r < 0.2:
            pat = w  # path-like pattern: must stay as written
        elif r < 0.3:
            pat = w.rsplit("/", 1)[-1]
        else:
            pat = rng.choice(GREP_PATTERNS)
        if rng.random() < 0.5:
            (o,) = proj.others({e}, 1)
            pw, pe = ([w, o], [e, o]) if rng.random() < 0.5 else ([o, w], [o, e])
        else:
            pw, pe = [w], [e]
        return ({"name": "grep", "arguments": {"pattern": pat, "paths": pw}},
                {"name": "grep", "arguments": {"pattern": pat, "paths": pe}}, "grep")
    if k == "shell":
        cmds = list(SHELL)
        base = e.split(":")[0]
        if base.endswith(".py") and "test" in base:
            cmds.append("python -m pytest {p} -q")
        if base.endswith(".rs"):
            cmds.append("rustfmt --check {p}")
        c = rng.choice(cmds)
        return ({"name": "run_shell", "arguments": {"command": c.format(p=w)}},
                {"name": "run_shell", "arguments": {"command": c.format(p=e)}}, "run_shell")
    if k == "sre_view":
        return ({"name": "str_replace_editor", "arguments": {"command": "view", "path": w}},
                {"name": "str_replace_editor", "arguments": {"command": "view", "path": e}},
                "str_replace_editor view")
    old, new = snippet(e)
    if rng.random() < 0.3:
        old = "# see " + w if e.endswith(".py") else "// see " + w
        new = old + " (updated)"
    return ({"name": "str_replace_editor",
             "arguments": {"command": "str_replace", "path": w, "old_str": old, "new_str": new}},
            {"name": "str_replace_editor",
             "arguments": {"command": "str_replace", "path": e, "old_str": old, "new_str": new}},
            "str_replace_editor str_replace")


def render(proj, shape, pair, prose_kw=None, tool_kinds=None):
    if shape == "prose":
        t, e, d = prose(proj, pair, **(prose_kw or {}))
    else:
        t, e, d = tool(proj, pair, **({"kinds": tool_kinds} if tool_kinds else {}))
    return t, e, d


def form(rel, weights=(70, 15, 15)):
    kind = rng.choices(["rel", "dot", "abs"], weights=weights)[0]
    return {"rel": "", "dot": "./", "abs": ROOT + "/"}[kind], kind


def line_suffix():
    n = rng.randint(2, 480)
    if rng.random() < 0.5:
        return ":%d" % n
    return ":%d:%d" % (n, rng.randint(1, 60))


# --------------------------------------------------------------------------- edits

KEYB = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
NEIGH = {}
for r_, row in enumerate(KEYB):
    for c_, ch in enumerate(row):
        n_ = set()
        for rr in (r_ - 1, r_, r_ + 1):
            if 0 <= rr < 3:
                for cc in (c_ - 1, c_, c_ + 1):
                    if 0 <= cc < len(KEYB[rr]) and KEYB[rr][cc] != ch:
                        n_.add(KEYB[rr][cc])
        NEIGH[ch] = sorted(n_)


def one_edit(s):
    op = rng.choice(["sub", "ins", "del", "swap"])
    if op == "sub":
        idx = [i for i, ch in enumerate(s) if ch.isalpha()]
        if not idx:
            return s, op
        i = rng.choice(idx)
        ch = s[i]
        repl = rng.choice(NEIGH.get(ch.lower(), list("etaoinshr")))
        repl = repl.upper() if ch.isupper() else repl
        return s[:i] + repl + s[i + 1:], op
    if op == "ins":
        i = rng.randint(1, len(s))
        ch = s[i - 1] if rng.random() < 0.5 and s[i - 1].isalpha() else rng.choice("aeiourstln")
        if s[i - 1].isupper():
            ch = ch.upper()  # UNLICENSE -> UNLICENNSE, not UNLICENnSE
        return s[:i] + ch + s[i:], op
    if op == "del":
        i = rng.randrange(len(s))
        return s[:i] + s[i + 1:], op
    idx = [i for i in range(len(s) - 1) if s[i] != s[i + 1]]
    if not idx:
        return s, op
    i = rng.choice(idx)
    return s[:i] + s[i + 1] + s[i] + s[i + 2:], op


def typo_of(f, nedits=None):
    """Misspell the file name stem or one directory name of f. Returns (typo, desc)."""
    parts = f.split("/")
    name = parts[-1]
    stem, ext = os.path.splitext(name)
    if name.startswith(".") or len(stem) < 5:
        return None, None
    n = nedits or rng.choice([1, 1, 1, 2])
    dirs = [i for i in range(len(parts) - 1) if len(parts[i]) >= 4 and not parts[i].startswith(".")]
    if dirs and rng.random() < 0.3:
        i = rng.choice(dirs)
        comp, where = parts[i], "directory name %r" % parts[i]
    else:
        i, comp, where = len(parts) - 1, stem, "file name"
    ops = []
    new = comp
    for _ in range(n):
        new, op = one_edit(new)
        ops.append(op)
    if new == comp or not new or new.startswith(".") or new.endswith(".") or new.startswith("-"):
        return None, None
    parts[i] = new if i < len(parts) - 1 else new + ext
    return "/".join(parts), "%s in %s" % ("+".join(ops), where)


def miscase_of(f):
    parts = f.split("/")
    name = parts[-1]
    stem, ext = os.path.splitext(name)
    v = rng.choice(["cap_all", "ext_upper", "stem_upper", "lower_all", "cap_dir", "flip"])
    if v == "cap_all":
        p = "/".join(c[:1].upper() + c[1:] for c in parts)
    elif v == "ext_upper" and ext:
        p = "/".join(parts[:-1] + [stem + ext.upper()])
    elif v == "stem_upper":
        p = "/".join(parts[:-1] + [stem.upper() + ext])
    elif v == "lower_all":
        p = f.lower()
    elif v == "cap_dir" and len(parts) > 1:
        i = rng.randrange(len(parts) - 1)
        parts[i] = parts[i][:1].upper() + parts[i][1:]
        p = "/".join(parts)
    else:
        idx = [i for i, ch in enumerate(f) if ch.isalpha()]
        s = list(f)
        for i in rng.sample(idx, min(len(idx), rng.choice([1, 2]))):
            s[i] = s[i].swapcase()
        p = "".join(s)
        v = "flip"
    return p, v


# --------------------------------------------------------------------------- classes

SEEN = set()
ITEMS = []


def shape_plan(n, weights=(60, 25, 15)):
    tot = sum(weights)
    c = [round(n * w / tot) for w in weights]
    c[0] += n - sum(c)
    plan = ["prose"] * c[0] + ["ollama_tool"] * c[1] + ["openai_tool"] * c[2]
    rng.shuffle(plan)
    return plan


def run_class(cls, n, gen, weights=(60, 25, 15)):
    plan = shape_plan(n, weights)
    made = 0
    for k, shape in enumerate(plan):
        for attempt in range(600):
            proj = PROJ[(k + (attempt >= 300)) % 2]
            it = gen(proj, shape)
            if not it:
                continue
            key = (proj.name, json.dumps(it["text"], sort_keys=True))
            if key in SEEN:
                continue
            SEEN.add(key)
            ITEMS.append({"project": proj.name, "class": cls, "shape": shape, **it})
            made += 1
            break
        else:
            print("warning: %s: gave up on one %s item" % (cls, shape), file=sys.stderr)
    return made


def item(text, expect, action, note):
    return {"text": text, "expect": expect, "action": action, "note": note}


# correct -------------------------------------------------------------------


def gen_correct(proj, shape):
    f = rng.choice(proj.pool)
    pre, kind = form(f, (55, 20, 25))
    tok = pre + f
    extra = ""
    if "/" in f and rng.random() < 0.15:
        tok = pre + f.replace("/", "//", 1)
        extra = " with a doubled '/' (resolves on disk)"
    if shape == "prose":
        r = rng.random()
        if r < 0.2:
            tok += line_suffix()
            extra = " with line suffix"
        t, e, d = prose(proj, (tok, tok))
    else:
        kinds = ("read", "read", "grep", "shell", "sre_view", "sre_replace", "write")
        if rng.random() < 0.1:
            name = rng.choice(["write_file", "create_file"])
            old, new = snippet(f)
            args = {"path": tok, "content": new + "\n"}
            t = e = {"name": name, "arguments": args}
            d = name + " (overwrite of an existing file)"
        else:
            t, e, d = tool(proj, (tok, tok), kinds[:-1])
    return item(t, e, "none", "existing file %s, %s form, %s" % (f, kind, d) + extra)


def gen_correct_dotdot(proj, shape):
    """Inside-root '..': crates/core/../cli/src/lib.rs still names a real file; leave it."""
    f = rng.choice([g for g in proj.pool if g.count("/") >= 2])
    parts = f.split("/")
    sib = [x for x in proj.dir_list if x.count("/") == 0 and x != parts[0] and not x.startswith(".")]
    tok = sib[rng.randrange(len(sib))] + "/../" + f
    t, e, d = render(proj, shape, (tok, tok), tool_kinds=("read", "shell"))
    return item(t, e, "none", "existing file %s written through an inner '..' that stays inside "
                "the root (%s), %s" % (f, tok, d))


# misspelled -----------------------------------------------------------------


def make_typo(proj, nedits=None):
    f = rng.choice(proj.pool)
    p, how = typo_of(f, nedits)
    if not p or proj.exists(p):
        return None
    v, tgt, via, x = proj.oracle(p)
    if v != "fix" or tgt != f or via != "dist":
        return None
    # strictly closer: the runner-up is at least one edit further away
    others = [lev(p, g, x) for g in proj.files if g != f]
    assert min(others) > x
    return p, f, "%s; %s is the only file at distance %d" % (how, f, x)


def gen_misspelled(proj, shape):
    r = make_typo(proj)
    if not r:
        return None
    p, f, why = r
    pre, kind = form(p, (75, 10, 15))
    t, e, d = render(proj, shape, (pre + p, pre + f))
    return item(t, e, "fix", "misspelled (%s), %s form, %s" % (why, kind, d))


# miscased -------------------------------------------------------------------


def make_miscase(proj):
    f = rng.choice(proj.pool)
    p, v = miscase_of(f)
    if p == f or proj.exists(p) or len(proj.lower[p.lower()]) != 1:
        return None
    o = proj.oracle(p)
    if o[0] != "fix" or o[1] != f or o[2] != "case":
        return None
    return p, f, "case changed (%s); %s is the only file with that lowercased path" % (v, f)


def gen_miscased(proj, shape):
    r = make_miscase(proj)
    if not r:
        return None
    p, f, why = r
    pre, kind = form(p, (75, 10, 15))
    t, e, d = render(proj, shape, (pre + p, pre + f))
    return item(t, e, "fix", "miscased: %s, %s form, %s" % (why, kind, d))


# separator ------------------------------------------------------------------


def gen_separator(proj, shape):
    f = rng.choice([g for g in proj.pool if "/" in g])
    # A doubled '/' (src//x.rs) resolves on disk: the path exists and is left alone, so it
    # is a `correct` item (gen_correct), not a separator fix.
    v = rng.choice(["backslash", "backslash", "dot_backslash", "mixed"])
    parts = f.split("/")
    if v == "backslash":
        w, e = "\\".join(parts), f
    elif v == "dot_backslash":
        w, e = ".\\" + "\\".join(parts), "./" + f
    elif v == "mixed":
        i = rng.randrange(len(parts) - 1)
        w = "/".join(parts[:i + 1]) + "\\" + "/".join(parts[i + 1:])
        if len(parts) > 2 and w == "\\".join(parts):
            return None
        e = f
    elif v == "double":
        i = rng.randrange(len(parts) - 1)
        w, e = "/".join(parts[:i + 1]) + "//" + "/".join(parts[i + 1:]), f
    elif v == "dot_double":
        w, e = ".//" + f if rng.random() < 0.5 else "./" + f.replace("/", "//", 1), "./" + f
    else:
        w, e = ROOT + "//" + f if rng.random() < 0.5 else ROOT + "/" + f.replace("/", "//", 1), ROOT + "/" + f
    t, e2, d = render(proj, shape, (w, e))
    return item(t, e2, "fix", "separator (%s) in %s, %s" % (v, f, d))


# unicode --------------------------------------------------------------------

HOMO = {"a": ["\u0430", "\u03b1"], "e": ["\u0435", "\u03b5"], "o": ["\u043e", "\u03bf"],
        "p": ["\u0440", "\u03c1"], "c": ["\u0441"], "x": ["\u0445"], "y": ["\u0443"],
        "i": ["\u0456", "\u03b9"], "s": ["\u0455"]}


def gen_unicode(proj, shape):
    f = rng.choice(proj.pool)
    v = rng.choice(["zwsp", "zwsp", "fullwidth_solidus", "division_slash", "homoglyph",
                    "homoglyph", "homoglyph", "nbsp"])
    if v in ("fullwidth_solidus", "division_slash", "nbsp") and "/" not in f:
        return None
    slashes = [i for i, ch in enumerate(f) if ch == "/"]
    if v == "zwsp":
        i = rng.randint(1, len(f) - 1)
        p = f[:i] + "\u200b" + f[i:]
        d = "U+200B at offset %d" % i
    elif v == "fullwidth_solidus":
        i = rng.choice(slashes)
        p, d = f[:i] + "\uff0f" + f[i + 1:], "U+FF0F for '/' at offset %d" % i
    elif v == "division_slash":
        i = rng.choice(slashes)
        p, d = f[:i] + "\u2215" + f[i + 1:], "U+2215 for '/' at offset %d" % i
    elif v == "homoglyph":
        idx = [i for i, ch in enumerate(f) if ch in HOMO]
        if not idx:
            return None
        i = rng.choice(idx)
        g = rng.choice(HOMO[f[i]])
        p, d = f[:i] + g + f[i + 1:], "U+%04X for %r at offset %d" % (ord(g), f[i], i)
    else:
        i = rng.choice(slashes)
        j = i if rng.random() < 0.5 else i + 1
        p, d = f[:j] + "\u00a0" + f[j:], "U+00A0 %s the '/' at offset %d" % ("before" if j == i else "after", i)
    pre, kind = form(f, (80, 10, 10))
    # a no-break space splits a bare token: only written inside quotes/backticks in prose
    kw = {"bare_ok": v != "nbsp", "allow_link": v != "nbsp"}
    t, e, dd = render(proj, shape, (pre + p, pre + f), prose_kw=kw)
    return item(t, e, "fix", "unicode %s: %s in %s, %s form, %s" % (v, d, f, kind, dd))


# misrooted ------------------------------------------------------------------

EXTRA_TOP = {"ripgrep": ["ripgrep", "rg", "app", "repo", "src", "workspace", "project"],
             "flask": ["flask", "app", "src", "project", "lib", "python", "repo"]}
EXTRA_MID = ["src", "lib", "core", "internal", "pkg"]
WRONG = ["lib", "pkg", "packages", "source", "app", "modules", "internal", "components", "core",
         "test", "spec", "crates", "src", "flask"]


def make_misroot(proj, need_fix=True):
    f = rng.choice([g for g in proj.pool if "/" in g])
    parts = f.split("/")
    nd = len(parts) - 1
    v = rng.choice(["missing", "missing", "extra_top", "extra_mid", "wrong"])
    if v == "missing":
        k = rng.randint(1, nd)
        p = "/".join(parts[k:])
        d = "missing leading %r" % "/".join(parts[:k])
    elif v == "extra_top":
        x = rng.choice(EXTRA_TOP[proj.name])
        p, d = x + "/" + f, "extra leading %r" % x
    elif v == "extra_mid":
        if nd < 2:
            return None
        i = rng.randint(1, nd - 1)
        x = rng.choice(EXTRA_MID)
        p = "/".join(parts[:i] + [x] + parts[i:])
        d = "extra %r after %r" % (x, "/".join(parts[:i]))
    else:
        i = rng.randrange(nd)
        x = rng.choice([w for w in WRONG if w != parts[i]])
        p = "/".join(parts[:i] + [x] + parts[i + 1:])
        d = "wrong directory %r for %r" % (x, parts[i])
    if "/" not in p or proj.exists(p):
        return None
    vv, tgt, via, x = proj.oracle(p)
    if vv != "fix" or tgt != f or via not in ("suffix", "dist"):
        return None
    if via == "suffix":
        why = "%s; only file %s %r" % (d, "ending with" if "/" in x else "named", x)
    else:
        why = "%s; also the only file within %d edits" % (d, x)
    return p, f, why


def gen_misrooted(proj, shape):
    r = make_misroot(proj)
    if not r:
        return None
    p, f, why = r
    pre, kind = form(p, (80, 5, 15))
    t, e, d = render(proj, shape, (pre + p, pre + f))
    return item(t, e, "fix", "misrooted: %s -> %s (%s), %s form, %s" % (p, f, why, kind, d))


# yaml_ext -------------------------------------------------------------------


def gen_yaml_all():
    out = []
    for proj in PROJ:
        c = []
        for f in proj.files:
            if f.endswith(".yml"):
                p = f[:-4] + ".yaml"
            elif f.endswith(".yaml"):
                p = f[:-5] + ".yml"
            else:
                continue
            o = proj.oracle(p)
            if not proj.exists(p) and o[0] == "fix" and o[1] == f:
                c.append((p, f))
        for p, f in rng.sample(c, min(4, len(c))):
            out.append((proj, p, f))
    return out


# line_suffix ----------------------------------------------------------------


def gen_line_suffix(proj, shape):
    kind = rng.choice(["misspelled", "miscased", "misrooted"])
    r = {"misspelled": make_typo, "miscased": make_miscase, "misrooted": make_misroot}[kind](proj)
    if not r:
        return None
    p, f, why = r
    s = line_suffix()
    t, e, d = render(proj, shape, (p + s, f + s), tool_kinds=("read",))
    return item(t, e, "fix", "%s path with line suffix %r (%s); suffix kept, %s" % (kind, s, why, d))


# fabricated -----------------------------------------------------------------

FAB_DIRS = {
    "ripgrep": ["crates/core", "crates/searcher/src", "crates/printer/src", "crates/ignore/src",
                "crates/cli/src", "crates/regex/src", "src", "tests", "crates/core/flags",
                "crates/matcher/src", "crates/globset/src", "crates/core/search"],
    "flask": ["src/flask", "flask", "src/flask/sansio", "src/flask/json", "tests",
              "src/flask/middleware", "docs", "src/flask/ext", "examples/tutorial/flaskr",
              "docs/patterns"],
}
FAB_NAMES = {
    "ripgrep": ["quantum_cache.rs", "async_walker.rs", "gpu_matcher.rs", "telemetry.rs",
                "plugin_loader.rs", "thread_pool.rs", "simd_scan.rs", "config_loader.rs",
                "mmap_cache.rs", "unicode_tables.rs", "output_sink.rs", "fuzzy_match.rs",
                "search_worker.rs", "progress_bar.rs", "remote_index.rs", "lsp_server.rs",
                "bloom_filter.rs", "gitattributes.rs", "colors_v2.rs", "test_walker.rs",
                "encoding_detect.rs", "parallel_printer.rs", "regex_cache.rs", "settings.toml"],
    "flask": ["async_pool.py", "orm.py", "cors.py", "rate_limit.py", "websocket.py",
              "test_websocket.py", "graphql.rst", "middleware.py", "jwt_auth.py", "sse.py",
              "task_queue.py", "test_streaming_v2.py", "admin_views.py", "schema_validation.py",
              "openapi.py", "router.py", "test_router.py", "dependency_injection.rst",
              "settings.py", "background_jobs.py", "test_rate_limit.py", "oauth.py"],
}


def gen_fabricated(proj, shape):
    p = rng.choice(FAB_DIRS[proj.name]) + "/" + rng.choice(FAB_NAMES[proj.name])
    if proj.exists(p) or proj.oracle(p)[0] != "notfound":
        return None
    assert p.rsplit("/", 1)[-1] not in proj.by_name
    pre, kind = form(p, (80, 10, 10))
    t, e, d = render(proj, shape, (pre + p, pre + p),
                     tool_kinds=("read", "read", "read", "shell", "grep"))
    return item(t, e, "flag", "made up: %s is more than 2 edits from every file and its name "
                "is not in the project, %s form, %s" % (p, kind, d))


# ambiguous ------------------------------------------------------------------

AMB_PREFIX = {"ripgrep": ["src", "lib", "app", "core", "pkg", "crates/src", "crates/core/src",
                          "ripgrep", "module", "test", "project/src"],
              "flask": ["src", "lib", "app", "core", "pkg", "flask", "module", "test",
                        "project/src", "docs/src", "examples/src", "src/app"]}


def make_amb_suffix(proj):
    for _ in range(100):
        r = make_amb_suffix1(proj)
        if r:
            return r
    return None


def make_amb_suffix1(proj):
    names = sorted(n for n, fs in proj.by_name.items() if len(fs) >= 2)
    name = rng.choice(names)
    f = rng.choice(proj.by_name[name])
    parts = f.split("/")
    v = rng.choice(["last_dir", "prefix", "wrong_first"])
    if v == "last_dir" and len(parts) >= 2:
        p = "/".join(parts[-2:])
    elif v == "wrong_first" and len(parts) >= 3:
        p = "/".join([rng.choice(WRONG)] + parts[1:])
    else:
        p = rng.choice(AMB_PREFIX[proj.name]) + "/" + name
        v = "prefix"
    if "/" not in p or proj.exists(p):
        return None
    o = proj.oracle(p)
    if o[0] != "ambiguous" or o[2] != "suffix":
        return None
    return p, "%s: '%s' matches %d files (%s)" % (v, o[3], len(o[1]), ", ".join(o[1][:4]) + (", ..." if len(o[1]) > 4 else ""))


TIES = {}


def edits1(a, alphabet):
    out = set()
    for i in range(len(a) + 1):
        if i < len(a):
            out.add(a[:i] + a[i + 1:])
            for ch in alphabet:
                if ch != a[i]:
                    out.add(a[:i] + ch + a[i + 1:])
        for ch in alphabet:
            out.add(a[:i] + ch + a[i:])
    return sorted(x for x in out if x and "//" not in x and not x.startswith("/") and not x.endswith("/"))


def tie_candidates(proj):
    """Paths halfway between two files: distance 1 from both (pairs 2 apart) or 2 from both
    (pairs 4 apart), and no other file as close."""
    if proj.name not in TIES:
        fs = [f for f in proj.files if not f.startswith("benchsuite/runs/")]
        res = []
        for i, a in enumerate(fs):
            for b in fs[i + 1:]:
                d = lev(a, b, 4)
                if d not in (2, 4):
                    continue
                alpha = sorted(set(b) - {"/"})
                lvl = [p for p in edits1(a, alpha) if lev(p, b, d) == d - 1]
                if d == 4:
                    seeds = random.Random(a + "|" + b).sample(lvl, min(3, len(lvl)))
                    lvl = sorted({q for p in seeds for q in edits1(p, alpha)
                                  if lev(q, b, 2) == 2 and lev(q, a, 2) == 2})
                sub = random.Random(a + "|" + b).sample(lvl, min(4, len(lvl)))
                for p in sub:
                    if proj.exists(p):
                        continue
                    o = proj.oracle(p)
                    if o[0] == "ambiguous" and o[2] == "dist":
                        res.append((p, "typo equally close (distance %d) to %s" % (o[3], " and ".join(o[1]))))
        TIES[proj.name] = res
    return TIES[proj.name]


def make_amb_tie(proj):
    c = tie_candidates(proj)
    return rng.choice(c) if c else None


def gen_ambiguous(proj, shape):
    r = make_amb_tie(proj) if rng.random() < 0.4 else make_amb_suffix(proj)
    if not r:
        return None
    p, why = r
    pre, kind = form(p, (85, 5, 10))
    t, e, d = render(proj, shape, (pre + p, pre + p),
                     tool_kinds=("read", "read", "shell", "grep", "sre_view"))
    return item(t, e, "flag", "ambiguous: %s, %s form, %s" % (why, kind, d))


# outside_root ---------------------------------------------------------------

OUTSIDE = [
    ("ripgrep", "/etc/passwd", "system file"),
    ("flask", "/etc/passwd", "system file"),
    ("ripgrep", "/etc/pasword", "misspelled system file outside the root"),
    ("flask", "~/.ssh/id_rsa", "home directory"),
    ("ripgrep", "~/.ssh/id_rsa", "home directory"),
    ("flask", "../../secrets.txt", "climbs out of the root"),
    ("ripgrep", "../other/src/lib.rs", "sibling project; crates/*/src/lib.rs exist here"),
    ("flask", "C:\\Windows\\System32\\drivers\\etc\\hosts", "Windows absolute path"),
    ("ripgrep", "/home/someone/project/crates/core/main.rs",
     "absolute path outside the root whose suffix is the workspace file crates/core/main.rs"),
    ("flask", "/home/someone/flask/src/flask/app.py",
     "absolute path outside the root whose suffix is the workspace file src/flask/app.py"),
    ("flask", "/tmp/x.py", "temp file"),
    ("flask", "/usr/lib/python3.11/os.py", "stdlib file"),
    ("ripgrep", "~/.cargo/config.toml", "home directory; .cargo/config.toml exists in the workspace"),
    ("ripgrep", "../ripgrep-fork/crates/cli/src/lib.rs", "sibling checkout; suffix exists here"),
    ("ripgrep", ROOT + "/../other/src/lib.rs", "{ROOT}/.. leaves the root"),
    ("flask", ROOT + "/../../etc/shadow", "{ROOT}/../.. leaves the root"),
    ("ripgrep", "/var/log/syslog", "system log"),
    ("flask", "~/projects/flask/src/flask/app.py", "home directory copy of a workspace file"),
    ("flask", "/opt/app/src/flask/helpers.py", "absolute path outside the root, suffix matches"),
    ("flask", "../README.md", "parent directory's README, not the workspace one"),
    ("ripgrep", "/root/.bash_history", "root's home"),
    ("ripgrep", "D:\\work\\ripgrep\\crates\\core\\main.rs", "Windows absolute path whose suffix matches"),
    ("ripgrep", "/home/someone/project/Cargo.toml", "absolute path outside the root, suffix matches"),
    ("ripgrep", "/usr/local/bin/rg", "installed binary"),
    ("flask", "/etc/nginx/nginx.conf", "system config"),
    ("flask", "~/.config/flask/settings.py", "home directory config"),
]


def gen_outside_all():
    plan = shape_plan(len(OUTSIDE))
    for (pname, p, why), shape in zip(OUTSIDE, plan):
        proj = BYNAME[pname]
        kw = {"bare_ok": " " not in p}
        t, e, d = render(proj, shape, (p, p), prose_kw=kw,
                         tool_kinds=("read", "read", "read", "shell"))
        key = (proj.name, json.dumps(t, sort_keys=True))
        SEEN.add(key)
        ITEMS.append({"project": pname, "class": "outside_root", "shape": shape,
                      **item(t, e, "none", "outside the root: %s, %s" % (why, d))})


# create_intent --------------------------------------------------------------

NEW_NAMES = {
    "ripgrep": ["validate.rs", "cache.rs", "parsr.rs", "walk_tests.rs", "bench_util.rs",
                "new_flags.rs", "helpers.rs", "regression_2.rs"],
    "flask": ["test_blueprint2.py", "utils.py", "extensions.py", "test_cli_extra.py",
              "models.py", "conftest_extra.py", "cache.py", "forms.py"],
}


def create_path(proj):
    r = rng.random()
    if r < 0.4:
        f = rng.choice([g for g in proj.pool if "/" in g])
        p, how = typo_of(f, 1)
        if not p:
            return None
        return p, "one edit (%s) away from %s" % (how, f)
    name = rng.choice(NEW_NAMES[proj.name])
    ext = os.path.splitext(name)[1]
    # only directories that already hold files with the new file's extension
    dirs = sorted({f.rsplit("/", 1)[0] for f in proj.pool if "/" in f and f.endswith(ext)})
    d = rng.choice(dirs)
    p = d + "/" + name
    return p, "new file in the existing directory %s" % d


def content_for(p):
    if p.endswith(".rs"):
        return "//! New module.\n\npub fn run() -> anyhow::Result<()> {\n    Ok(())\n}\n"
    if p.endswith(".py"):
        return "import pytest\n\n\ndef test_new():\n    assert True\n"
    return "placeholder\n"


def gen_create(proj, shape):
    r = create_path(proj)
    if not r:
        return None
    p, why = r
    if proj.exists(p):
        return None
    if shape == "prose":
        w = rng.choice(["`", "`", '"', ""])
        t = rng.choice(CREATE).format(P=wrap(p, w))
        return item(t, t, "none", "create intent in prose: %s" % why)
    k = rng.choice(["write_file", "create_file", "sre_create", "apply_patch", "write_file"])
    body = content_for(p)
    if k in ("write_file", "create_file"):
        args = {"path": p, "content": body}
        name = k
    elif k == "sre_create":
        args = {"command": "create", "path": p, "file_text": body}
        name = "str_replace_editor"
    else:
        lines = "".join("+" + ln + "\n" for ln in body.rstrip("\n").split("\n"))
        patch = "*** Begin Patch\n*** Add File: %s\n%s*** End Patch\n" % (p, lines)
        name = "apply_patch"
        args = {rng.choice(["input", "patch"]): patch}
    t = {"name": name, "arguments": args}
    return item(t, json.loads(json.dumps(t)), "none", "create intent (%s): %s" % (k, why))


# prose (no path) ------------------------------------------------------------

PROSE_NONE = [
    ("flask", "The upstream source is at https://github.com/pallets/flask/blob/main/src/flask/app.py if you want to compare."),
    ("ripgrep", "See https://github.com/BurntSushi/ripgrep/blob/master/crates/core/flags/defs.rs for the upstream version."),
    ("flask", "Set the Content-Type header to application/json instead of text/html."),
    ("ripgrep", "This is an I/O bound task, so more threads help."),
    ("flask", "The flag controls read/write access and/or ownership."),
    ("flask", "It's a client/server setup, e.g., a web app talking to an API."),
    ("ripgrep", "Upgrade to v0.14.1, i.e., the release with the fix."),
    ("flask", "This requires Python 3.11 or newer and Werkzeug 3.0.1."),
    ("flask", "Import it from flask.sansio.app instead of flask.app."),
    ("ripgrep", "Use std::path::Path and std::fs::read_to_string for this."),
    ("flask", "Call os.path.join(base, name) rather than concatenating strings."),
    ("flask", "The endpoint is GET /api/v1/users/42 and returns a JSON body."),
    ("ripgrep", "Run it over `src/**/*.rs` to catch every module."),
    ("flask", "Match files with the glob `*.py` and skip `**/__pycache__/**`."),
    ("ripgrep", "The regex `^src/.*\\.rs$` matches every Rust file under src."),
    ("flask", "The release went out on 2024/01/15 and the next one is planned for 2024/03/01."),
    ("ripgrep", "About 3/4 of the time is spent in the matcher."),
    ("ripgrep", "It's a 50/50 split between parsing and printing."),
    ("flask", "Either POST or PUT works; the server treats them as create/update."),
    ("flask", "The MIME type image/svg+xml is handled separately from text/plain."),
    ("ripgrep", "Use `rg --type-add 'web:*.{html,css,js}'` to define a new file type."),
    ("ripgrep", "ripgrep 14.1.0 is roughly 2x faster here than GNU grep 3.11."),
    ("flask", "The option accepts Lax/Strict/None, e.g. SESSION_COOKIE_SAMESITE = \"Lax\"."),
    ("ripgrep", "Use the `grep_searcher::Searcher` type together with `grep_regex::RegexMatcher`."),
    ("flask", "The docs at https://flask.palletsprojects.com/en/stable/patterns/appfactories/ cover this."),
    ("ripgrep", "The aspect ratio should be 16/9, not 4/3."),
    ("flask", "TCP/IP and HTTP/2 are both handled by the proxy in front of it."),
    ("flask", "Use `jinja2.Environment` and `werkzeug.routing.Map` for this."),
    ("ripgrep", "The remote is git@github.com:BurntSushi/ripgrep.git, branch master."),
    ("ripgrep", "Prefix the commit with feat/fix/chore and keep the summary short."),
    ("flask", "Use `request.get_json()` and return `jsonify(data)`, i.e. no manual json.dumps."),
    ("ripgrep", "The input/output buffers are 64 KiB each (8/16 pages)."),
]


def gen_prose_all(n_tools):
    plan_t = shape_plan(n_tools, (0, 25, 15))
    for pname, t in PROSE_NONE:
        ITEMS.append({"project": pname, "class": "prose", "shape": "prose",
                      **item(t, t, "none", "no workspace path (URL, MIME type, version, module path, glob, regex, date or fraction)")})
    tools = []
    tools.append(("ripgrep", {"name": "grep", "arguments": {"pattern": "TODO", "paths": ["crates/**/*.rs"]}}, "glob in paths"))
    tools.append(("flask", {"name": "grep", "arguments": {"pattern": "def \\w+\\(", "paths": ["src/**/*.py"]}}, "glob in paths"))
    tools.append(("flask", {"name": "run_shell", "arguments": {"command": "curl -s -H 'Accept: application/json' https://api.github.com/repos/pallets/flask"}}, "URL and MIME type in a command"))
    tools.append(("ripgrep", {"name": "run_shell", "arguments": {"command": "rg -n --glob '*.rs' 'fn main'"}}, "glob in a command"))
    tools.append(("flask", {"name": "run_shell", "arguments": {"command": "python -c 'import os.path; print(os.path.sep)'"}}, "dotted module name"))
    tools.append(("ripgrep", {"name": "run_shell", "arguments": {"command": "cargo test --release -- --test-threads=2"}}, "no path"))
    tools.append(("flask", {"name": "run_shell", "arguments": {"command": "pip install 'flask>=3.0,<4' 'werkzeug==3.0.1'"}}, "version specifiers"))
    tools.append(("ripgrep", {"name": "run_shell", "arguments": {"command": "git log --since=2024/01/01 --oneline"}}, "date"))
    tools.append(("flask", {"name": "grep", "arguments": {"pattern": "application/json", "paths": ["src/flask/json/provider.py"]}}, "MIME type as pattern, real path"))
    tools.append(("flask", {"name": "view", "arguments": {"target_file": "https://github.com/pallets/flask/blob/main/src/flask/app.py"}}, "URL, not a workspace path"))
    tools.append(("ripgrep", {"name": "grep", "arguments": {"pattern": "^src/.*\\.rs$", "paths": ["crates/core"]}}, "regex pattern, real directory"))
    tools.append(("flask", {"name": "run_shell", "arguments": {"command": "echo $((3/4)) and/or $((50/50))"}}, "fractions"))
    # str_replace_editor whose old_str/new_str carry misspelled paths: only "path" is a path
    k, need = 0, n_tools - len(tools)
    while k < need:
        proj = PROJ[k % 2]
        r = make_typo(proj)
        if not r:
            continue
        p, f, why = r
        host = rng.choice([g for g in proj.pool if g.endswith((".rs", ".py", ".md", ".rst"))])
        c = "# " if host.endswith(".py") else ("// " if host.endswith(".rs") else "")
        v = k % 3
        if v == 0:
            args = {"command": "str_replace", "path": host, "old_str": c + "see " + p, "new_str": c + "see " + f}
        elif v == 1:
            args = {"command": "str_replace", "path": host, "old_str": c + "moved to " + f, "new_str": c + "moved to " + p}
        else:
            name = "write_file"
            tools.append((proj.name, {"name": name, "arguments": {"path": host, "content": c + "generated from " + p + "\n"}},
                          "content mentions the misspelled %s (%s); content never changes" % (p, why)))
            k += 1
            continue
        tools.append((proj.name, {"name": "str_replace_editor", "arguments": args},
                      "old_str/new_str mention the misspelled %s (%s); only path is a path and it exists" % (p, why)))
        k += 1
    for (pname, t, why), shape in zip(tools, plan_t):
        ITEMS.append({"project": pname, "class": "prose", "shape": shape,
                      **item(t, json.loads(json.dumps(t)), "none", "tool call with no path to fix: " + why)})
    for it in ITEMS:
        if it["class"] == "prose":
            SEEN.add((it["project"], json.dumps(it["text"], sort_keys=True)))


# --------------------------------------------------------------------------- main

CLASSES = ["correct", "misspelled", "miscased", "separator", "unicode", "misrooted", "yaml_ext",
           "line_suffix", "fabricated", "ambiguous", "outside_root", "create_intent", "prose"]

NONPATH_ARGS = ("content", "old_str", "new_str", "pattern", "file_text", "input", "patch")


def check(it):
    t, e, a = it["text"], it["expect"], it["action"]
    if a in ("none", "flag"):
        assert t == e, it
    else:
        assert t != e, it
    if it["shape"] == "prose":
        assert isinstance(t, str) and isinstance(e, str)
    else:
        assert isinstance(t, dict) and t["name"] == e["name"], it
        for k in NONPATH_ARGS:
            assert t["arguments"].get(k) == e["arguments"].get(k), it
        assert sorted(t["arguments"]) == sorted(e["arguments"]), it
    if it["class"] == "outside_root":
        assert t == e


def main():
    run_class("correct", 46, gen_correct)
    run_class("correct", 4, gen_correct_dotdot, (50, 25, 25))
    run_class("misspelled", 60, gen_misspelled)
    run_class("miscased", 40, gen_miscased)
    run_class("separator", 40, gen_separator)
    run_class("unicode", 40, gen_unicode)
    run_class("misrooted", 50, gen_misrooted)
    yplan = None
    ys = gen_yaml_all()
    yplan = shape_plan(len(ys))
    for (proj, p, f), shape in zip(ys, yplan):
        pre, kind = form(p, (80, 10, 10))
        t, e, d = render(proj, shape, (pre + p, pre + f), tool_kinds=("read", "shell", "sre_view"))
        SEEN.add((proj.name, json.dumps(t, sort_keys=True)))
        ITEMS.append({"project": proj.name, "class": "yaml_ext", "shape": shape,
                      **item(t, e, "fix", "extension swapped: %s exists, %s does not, %s form, %s" % (f, p, kind, d))})
    run_class("line_suffix", 20, gen_line_suffix, (70, 20, 10))
    run_class("fabricated", 40, gen_fabricated)
    run_class("ambiguous", 25, gen_ambiguous)
    gen_outside_all()
    run_class("create_intent", 30, gen_create, (45, 35, 20))
    gen_prose_all(50 - len(PROSE_NONE))

    out = []
    for i, it in enumerate(ITEMS, 1):
        check(it)
        out.append({"id": "c%04d" % i, "project": it["project"], "class": it["class"],
                    "shape": it["shape"], "text": it["text"], "expect": it["expect"],
                    "action": it["action"], "note": it["note"]})
    path = os.path.join(FIXDIR, "corpus.jsonl")
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        for o in out:
            fh.write(json.dumps(o, ensure_ascii=True) + "\n")

    shapes = ["prose", "ollama_tool", "openai_tool"]
    print("%-14s %5s %7s %7s %7s  %-6s %7s %7s" % ("class", "total", *shapes, "action", "ripgrep", "flask"))
    for c in CLASSES:
        rows = [o for o in out if o["class"] == c]
        acts = sorted({o["action"] for o in rows})
        print("%-14s %5d %7d %7d %7d  %-6s %7d %7d" % (
            c, len(rows), *[sum(o["shape"] == s for o in rows) for s in shapes], "/".join(acts),
            sum(o["project"] == "ripgrep" for o in rows), sum(o["project"] == "flask" for o in rows)))
    print("%-14s %5d %7d %7d %7d" % ("all", len(out), *[sum(o["shape"] == s for o in out) for s in shapes]))
    print("wrote", os.path.relpath(path))
    assert len(out) >= 420, len(out)


if __name__ == "__main__":
    main()
