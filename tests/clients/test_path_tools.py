"""Path rules seen through the official Python clients.

tests/path_clients.rs starts scripted upstreams that answer every chat with a tool call
naming a misspelled file, and a rawrxd proxy with a `path` rule in front of each; this
script asks through the proxies with the `ollama` and `openai` clients, streamed and not,
and checks that the tool call the client hands back names the file that exists.

Usage: test_path_tools.py --ollama URL --openai-stream URL --openai URL --root DIR
Prints one line per check and "path clients: N passed, M failed"; exits 1 on a failure.
"""

import argparse
import json
import os
import sys
import traceback

import ollama
import openai

WANT = "src/utils.rs"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the workspace",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]
MESSAGES = [{"role": "user", "content": "Show me the helpers."}]


def check_path(path, root):
    assert path == WANT, f"tool call names {path!r}, want {WANT!r}"
    full = os.path.join(root, path)
    assert os.path.isfile(full), f"{full} does not exist"


def ollama_streamed(args):
    client = ollama.Client(host=args.ollama, headers={"x-rawrxd-workspace": args.root})
    calls = []
    for chunk in client.chat(model="m", messages=MESSAGES, tools=TOOLS, stream=True):
        calls.extend(chunk.message.tool_calls or [])
    assert len(calls) == 1, f"{len(calls)} tool calls"
    assert calls[0].function.name == "read_file"
    check_path(calls[0].function.arguments["path"], args.root)


def openai_streamed(args):
    client = openai.OpenAI(
        base_url=args.openai_stream + "/v1",
        api_key="unused",
        default_headers={"x-rawrxd-workspace": args.root},
    )
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, stream=True
    )
    names, arguments, finish = {}, {}, None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names[call.index] = call.function.name
                if call.function and call.function.arguments:
                    arguments[call.index] = arguments.get(call.index, "") + call.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls", f"finish_reason {finish!r}"
    assert names == {0: "read_file"}, names
    check_path(json.loads(arguments[0])["path"], args.root)


def openai_whole(args):
    client = openai.OpenAI(
        base_url=args.openai + "/v1",
        api_key="unused",
        default_headers={"x-rawrxd-workspace": args.root},
    )
    reply = client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "read_file", calls
    check_path(json.loads(calls[0].function.arguments)["path"], args.root)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ollama", required=True)
    parser.add_argument("--openai-stream", required=True)
    parser.add_argument("--openai", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    passed = failed = 0
    for check in (ollama_streamed, openai_streamed, openai_whole):
        try:
            check(args)
            print(f"ok   {check.__name__}")
            passed += 1
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            print(f"FAIL {check.__name__}\n{traceback.format_exc()}")
            failed += 1
    print(f"path clients: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
