"""Build the openai SDK's lazily built pydantic models once, in one thread, before the first concurrent calls.

The SDK declares its response models with `defer_build=True`: each model's schema, validator and serializer
are built on first use, and the first `chat.completions.create` also fills the SDK's TypeAdapter and
discriminator caches. Before pydantic 2.14, `model_rebuild()` was not thread-safe: while one thread rebuilt a
model, another could see its half-rebuilt class and fail with `PydanticUserError` (or an AttributeError on
`__pydantic_core_schema__`). A cold start that fans out ~10 model calls at once hits exactly that.

pydantic 2.14 fixes that (model_rebuild() takes a lock); this guards whatever pydantic the layer meets, older
ones included. Call `prime_openai_models()` once from the composition root, before any thread pool starts. It
costs a few tens of milliseconds once per execution environment, about half of it importing the chat resource
modules that the first call would import anyway; it touches no network and never raises.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

__all__ = ["prime_openai_models"]

# A response with every branch of ChatCompletion the chat path can meet filled in, so that construct_type()
# visits (and so builds) each nested model and fills the SDK's caches for the unions on the way.
_LOGPROB: dict[str, Any] = {
    "token": "a",
    "bytes": [97],
    "logprob": -0.1,
    "top_logprobs": [{"token": "a", "bytes": [97], "logprob": -0.1}],
}
_TOOL_CALL: dict[str, Any] = {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
_USAGE: dict[str, Any] = {
    "prompt_tokens": 1,
    "completion_tokens": 1,
    "total_tokens": 2,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-warmup",
    "object": "chat.completion",
    "created": 0,
    "model": "warmup",
    "system_fingerprint": "fp_warmup",
    "service_tier": "default",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": {"content": [_LOGPROB], "refusal": None},
            "message": {
                "role": "assistant",
                "content": "{}",
                "refusal": None,
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {"start_index": 0, "end_index": 1, "title": "t", "url": "https://example.com"},
                    }
                ],
                "audio": {"id": "a", "data": "", "expires_at": 0, "transcript": ""},
                "function_call": {"name": "f", "arguments": "{}"},
                "tool_calls": [_TOOL_CALL],
            },
        }
    ],
    "usage": _USAGE,
}
_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-warmup",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "warmup",
    "system_fingerprint": "fp_warmup",
    "service_tier": "default",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": {"content": [_LOGPROB], "refusal": None},
            "delta": {
                "role": "assistant",
                "content": "{}",
                "refusal": None,
                "function_call": {"name": "f", "arguments": "{}"},
                "tool_calls": [{"index": 0, **_TOOL_CALL}],
            },
        }
    ],
    "usage": _USAGE,
}
# The request body as the adapter sends it: a system message and a user message with an image and a text part.
_REQUEST: dict[str, Any] = {
    "model": "warmup",
    "messages": [
        {"role": "system", "content": "s"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,", "detail": "low"}},
                {"type": "text", "text": "t"},
            ],
        },
    ],
    "max_tokens": 1,
    "temperature": 0,
}


def prime_openai_models() -> None:
    """Build, in this thread, the pydantic models and caches that the first chat.completions.create needs.

    Never raises: a failure here only means the first calls build them themselves, as they would anyway.
    """
    with contextlib.suppress(Exception):  # By contract: a warm-up is an optimisation, never a cause of failure.
        _prime()


def _prime() -> None:
    # 0. The chat resource, which the client imports on its first `.chat` (as below; the package exports lazily):
    #    its modules parametrise generic models at import (ParsedChatCompletion[object], the pages), i.e. rebuilds.
    from openai._models import add_request_id, construct_type
    from openai.resources.chat import Chat  # noqa: F401
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    # 1. Complete every deferred model class a chat response can contain, not only those in the samples below.
    for model in _reachable_models((ChatCompletion, ChatCompletionChunk)):
        # A no-op (returns None) once the model is complete; one model that cannot be built must not stop the rest.
        with contextlib.suppress(Exception):
            model.model_rebuild(raise_errors=False)

    # 2. The SDK's own response path (construct_type, as _process_response_data does, then add_request_id): fills
    #    its TypeAdapter cache for the unions on the way and its discriminator cache. Then strict validation, which
    #    clients built with _strict_response_validation use.
    for model, payload in ((ChatCompletion, _COMPLETION), (ChatCompletionChunk, _CHUNK)):
        with contextlib.suppress(Exception):
            add_request_id(construct_type(type_=model, value=payload), "req_warmup")  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            model.model_validate(payload)

    # 3. The request side: the body transform (the SDK caches the type hints of each TypedDict it meets).
    with contextlib.suppress(Exception):
        from openai._utils import maybe_transform
        from openai.types.chat import completion_create_params

        maybe_transform(_REQUEST, completion_create_params.CompletionCreateParamsNonStreaming)


def _reachable_models(roots: Iterable[Any]) -> list[type[pydantic.BaseModel]]:
    """Every pydantic model class reachable from the roots through field annotations, leaves first.

    Leaves first, so that a model's schema reuses the already built schemas of the models in its fields
    instead of generating them again inline.
    """
    import pydantic

    seen: set[int] = set()
    models: list[type[pydantic.BaseModel]] = []

    def visit(annotation: Any, depth: int) -> None:
        if id(annotation) in seen or depth > 50:
            return
        seen.add(id(annotation))
        for arg in typing.get_args(annotation):  # unions, Optional, List, Dict, Annotated, Literal
            visit(arg, depth + 1)
        value = getattr(annotation, "__value__", None)  # a TypeAliasType
        if value is not None:
            visit(value, depth + 1)
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            for field in annotation.model_fields.values():
                visit(field.annotation, depth + 1)
            models.append(annotation)

    for root in roots:
        visit(root, 0)
    return models
