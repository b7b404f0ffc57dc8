"""Model adapter: an OpenAI-compatible /chat/completions call with our own timeout and retry policy.

The SDK's own retries are off (max_retries=0): its default timeout is 10 minutes and it honours
Retry-After up to two minutes, neither of which fits inside a Lambda invocation. Here every attempt
and every wait is bounded by the time the invocation has left.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from typing import Any

import openai

from sightline.errors import (
    ConfigurationError,
    InvalidModelOutputError,
    ModelRejectedImageError,
    ModelUnavailableError,
)
from sightline.pipeline import ModelAnswer

# Below this much time for an attempt we do not start one: it would only end in a timeout.
MIN_ATTEMPT_SECONDS = 2.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After as seconds: `retry-after-ms`, `retry-after` in seconds, or an HTTP date."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _error_detail(exc: openai.APIStatusError) -> str:
    message = getattr(exc, "message", "") or str(exc)
    return f"HTTP {exc.status_code}: {message}"[:500]


class OpenAIVisionModel:
    def __init__(
        self,
        client: openai.OpenAI,
        model_id: str,
        *,
        max_output_tokens: int,
        timeout_seconds: float,
        max_attempts: int,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._model_id = model_id
        self._max_output_tokens = max_output_tokens
        self._timeout_seconds = timeout_seconds
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._clock = clock

    def complete(self, messages: list[dict[str, Any]], deadline: float | None) -> ModelAnswer:
        """One answer, retrying 429/5xx/timeouts/connection errors while the deadline (a clock() value) allows."""
        last_error = "no attempt made"
        for attempt in range(1, self._max_attempts + 1):
            timeout = self._timeout_seconds
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining < MIN_ATTEMPT_SECONDS:
                    raise ModelUnavailableError(f"no time left for a model call ({last_error})")
                timeout = min(timeout, remaining)
            started = self._clock()
            try:
                response = self._client.with_options(timeout=timeout, max_retries=0).chat.completions.create(
                    model=self._model_id,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=self._max_output_tokens,
                    temperature=0,
                )
                return self._answer(response, started)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise ConfigurationError(f"the model endpoint refused our configuration: {_error_detail(exc)}") from exc
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                raise ModelRejectedImageError(f"the model rejected the request: {_error_detail(exc)}") from exc
            except openai.RateLimitError as exc:
                last_error = _error_detail(exc)
                wait = retry_after_seconds(exc.response.headers)
            except openai.APIStatusError as exc:
                last_error = _error_detail(exc)
                wait = None
            except openai.APITimeoutError:
                last_error = f"timed out after {timeout:.1f}s"
                wait = None
            except openai.APIConnectionError as exc:
                last_error = f"connection failed: {exc}"
                wait = None
            if attempt == self._max_attempts:
                break
            if wait is None:
                # Full jitter keeps a fleet of functions from retrying in lockstep.
                wait = random.uniform(0, min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))
            if deadline is not None and self._clock() + wait + MIN_ATTEMPT_SECONDS > deadline:
                raise ModelUnavailableError(f"{last_error}; the wait of {wait:.1f}s does not fit in the time left")
            self._sleep(wait)
        raise ModelUnavailableError(f"{last_error} (after {self._max_attempts} attempts)")

    def _answer(self, response: Any, started: float) -> ModelAnswer:
        latency_ms = int((self._clock() - started) * 1000)
        if not getattr(response, "choices", None):
            raise InvalidModelOutputError("the model's response has no choices")
        choice = response.choices[0]
        if choice.finish_reason == "content_filter":
            raise ModelRejectedImageError("the provider's content filter stopped the answer")
        usage = getattr(response, "usage", None)
        return ModelAnswer(
            content=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
            completion_tokens=getattr(usage, "completion_tokens", None) if usage else None,
            latency_ms=latency_ms,
        )
