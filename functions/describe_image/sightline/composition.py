"""Composition root: validated settings and adapters, built once per cold start."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import boto3
import openai

from sightline.adapters.aws_clients import DeadlineGuard, bounded_client
from sightline.adapters.control_table import DynamoDBProviderBreaker, DynamoDBSpendLedger
from sightline.adapters.dynamodb import DynamoDBContentCache, DynamoDBResultStore
from sightline.adapters.model import OpenAIVisionModel
from sightline.adapters.openai_warmup import prime_openai_models
from sightline.adapters.page_renderer import ChildProcessPageRenderer
from sightline.adapters.results_bucket import S3ResultsBucket
from sightline.adapters.s3 import S3ObjectStore
from sightline.adapters.sns import SnsNotifier
from sightline.adapters.work_queue import SqsWorkQueue
from sightline.decode_budget import DecodeBudget, capacity_for
from sightline.errors import ConfigurationError, SightlineError
from sightline.pipeline import Pipeline
from sightline.pricing import load_prices
from sightline.profiles import ProfileSet, load_profiles_file
from sightline.redaction import register_secret
from sightline.settings import Settings, load_settings
from sightline.spend import SpendGuard

# One worker per record of a full SQS batch (10) plus room for multi-record messages:
# the model call waits on the network, so records are described concurrently.
WORKERS = 16
SECRET_MAX_AGE_SECONDS = 300
# Local OpenAI-compatible servers (vLLM, Ollama, the embedded OCR endpoint) ignore the key; the SDK needs one.
LOCAL_PLACEHOLDER_KEY = "no-key"

# Every AWS client of the functions: short timeouts, 3 attempts in all, and no attempt started that could outlive
# the invocation (the entry points set the deadline per invocation; see adapters/aws_clients.py).
AWS_CALLS = DeadlineGuard()
AWS_POOL_CONNECTIONS = WORKERS + 4  # every worker may hold one connection of a client at a time


def aws_client(service: str, session: boto3.session.Session | None = None, guard: DeadlineGuard | None = None) -> Any:
    return bounded_client(service, session, guard=guard or AWS_CALLS, max_pool_connections=AWS_POOL_CONNECTIONS)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    pipeline: Pipeline
    executor: ThreadPoolExecutor


def secret_api_key(secret_arn: str) -> str:
    """The key from Secrets Manager through powertools parameters (cached, refreshed every 5 minutes).

    The secret may be the bare key or JSON with an ``api_key`` field.
    """
    from aws_lambda_powertools.utilities import parameters

    try:
        value = _secrets().get(secret_arn, max_age=SECRET_MAX_AGE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        if isinstance(exc.__context__, SightlineError):  # the invocation's deadline, not the secret, stopped it
            raise exc.__context__ from None
        raise ConfigurationError(f"cannot read the model API key secret: {exc}") from None
    text = value.decode() if isinstance(value, bytes) else str(value)
    if text.lstrip().startswith("{"):
        try:
            text = str(json.loads(text)["api_key"])
        except (ValueError, KeyError):
            raise ConfigurationError("the model API key secret is JSON without an 'api_key' field") from None
    if not text.strip():
        raise ConfigurationError("the model API key secret is empty: put the key with put-secret-value")
    register_secret(text.strip())  # from now on no error message, record, notification or log line can carry it
    return text.strip()


@lru_cache(maxsize=1)
def _secrets() -> Any:
    """Powertools' secrets provider (its cache included) on a bounded client, not on its default one (60 s timeouts)."""
    from aws_lambda_powertools.utilities import parameters

    return parameters.SecretsProvider(boto3_client=aws_client("secretsmanager"))


def build_model_client(settings: Settings) -> openai.OpenAI:
    api_key: str | Callable[[], str]
    if settings.model_api_key_secret_arn:
        arn = settings.model_api_key_secret_arn
        api_key = lambda: secret_api_key(arn)  # noqa: E731 - the SDK calls it per request; the cache keeps it cheap
    else:
        if settings.model_api_key:
            register_secret(settings.model_api_key)  # redacted everywhere; the local placeholder is not a secret
        api_key = settings.model_api_key or LOCAL_PLACEHOLDER_KEY
    return openai.OpenAI(
        api_key=api_key,
        base_url=settings.model_base_url,
        timeout=settings.model_timeout_seconds,
        max_retries=0,  # our adapter retries within the invocation's time budget
    )


def build_spend_guard(settings: Settings, dynamodb: Any, profiles: ProfileSet | None = None) -> SpendGuard:
    """The bound on model calls in flight (always), the daily budget and the provider breaker (with CONTROL_TABLE).
    A budget in currency without a price for a model the function may call fails the cold start (SettingsError)."""
    table = settings.control_table
    ledger = DynamoDBSpendLedger(dynamodb, table) if table and settings.budget_enabled else None
    breaker = (
        DynamoDBProviderBreaker(
            dynamodb,
            table,
            failures=settings.breaker_failures,
            window_seconds=settings.breaker_window_seconds,
            cooldown_seconds=settings.breaker_cooldown_seconds,
        )
        if table and settings.breaker_enabled
        else None
    )
    every = [*profiles.profiles, profiles.default] if profiles is not None else []
    model_ids = [p.model for p in every if p is not None and p.model]
    return SpendGuard.from_settings(settings, ledger, breaker, load_prices(settings.pricing_file), model_ids=model_ids)


def build_pipeline(settings: Settings, session: boto3.session.Session | None = None) -> Pipeline:
    session = session or boto3.session.Session()
    guard = AWS_CALLS
    dynamodb = aws_client("dynamodb", session, guard)
    s3 = aws_client("s3", session, guard)
    profiles = load_profiles_file(settings.profiles_file)  # an invalid file fails the cold start, never an image
    results_bucket = S3ResultsBucket(s3, settings.results_bucket) if settings.results_bucket else None
    return Pipeline(
        settings=settings,
        objects=S3ObjectStore(s3, guard),
        results=DynamoDBResultStore(dynamodb, settings.results_table),
        cache=DynamoDBContentCache(dynamodb, settings.content_cache_table) if settings.content_cache_table else None,
        notifier=SnsNotifier(aws_client("sns", session, guard), settings.results_topic_arn),
        model=build_model(settings),
        profiles=profiles,
        renderer=ChildProcessPageRenderer.from_settings(settings),
        documents=results_bucket,
        work_queue=(
            SqsWorkQueue(aws_client("sqs", session, guard), settings.work_queue_url)
            if settings.work_queue_url and results_bucket is not None
            else None
        ),
        image_host=results_bucket if settings.model_image_transport == "url" else None,
        spend_guard=build_spend_guard(settings, dynamodb, profiles),
        decode_budget=DecodeBudget(capacity_for(settings.function_memory_mb)),
    )


def build_model(settings: Settings) -> OpenAIVisionModel:
    return OpenAIVisionModel(
        build_model_client(settings),
        settings.model_id,
        max_output_tokens=settings.model_max_output_tokens,
        timeout_seconds=settings.model_timeout_seconds,
        max_attempts=settings.model_max_attempts,
        output_mode=settings.model_output_mode,
        stream=settings.model_stream,
        stall_seconds=settings.model_stream_stall_seconds,
    )


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    """Built at the first invocation of a cold start and reused; never at import time."""
    settings = load_settings()
    # The SDK's pydantic models are built lazily; build them here, in one thread, before ten calls race to.
    prime_openai_models()
    return Runtime(
        settings=settings,
        pipeline=build_pipeline(settings),
        executor=ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="describe"),
    )
