#!/usr/bin/env python3
"""Record real streamed generations from llama.cpp's llama-server and save them
as Ollama /api/generate NDJSON streams (tests/fixtures/recorded/NN-slug.ndjson).

Python 3 standard library only.

Usage:
    scripts/record-ndjson.py [--server http://127.0.0.1:18080]
                             [--out tests/fixtures/recorded]
                             [--only 3,7] [--n-predict 256] [--temperature 0.7]

Start the server first, e.g.:
    llama-server -m "$(scripts/fetch-model.sh)" -t 2 --port 18080 \
        --host 127.0.0.1 -c 4096

For prompt number i (1-based) the request is
    POST /completion {"prompt": <Gemma chat turn>, "stream": true,
                      "n_predict": 256, "temperature": 0.7, "seed": i}
and the server-sent events are converted the way Ollama streams /api/generate:

  * one line per streamed piece of text (llama-server sends one event per
    token, except when it holds text back for an incomplete UTF-8 sequence):
      {"model":"gemma3:270m","created_at":"<RFC3339Nano UTC>","response":"<text>","done":false}
  * a final line
      {"model":"gemma3:270m","created_at":"...","response":"","done":true,
       "done_reason":"stop"|"length","total_duration":N,"prompt_eval_count":N,
       "prompt_eval_duration":N,"eval_count":N,"eval_duration":N}
    done_reason is "length" when llama-server's stop_type is "limit" (n_predict
    reached), otherwise "stop". prompt_eval_count / eval_count are
    tokens_evaluated / tokens_predicted, the *_duration fields are the final
    event's timings.prompt_ms / predicted_ms in nanoseconds, total_duration is
    the wall-clock time from sending the request to the final event.
    load_duration and context are left out, as Ollama does when they are
    zero/empty (omitempty).

JSON is encoded like Go's encoding/json (which Ollama uses): compact, UTF-8
kept as is, and '<', '>', '&', U+2028, U+2029 escaped as \\u003c, \\u003e,
\\u0026, \\u2028, \\u2029. created_at is Go's RFC3339Nano (trailing zeros of
the fraction trimmed), taken when each event arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

MODEL_NAME = "gemma3:270m"

# (slug, prompt) -- coding-agent-like requests; seed = 1-based index.
PROMPTS: list[tuple[str, str]] = [
    ("rust-read-config", "Write a Rust function that reads a config file."),
    ("rust-main-rs", "Explain what src/main.rs usually contains in a Rust project."),
    ("clean-build-dir", "List shell commands to clean a build directory."),
    ("python-s3-upload", "Write a Python script that uploads a file to S3 using boto3 with an access key."),
    ("jwt-example", "What is a JWT and show an example token."),
    ("bash-backup-home", "Write a bash script to back up /home."),
    ("dockerfile-rust", "Write a Dockerfile for a Rust web service."),
    ("dotenv-postgres", "Show an example .env file for a web app that uses Postgres, with a database URL and an API key."),
    ("git-undo-commit", "How do I undo the last git commit and push the fix? Show the commands."),
    ("sql-add-column", "Write a SQL migration that adds an email column to a users table."),
    ("curl-bearer", "Write a curl command that calls a REST API with a bearer token."),
    ("fix-permission-denied", "My script fails with 'permission denied' on Linux. How do I fix it?"),
]

CHAT_TEMPLATE = "<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"


def go_json(obj: dict) -> str:
    """Encode like Go's json.Marshal (HTML-safe escaping, compact, raw UTF-8)."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano for a UTC time given in ns since the epoch."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


def sse_events(resp):
    """Yield (arrival_ns, json) for each `data: {...}` server-sent event."""
    data_lines: list[str] = []
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data_lines:
                payload = "\n".join(data_lines)
                data_lines = []
                if payload.strip() == "[DONE]":
                    return
                yield time.time_ns(), json.loads(payload)
            continue
        if line.startswith("data:"):
            data_lines.append(line[5:].lstrip(" "))
        elif line.startswith("error:"):
            raise RuntimeError(f"server error event: {line}")
    if data_lines:
        yield time.time_ns(), json.loads("\n".join(data_lines))


def record(server: str, idx: int, prompt: str, n_predict: int, temperature: float) -> tuple[list[str], dict]:
    body = {
        "prompt": CHAT_TEMPLATE.format(prompt=prompt),
        "stream": True,
        "n_predict": n_predict,
        "temperature": temperature,
        "seed": idx,
    }
    req = urllib.request.Request(
        server.rstrip("/") + "/completion",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        method="POST",
    )
    lines: list[str] = []
    final = None
    t0 = time.time_ns()
    with urllib.request.urlopen(req, timeout=600) as resp:
        for ts, ev in sse_events(resp):
            if "error" in ev:
                raise RuntimeError(f"server error: {ev['error']}")
            content = ev.get("content") or ""
            if content:
                lines.append(go_json({
                    "model": MODEL_NAME,
                    "created_at": rfc3339nano(ts),
                    "response": content,
                    "done": False,
                }))
            if ev.get("stop"):
                final = (ts, ev)
                break
    if final is None:
        raise RuntimeError("stream ended without a final (stop=true) event")
    ts, ev = final
    timings = ev.get("timings") or {}
    stop_type = ev.get("stop_type", "eos")
    done = {
        "model": MODEL_NAME,
        "created_at": rfc3339nano(ts),
        "response": "",
        "done": True,
        "done_reason": "length" if stop_type == "limit" else "stop",
        "total_duration": ts - t0,
        "prompt_eval_count": int(ev.get("tokens_evaluated", timings.get("prompt_n", 0))),
        "prompt_eval_duration": round(float(timings.get("prompt_ms", 0.0)) * 1e6),
        "eval_count": int(ev.get("tokens_predicted", timings.get("predicted_n", 0))),
        "eval_duration": round(float(timings.get("predicted_ms", 0.0)) * 1e6),
    }
    lines.append(go_json(done))
    return lines, {"stop_type": stop_type, **done}


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="http://127.0.0.1:18080")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "recorded"))
    ap.add_argument("--only", default="", help="comma-separated 1-based prompt numbers")
    ap.add_argument("--n-predict", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()

    only = {int(x) for x in args.only.split(",") if x.strip()}
    os.makedirs(args.out, exist_ok=True)
    print("| file | seed | lines | bytes | done_reason | prompt tokens | eval tokens |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for i, (slug, prompt) in enumerate(PROMPTS, start=1):
        if only and i not in only:
            continue
        try:
            lines, info = record(args.server, i, prompt, args.n_predict, args.temperature)
        except (urllib.error.URLError, RuntimeError, ValueError) as e:
            print(f"error recording #{i} ({slug}): {e}", file=sys.stderr)
            return 1
        name = f"{i:02d}-{slug}.ndjson"
        path = os.path.join(args.out, name)
        data = ("\n".join(lines) + "\n").encode("utf-8")
        with open(path, "wb") as f:
            f.write(data)
        print(
            f"| {name} | {i} | {len(lines)} | {len(data)} | {info['done_reason']} ({info['stop_type']}) "
            f"| {info['prompt_eval_count']} | {info['eval_count']} |",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
