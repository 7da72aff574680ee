"""`detect` rules seen through the official Python clients.

tests/detect.rs starts `rawrxd up` with the Gemma test model and two `detect` rules — a
`repetition` rule that stops loops, and a start-of-answer pattern that retries the model's
greedy first answer with other options — and runs this script against the proxy. Every
stream must parse in the client and end once, well-formed: the stopped ones with
`done_reason`/`finish_reason` "stop", the retried one with only the retried answer.

Usage: test_detect.py --proxy URL --loop-prompt TEXT --retry-prompt TEXT --retried TEXT
Prints one line per check and "detect clients: N passed, M failed"; exits 1 on a failure.
"""

import argparse
import sys
import traceback

import ollama
import openai

MODEL = "gemma3:270m"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--loop-prompt", required=True)
    parser.add_argument("--retry-prompt", required=True)
    parser.add_argument("--retried", required=True, help="the answer the retry gives")
    args = parser.parse_args()

    client = ollama.Client(host=args.proxy)
    oai = openai.OpenAI(base_url=args.proxy + "/v1", api_key="unused")
    greedy = {"temperature": 0, "num_predict": 256}
    results = []

    def check(name, fn):
        try:
            fn()
            results.append(True)
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - report every failure
            results.append(False)
            print(f"FAIL {name}")
            traceback.print_exc()

    def ollama_generate_loop():
        chunks = list(
            client.generate(model=MODEL, prompt=args.loop_prompt, stream=True, options=greedy)
        )
        finals = [c for c in chunks if c.done]
        assert len(finals) == 1 and chunks[-1].done, f"{len(finals)} final chunks"
        assert chunks[-1].done_reason == "stop", chunks[-1]
        text = "".join(c.response for c in chunks)
        assert 0 < len(text), "no text"

    def openai_completion_watched():
        # Greedy decoding on /v1/completions gives another text than /api/generate (it
        # wanders between near-copies of a list rather than looping exactly): whether or not
        # the loop rule stops it, the stream must end once, well-formed.
        stream = oai.completions.create(
            model=MODEL, prompt=args.loop_prompt, stream=True, temperature=0, max_tokens=256
        )
        chunks = list(stream)
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(reasons) == 1 and reasons[0] in ("stop", "length"), reasons
        stopped = (chunks[-1].model_extra or {}).get("rawrxd_stopped")
        assert (reasons[0] == "stop") == (stopped == "loops"), (reasons, stopped)

    def openai_chat_watched():
        stream = oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": args.loop_prompt}],
            stream=True,
            temperature=0,
            max_tokens=128,
        )
        chunks = list(stream)
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(reasons) == 1 and reasons[0] in ("stop", "length"), reasons

    def ollama_generate_retry():
        chunks = list(
            client.generate(
                model=MODEL,
                prompt=args.retry_prompt,
                stream=True,
                options={"temperature": 0, "num_predict": 24},
            )
        )
        assert chunks[-1].done and sum(1 for c in chunks if c.done) == 1
        text = "".join(c.response for c in chunks)
        assert text == args.retried, f"{text!r} != {args.retried!r}"

    def ollama_generate_retry_whole():
        answer = client.generate(
            model=MODEL,
            prompt=args.retry_prompt,
            stream=False,
            options={"temperature": 0, "num_predict": 24},
        )
        assert answer.response == args.retried, f"{answer.response!r} != {args.retried!r}"

    check("ollama generate: a loop is stopped, one final chunk", ollama_generate_loop)
    check("openai completions under the loop rule: one well-formed ending", openai_completion_watched)
    check("openai chat under the loop rule: one well-formed ending", openai_chat_watched)
    check("ollama generate: the retried answer only", ollama_generate_retry)
    check("ollama generate, stream=False: the retried answer only", ollama_generate_retry_whole)
    passed = sum(results)
    print(f"detect clients: {passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
