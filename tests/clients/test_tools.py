"""Tool calling on `rawrxd serve`, seen through the official Python clients.

tests/serve_tools.rs starts `rawrxd up` with a copy of the Gemma test model that carries Qwen
2.5's tool-capable chat template and runs this script against serve directly and through the
proxy. Every request forces a call (the base model would not call a tool on its own): OpenAI
`tool_choice`, and on Ollama's API rawrxd's `tool_choice` in `options`, which the ollama client
and langchain-ollama pass through. Each call must parse in the client into the tool's name and
arguments that match its schema.

Usage: test_tools.py --serve URL --proxy URL --model NAME
Prints one line per check and "tool clients: N passed, M failed"; exits 1 on a failure.
"""

import argparse
import json
import os

import ollama
import openai
from langchain_core.tools import tool
from langchain_ollama import ChatOllama

from checks import Checks

CITIES = ["Paris", "London", "Tokyo"]
# get_weather (a city of CITIES, a unit) and read_file; shared with tests/serve_tools.rs.
with open(os.path.join(os.path.dirname(__file__), "../fixtures/tools/weather_and_files.json")) as f:
    TOOLS = [t for t in json.load(f) if t["function"]["name"] == "get_weather"]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
FORCED = {"tool_choice": "required", "num_predict": 80, "seed": 1}


def check_arguments(arguments):
    assert isinstance(arguments, dict), f"arguments {arguments!r} are not an object"
    assert arguments.get("city") in CITIES, f"city {arguments!r}"
    assert set(arguments) <= {"city", "unit"}, f"unexpected keys {arguments!r}"
    if "unit" in arguments:
        assert arguments["unit"] in ("celsius", "fahrenheit"), arguments


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", required=True)
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    checks = Checks()
    check = checks.check

    for where, url in [("serve", args.serve), ("proxy", args.proxy)]:
        client = ollama.Client(host=url)
        oai = openai.OpenAI(base_url=url + "/v1", api_key="unused")

        def ollama_whole():
            r = client.chat(model=args.model, messages=ASK, tools=TOOLS, options=FORCED)
            calls = r.message.tool_calls
            assert calls and len(calls) == 1, r
            assert calls[0].function.name == "get_weather", calls
            check_arguments(dict(calls[0].function.arguments))

        def ollama_streamed():
            calls = []
            for chunk in client.chat(
                model=args.model, messages=ASK, tools=TOOLS, options=FORCED, stream=True
            ):
                calls.extend(chunk.message.tool_calls or [])
                assert "<tool_call>" not in (chunk.message.content or ""), chunk
            assert len(calls) == 1, calls
            check_arguments(dict(calls[0].function.arguments))

        def openai_whole():
            r = oai.chat.completions.create(
                model=args.model, messages=ASK, tools=TOOLS, tool_choice="required",
                max_tokens=80, seed=2,
            )
            choice = r.choices[0]
            assert choice.finish_reason == "tool_calls", choice
            call = choice.message.tool_calls[0]
            assert call.type == "function" and call.id, call
            assert call.function.name == "get_weather", call
            check_arguments(json.loads(call.function.arguments))

        def openai_streamed():
            calls = {}
            finish = None
            for chunk in oai.chat.completions.create(
                model=args.model, messages=ASK, tools=TOOLS, max_tokens=80, seed=3,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                stream=True,
            ):
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                for d in choice.delta.tool_calls or []:
                    entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                    entry["name"] += d.function.name or ""
                    entry["arguments"] += d.function.arguments or ""
                finish = choice.finish_reason or finish
            assert finish == "tool_calls", finish
            assert list(calls) == [0], calls
            assert calls[0]["name"] == "get_weather", calls
            check_arguments(json.loads(calls[0]["arguments"]))

        def langchain_bind_tools():
            @tool
            def get_weather(city: str, unit: str = "celsius") -> str:
                """Get the current weather in a city."""
                return f"20 degrees {unit} in {city}"

            llm = ChatOllama(model=args.model, base_url=url).bind_tools([get_weather])
            message = llm.invoke("What is the weather in Paris?", options=FORCED)
            assert message.tool_calls, message
            call = message.tool_calls[0]
            assert call["name"] == "get_weather", call
            assert isinstance(call["args"], dict) and isinstance(call["args"].get("city"), str), call
            # The tool runs on what the model sent.
            assert "degrees" in get_weather.invoke(call["args"])

        for name, fn in [
            ("ollama chat, forced call", ollama_whole),
            ("ollama chat streamed, forced call", ollama_streamed),
            ("openai chat, tool_choice required", openai_whole),
            ("openai chat streamed, named tool_choice", openai_streamed),
            ("langchain-ollama bind_tools", langchain_bind_tools),
        ]:
            check(f"{name} ({where})", fn)

    checks.finish("tool clients")


if __name__ == "__main__":
    main()
