"""The describe step, without AWS: bytes + options + a model port → a typed result with its usage.

Used by the Lambda pipeline (behind its claims and content cache) and by ``sightline describe`` on local files.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from sightline.answers import AnswerRules, ImageDescription, read_answer
from sightline.errors import (
    EmptyModelAnswerError,
    InvalidModelOutputError,
    ModelRefusedError,
    PermanentInputError,
    RepetitiveModelOutputError,
    TruncatedModelOutputError,
)
from sightline.imaging import prepare_image
from sightline.ports import ModelAnswer, ModelUsage, VisionModel
from sightline.prompt import PROMPT_VERSION, description_request, repair_request
from sightline.records import DescribeResult, image_item
from sightline.settings import Detail


@dataclass(frozen=True)
class DescribeOptions:
    """Everything that changes the answer (and so belongs in the content cache's key)."""

    model_id: str
    detail: Detail = "auto"
    max_image_pixels: int = 100_000_000
    max_output_tokens: int = 1024
    rules: AnswerRules = field(default_factory=AnswerRules)

    @property
    def fingerprint(self) -> str:
        return f"{self.model_id}|p{PROMPT_VERSION}|{self.detail}"

    def failure(self, error: PermanentInputError, usage: ModelUsage, **found: Any) -> DescribeResult:
        """A failed result that says why, with what was found before the failure (image facts, output mode)."""
        return DescribeResult.failed(
            error.error_type,
            error.message,
            usage=usage,
            model_id=self.model_id,
            detail=self.detail,
            prompt_version=PROMPT_VERSION,
            **found,
        )


def _checked(answer: ModelAnswer, limit: int, rules: AnswerRules) -> ImageDescription:
    """The validated description, or the permanent error that says why this answer cannot be used."""
    if answer.finish_reason == "repetition":
        raise RepetitiveModelOutputError("the streamed answer kept repeating itself and was stopped early")
    if answer.finish_reason == "length":
        raise TruncatedModelOutputError(f"the answer hit the output limit of {limit} tokens")
    return read_answer(answer.content, refusal=answer.refusal, tool_arguments=answer.tool_arguments, rules=rules)


def _validated_or_repaired(
    model: VisionModel, answer: ModelAnswer, options: DescribeOptions, deadline: float | None, usage: ModelUsage
) -> ImageDescription:
    try:
        return _checked(answer, options.max_output_tokens, options.rules)
    except (EmptyModelAnswerError, ModelRefusedError, TruncatedModelOutputError):
        raise  # nothing a format repair can fix (and an empty answer gives a repair nothing to work with)
    except InvalidModelOutputError as first:
        # One text-only repair: cheaper than the image again, and most format slips are fixable.
        repaired = model.complete(
            repair_request(answer.content, max_output_tokens=options.max_output_tokens), deadline, usage
        )
        try:
            return _checked(repaired, options.max_output_tokens, options.rules)
        except InvalidModelOutputError as second:
            raise type(second)(f"{first.message}; after one repair attempt: {second.message}") from None


def describe_image(
    body: bytes,
    options: DescribeOptions,
    model: VisionModel,
    *,
    deadline: float | None = None,
    usage: ModelUsage | None = None,
    prepare_slots: threading.Semaphore | None = None,
) -> DescribeResult:
    """Prepare the image, ask the model, validate the answer.

    Permanent problems (the image, or the model's answer for it) come back as a failed result; transient ones
    (provider outages, configuration) are raised, with every call made so far counted in ``usage``.
    """
    usage = usage if usage is not None else ModelUsage()
    image = None
    output_mode = None
    try:
        with prepare_slots or contextlib.nullcontext():
            image = prepare_image(body, options.detail, max_pixels=options.max_image_pixels)
        answer = model.complete(
            description_request(image, max_output_tokens=options.max_output_tokens), deadline, usage
        )
        output_mode = answer.output_mode
        description = _validated_or_repaired(model, answer, options, deadline, usage)
    except PermanentInputError as exc:
        return options.failure(exc, usage, image=image_item(image) if image else None, output_mode=output_mode)
    return DescribeResult(
        status="succeeded",
        model_id=options.model_id,
        detail=options.detail,
        prompt_version=PROMPT_VERSION,
        usage=usage,
        image=image_item(image),
        description=description,
        output_mode=output_mode,
    )
