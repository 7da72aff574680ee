#!/usr/bin/env python3
"""Checks the layer rule of ARCHITECTURE.md: which top-level modules of `src/` import which.

Prints each module's imports (from code, not comments) and fails (exit 1) on an import that
points up the layer list or on any cycle. Run from the repository root:
`python3 scripts/layers.py`.
"""
import pathlib
import re
import sys

# Top to bottom. A module may import modules on lower lines only; modules on one line are
# independent of each other.
LAYERS = [
    ["app"],
    ["proxy", "serve"],
    ["live"],
    ["audit", "request", "detect"],
    ["patch"],
    ["store", "paths"],
    ["rules", "gguf", "config"],
    ["edge", "telemetry"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

src = pathlib.Path("src")
deps = {name: set() for name in RANK}
problems = []
for path in sorted(src.rglob("*.rs")):
    parts = path.relative_to(src).with_suffix("").parts
    if parts[0] in ("lib", "main"):
        continue
    top = parts[0]
    if top not in RANK:
        problems.append(f"{path}: top-level module {top!r} is not in the layer list")
        continue
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("//", 1)[0]
        for used in re.findall(r"\bcrate::([a-z_]+)", code):
            if used == top:
                continue
            if used not in RANK:
                problems.append(f"{path}:{number}: crate::{used} is not in the layer list")
                continue
            deps[top].add(used)
            if RANK[used] <= RANK[top]:
                problems.append(f"{path}:{number}: {top} imports {used} (same or higher layer)")

for name in RANK:
    print(f"{name:10} -> {', '.join(sorted(deps[name])) or '-'}")
for problem in problems:
    print(problem, file=sys.stderr)
sys.exit(1 if problems else 0)
