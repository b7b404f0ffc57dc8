"""A cold start's first model calls, all at once: ten threads, one fresh interpreter, the real openai client.

The openai SDK builds its pydantic response models lazily, on first use. Before pydantic 2.14 that rebuild was
not thread-safe: while one thread rebuilt a model, another saw it half-rebuilt and failed with
`PydanticUserError` ("BaseModel cannot be instantiated directly", or "... is not fully defined") or with an
AttributeError on `__pydantic_core_schema__`. The function fans out ~10 model calls at a cold start, so on the
built arm64 function some of the first calls failed.

Only a fresh interpreter has unbuilt models, hence one subprocess per cold start. Two things make the race
show on a fast machine as it does on a Lambda's slower CPU: the loopback server holds the replies until all ten
requests have arrived, so that the ten responses are parsed at the same moment, and the subprocess shortens the
interpreter's thread switch interval (5 ms by default, longer than a model rebuild takes here), so that the
threads interleave inside the rebuilds. With pydantic 2.13.5 between one subprocess in ten and one in three then
failed on a 2-core x86 development machine, depending on its load; at the default switch interval, none of 100.
So a pass proves little on its own, but a regression shows within a few runs: the layer pins pydantic 2.14.4,
and the function also builds the models in one thread at cold start (prime_openai_models); both variants must
pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from devkit.model_server import ChatRequest, ModelServer, Reply, ScriptedResponder, default_reply

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FUNCTION_DIR = REPO / "functions" / "describe_image"
CALLS = 10
# Cold starts per test, each its own process, run side by side. Without the warm-up each one is a fresh chance
# for the race, so the unprimed test runs more of them.
COLD_STARTS = {"unprimed": 3, "primed": 1}
RUN_HEADER = "X-Cold-Start-Run"
# Seconds between forced thread switches in the subprocess (sys.setswitchinterval); see the module docstring.
SWITCH_INTERVAL = 1e-5

# The cold start: a fresh interpreter, one client, CALLS first calls released together by a barrier.
COLD_START = r"""
import collections, json, sys, threading
from concurrent.futures import ThreadPoolExecutor

base_url, run_id, prime, switch_interval, calls = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4]), int(sys.argv[5])
sys.setswitchinterval(switch_interval)
if prime:
    from sightline.adapters.openai_warmup import prime_openai_models

    prime_openai_models()
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from openai.types.completion_usage import CompletionUsage

    models = (ChatCompletion, Choice, ChatCompletionMessage, CompletionUsage, ChatCompletionChunk)
    unbuilt = [model.__name__ for model in models if not model.__pydantic_complete__]
else:
    unbuilt = []

import openai

client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, default_headers={"X-Cold-Start-Run": run_id})
start = threading.Barrier(calls)


def call(_):
    start.wait(timeout=30)
    response = client.with_options(timeout=30).chat.completions.create(
        model="sightline-devkit",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Describe this image as JSON."}]}],
        max_tokens=100,
        temperature=0,
    )
    return response.choices[0].message.content


succeeded, errors = 0, collections.Counter()
with ThreadPoolExecutor(calls) as pool:
    for future in [pool.submit(call, i) for i in range(calls)]:
        try:
            future.result()
            succeeded += 1
        except Exception as exc:
            errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"] += 1
print(json.dumps({"succeeded": succeeded, "errors": dict(errors), "unbuilt_after_prime": unbuilt}))
"""


class SimultaneousReplies:
    """Holds each run's replies until all its CALLS requests have arrived (or 5 s passed), then answers them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._barriers: dict[str, threading.Barrier] = {}

    def __call__(self, request: ChatRequest) -> Reply:
        run = request.headers.get(RUN_HEADER, "")
        with self._lock:
            barrier = self._barriers.setdefault(run, threading.Barrier(CALLS))
        with contextlib.suppress(threading.BrokenBarrierError):  # A call failed before sending: answer the rest.
            barrier.wait(timeout=5)
        return default_reply(request)


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    with ModelServer(ScriptedResponder(default=SimultaneousReplies())) as server:
        yield server


def cold_start(base_url: str, *, prime: bool) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "DEFER_PYDANTIC"))}
    env["PYTHONPATH"] = os.pathsep.join([str(FUNCTION_DIR), str(REPO)])
    args = [base_url, uuid.uuid4().hex, "1" if prime else "0", repr(SWITCH_INTERVAL), str(CALLS)]
    done = subprocess.run(
        [sys.executable, "-c", COLD_START, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_layer_pins_a_pydantic_whose_model_rebuild_is_thread_safe() -> None:
    # The race is pydantic's, fixed in 2.14 (model_rebuild() takes a lock); the warm-up is the second guard.
    assert tuple(int(part) for part in metadata.version("pydantic").split(".")[:2]) >= (2, 14)


@pytest.mark.parametrize("variant", ["unprimed", "primed"])
def test_ten_concurrent_first_calls_all_succeed(server: ModelServer, variant: str) -> None:
    """All CALLS first calls of each cold start succeed, with and without prime_openai_models() first."""
    runs = COLD_STARTS[variant]
    with ThreadPoolExecutor(runs) as pool:
        results = list(pool.map(lambda _: cold_start(server.base_url, prime=variant == "primed"), range(runs)))
    assert [r["succeeded"] for r in results] == [CALLS] * runs, [r["errors"] for r in results if r["errors"]]
    # The warm-up did build the models, rather than fail quietly (it swallows every exception by design).
    assert [r["unbuilt_after_prime"] for r in results] == [[]] * runs
