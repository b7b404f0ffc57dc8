"""The describe step, without AWS: bytes + options + a model port → a typed result with its usage.

Used by the Lambda pipeline (behind its claims and content cache) and by ``sightline describe`` on local files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from sightline.answers import AnswerRules, ImageDescription, read_answer
from sightline.decode_budget import DecodeBudget
from sightline.errors import (
    EmptyModelAnswerError,
    InvalidModelOutputError,
    ModelRefusedError,
    PermanentInputError,
    RepetitiveModelOutputError,
    TruncatedModelOutputError,
)
from sightline.imaging import prepare_image
from sightline.ports import ImageHost, ModelAnswer, ModelRequest, ModelUsage, VisionModel
from sightline.profiles import DEFAULT_PROFILE_NAME, Profile, validate_fields
from sightline.prompt import PROMPT_VERSION, description_request, repair_request
from sightline.records import DescribeResult, image_item
from sightline.settings import Detail, Settings


@dataclass(frozen=True)
class DescribeOptions:
    """How to describe one object: the profile's choices, with the object's own overrides applied."""

    model_id: str
    detail: Detail = "auto"
    max_image_pixels: int = 100_000_000
    max_output_tokens: int = 1024
    rules: AnswerRules = field(default_factory=AnswerRules)  # task, language, alt-text limit, fields schema
    profile: str = DEFAULT_PROFILE_NAME
    instructions: str = ""
    context: str | None = None  # from the object's metadata: data for the model, never instructions

    @classmethod
    def for_profile(
        cls, profile: Profile, settings: Settings, *, language: str | None = None, context: str | None = None
    ) -> DescribeOptions:
        return cls(
            model_id=profile.model or settings.model_id,
            detail=profile.detail or settings.image_detail,  # type: ignore[arg-type]
            max_image_pixels=settings.max_image_pixels,
            max_output_tokens=settings.model_max_output_tokens,
            rules=AnswerRules(
                task=profile.task,
                language=language or profile.language,
                alt_text_max_chars=profile.alt_text_max_chars,
                fields_schema=profile.fields,
            ),
            profile=profile.name,
            instructions=profile.instructions,
            context=context or None,
        )

    @property
    def fingerprint(self) -> str:
        """Everything that changes the answer, so identical bytes are shared only when the answer would be too."""
        answer_inputs = {
            "task": self.rules.task,
            "language": self.rules.language,
            "alt_text_max_chars": self.rules.alt_text_max_chars,
            "fields": self.rules.fields_schema,
            "instructions": self.instructions,
            "context": self.context,
            "max_output_tokens": self.max_output_tokens,
        }
        digest = hashlib.sha256(json.dumps(answer_inputs, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.model_id}|p{PROMPT_VERSION}|{self.detail}|{digest}"

    def result_facts(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "detail": self.detail,
            "prompt_version": PROMPT_VERSION,
            "profile": self.profile,
            "task": self.rules.task,
            "language": self.rules.language,
            "context_used": self.context is not None,
        }

    def failure(self, error: PermanentInputError, usage: ModelUsage, **found: Any) -> DescribeResult:
        """A failed result that says why, with what was found before the failure (image facts, output mode)."""
        return DescribeResult.failed(error.error_type, error.message, usage=usage, **self.result_facts(), **found)


def checked_answer(answer: ModelAnswer, limit: int) -> None:
    """Refuse an answer that did not end on its own: stopped for repeating itself, or cut at the output limit."""
    if answer.finish_reason == "repetition":
        raise RepetitiveModelOutputError("the streamed answer kept repeating itself and was stopped early")
    if answer.finish_reason == "length":
        raise TruncatedModelOutputError(f"the answer hit the output limit of {limit} tokens")


def with_image_urls(request: ModelRequest, urls: list[str]) -> ModelRequest:
    """The request with its image parts, in order, pointing at ``urls`` instead of inline base64 data URLs.
    Raises ValueError when the number of URLs is not the number of images."""
    images = sum(
        1
        for message in request.messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    )
    if images != len(urls):
        raise ValueError(f"{len(urls)} image URLs for {images} images")
    remaining = iter(urls)
    messages = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {**part, "image_url": {**part["image_url"], "url": next(remaining)}}
                if part.get("type") == "image_url"
                else part
                for part in content
            ]
            message = {**message, "content": content}
        messages.append(message)
    return replace(request, messages=messages)


def _checked(answer: ModelAnswer, limit: int, rules: AnswerRules) -> ImageDescription:
    """The validated description, or the permanent error that says why this answer cannot be used."""
    checked_answer(answer, limit)
    description = read_answer(answer.content, refusal=answer.refusal, tool_arguments=answer.tool_arguments, rules=rules)
    if rules.task != "document" or rules.fields_schema is None:
        return replace(description, fields=None)
    # Extraction: every declared field present, a value the model could not find (or got wrong) is null.
    fields, notes = validate_fields(rules.fields_schema, description.fields)
    return replace(description, fields=fields, adjustments=(*description.adjustments, *notes))


def _validated_or_repaired(
    model: VisionModel, answer: ModelAnswer, options: DescribeOptions, deadline: float | None, usage: ModelUsage
) -> ImageDescription:
    try:
        return _checked(answer, options.max_output_tokens, options.rules)
    except (EmptyModelAnswerError, ModelRefusedError, TruncatedModelOutputError):
        raise  # nothing a format repair can fix (and an empty answer gives a repair nothing to work with)
    except InvalidModelOutputError as first:
        # One text-only repair: cheaper than the image again, and most format slips are fixable.
        repair = repair_request(answer.content, options.rules, max_output_tokens=options.max_output_tokens)
        repaired = model.complete(replace(repair, model_id=options.model_id), deadline, usage)
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
    decode_budget: DecodeBudget | None = None,
    image_host: ImageHost | None = None,
) -> DescribeResult:
    """Prepare the image, ask the model, validate the answer.

    Permanent problems (the image, or the model's answer for it) come back as a failed result; transient ones
    (provider outages, configuration) are raised, with every call made so far counted in ``usage``.
    """
    usage = usage if usage is not None else ModelUsage()
    image = None
    output_mode = None
    try:
        # Decoding is the memory-hungry step: it waits for room in the instance's decode budget.
        image = prepare_image(
            body,
            options.detail,
            max_pixels=options.max_image_pixels,
            reserve=decode_budget.reserve if decode_budget else None,
        )
        request = description_request(
            image,
            options.rules,
            instructions=options.instructions,
            context=options.context,
            max_output_tokens=options.max_output_tokens,
        )
        request = replace(request, model_id=options.model_id)
        if image_host is not None:  # the guide's second way: a short-lived URL instead of the base64 body
            request = with_image_urls(request, [image_host.url_for(image.jpeg)])
        answer = model.complete(request, deadline, usage)
        output_mode = answer.output_mode
        description = _validated_or_repaired(model, answer, options, deadline, usage)
    except PermanentInputError as exc:
        return options.failure(exc, usage, image=image_item(image) if image else None, output_mode=output_mode)
    return DescribeResult(
        status="succeeded",
        **options.result_facts(),
        usage=usage,
        image=image_item(image),
        description=description,
        output_mode=output_mode,
    )
