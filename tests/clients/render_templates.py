#!/usr/bin/env python3
"""Renders chat templates the way Hugging Face transformers' `apply_chat_template` does, the
reference `tests/tool_templates.rs` holds `rawrxd serve`'s renderer to.

The environment is transformers' `_compile_jinja_template` (utils/chat_template_utils.py):
an ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop controls; `tojson`
is `json.dumps(x, ensure_ascii=False, ...)`; `raise_exception(msg)` raises; `strftime_now(fmt)`
is `datetime.now().strftime(fmt)`. The template sees `messages`, `tools` (None without tools),
`add_generation_prompt`, `bos_token` and `eos_token`.

Reads one JSON object from stdin, {"cases": [{"template": PATH, "bos_token", "eos_token",
"messages", "tools", "add_generation_prompt"}, ...]}, and writes a JSON list with one
{"text": ...} or {"error": ...} a case.
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.sandbox


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    request = json.load(sys.stdin)
    env = environment()
    compiled = {}
    results = []
    for case in request["cases"]:
        path = case["template"]
        try:
            if path not in compiled:
                with open(path, encoding="utf-8") as f:
                    compiled[path] = env.from_string(f.read())
            text = compiled[path].render(
                messages=case["messages"],
                tools=case.get("tools"),
                add_generation_prompt=case["add_generation_prompt"],
                bos_token=case["bos_token"],
                eos_token=case["eos_token"],
            )
            results.append({"text": text})
        except Exception as e:  # the comparison wants any failure, as a failure
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
