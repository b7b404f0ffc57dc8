"""Streaming on or off: what each costs for a normal answer, a stalled provider and a runaway answer.

Runs the real adapter (OpenAIVisionModel, one attempt) through the real openai client against the loopback
model server, scripted to generate at a steady pace (by default ~500 tokens in 2 s, ~4 characters a token):

* complete  a normal answer: streaming costs nothing in wall time;
* stall     the provider goes quiet after 100 tokens: streamed, the stall guard (MODEL_STREAM_STALL_SECONDS)
            ends the attempt; not streamed, nothing is seen until the whole timeout (MODEL_TIMEOUT_SECONDS);
* runaway   the model repeats one phrase until the output limit: streamed, the repetition guard cuts it off
            after a few hundred characters; not streamed, it runs (and is billed) to max_tokens.

Defaults are the function's own defaults (timeout 30 s, stall 15 s, 1,024 output tokens), so a run takes about
a minute; ``--timeout-seconds 10 --stall-seconds 3`` makes it quicker.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "functions" / "describe_image", ROOT):  # runnable as a script, as well as from the Makefile
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import openai  # noqa: E402

from devkit.model_server import ChatRequest, ModelServer, Reply, completion, stream_reply  # noqa: E402
from sightline.adapters.model import OpenAIVisionModel  # noqa: E402
from sightline.errors import SightlineError  # noqa: E402
from sightline.ports import ModelRequest, ModelUsage  # noqa: E402

CHARS_PER_TOKEN = 4
STALL_AFTER_TOKENS = 100
RUNAWAY_PHRASE = "The image shows a cat. "
REQUEST = ModelRequest(messages=[{"role": "user", "content": "Describe the image as JSON."}])


def _answer_pieces(tokens: int, seed: int = 7) -> list[str]:
    """A JSON answer of about ``tokens`` tokens, as ~4-character pieces that never repeat as a whole."""
    rng = random.Random(seed)
    words = ["red", "bicycle", "street", "window", "light", "tree", "sign", "person", "shadow", "door", "blue", "car"]
    text: list[str] = []
    while sum(map(len, text)) < tokens * CHARS_PER_TOKEN - 40:
        text.append(f"{rng.choice(words)}{rng.randint(0, 999)} ")
    content = json.dumps({"description": "".join(text).strip(), "alt_text": "A street", "text": "", "tags": []})
    return [content[i : i + CHARS_PER_TOKEN] for i in range(0, len(content), CHARS_PER_TOKEN)]


@dataclass
class Scenario:
    """What the scripted model does: ``pieces`` at ``seconds_per_piece``, optionally stalling or running away."""

    pieces: list[str]
    seconds_per_piece: float
    stall_after: int | None = None
    finish_reason: str = "stop"

    def __call__(self, request: ChatRequest) -> Reply:
        usage = (900, len(self.pieces))
        if request.stream:
            return stream_reply(
                self.pieces,
                usage=usage if request.include_usage else None,
                finish_reason=self.finish_reason,
                delay_between=self.seconds_per_piece,
                first_delay=self.seconds_per_piece,
                stall_after=self.stall_after,
                stall_seconds=3600,
            )
        if self.stall_after is not None:
            return Reply(delay_seconds=3600)  # never answers; closing the server wakes it
        content = "".join(self.pieces)
        body = completion(
            content, model="bench", prompt_tokens=usage[0], completion_tokens=usage[1], finish_reason=self.finish_reason
        )
        return Reply(delay_seconds=self.seconds_per_piece * len(self.pieces), body=body)


@dataclass
class Outcome:
    seconds: float
    result: str  # finish_reason, or the error's type
    completion_tokens: str  # as reported, or estimated from what arrived


def _run(server: ModelServer, scenario: Scenario, *, stream: bool, args: argparse.Namespace) -> Outcome:
    server.responder = scenario
    client = openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
    vision = OpenAIVisionModel(
        client,
        "bench",
        max_output_tokens=args.max_tokens,
        timeout_seconds=args.timeout_seconds,
        max_attempts=1,
        stream=stream,
        stall_seconds=args.stall_seconds,
    )
    usage = ModelUsage()
    started = time.monotonic()
    try:
        answer = vision.complete(REQUEST, None, usage)
        result = answer.finish_reason or "?"
        if answer.completion_tokens is not None:
            tokens = f"{answer.completion_tokens:,}"
        else:
            tokens = f"≈{len(answer.content) // CHARS_PER_TOKEN:,} (cut off)"
    except SightlineError as error:
        result, tokens = error.error_type, "?"
    finally:
        client.close()
    return Outcome(time.monotonic() - started, result, tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--answer-tokens", type=int, default=500)
    parser.add_argument("--answer-seconds", type=float, default=2.0)
    parser.add_argument("--timeout-seconds", type=float, default=30.0, help="MODEL_TIMEOUT_SECONDS")
    parser.add_argument("--stall-seconds", type=float, default=15.0, help="MODEL_STREAM_STALL_SECONDS")
    parser.add_argument("--max-tokens", type=int, default=1024, help="MODEL_MAX_OUTPUT_TOKENS")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the normal answer (median shown)")
    args = parser.parse_args(argv)

    pieces = _answer_pieces(args.answer_tokens)
    pace = args.answer_seconds / len(pieces)
    runaway_pieces = [RUNAWAY_PHRASE[i : i + CHARS_PER_TOKEN] for i in range(0, len(RUNAWAY_PHRASE), 4)]
    runaway = (runaway_pieces * args.max_tokens)[: args.max_tokens]
    scenarios = {
        f"complete: {len(pieces)} tokens in {args.answer_seconds:g} s": Scenario(pieces, pace),
        f"stall after {STALL_AFTER_TOKENS} tokens": Scenario(pieces, pace, stall_after=STALL_AFTER_TOKENS),
        f"runaway repetition to {args.max_tokens:,} tokens": Scenario(runaway, pace, finish_reason="length"),
    }
    print(
        f"loopback model, {1 / pace:.0f} tokens/s; one attempt; timeout {args.timeout_seconds:g} s,"
        f" stall guard {args.stall_seconds:g} s, max_tokens {args.max_tokens:,}"
    )
    header = f"{'scenario':<38} {'stream':<6} {'seconds':>8}  {'result':<24} completion tokens"
    print(header)
    print("-" * len(header))
    with ModelServer(Scenario(pieces, pace)) as server:
        for name, scenario in scenarios.items():
            for stream in (False, True):
                rounds = args.rounds if scenario.stall_after is None and scenario.finish_reason == "stop" else 1
                outcomes = [_run(server, scenario, stream=stream, args=args) for _ in range(rounds)]
                seconds = statistics.median(o.seconds for o in outcomes)
                last = outcomes[-1]
                print(
                    f"{name:<38} {'on' if stream else 'off':<6} {seconds:>8.2f}  {last.result:<24} {last.completion_tokens}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
