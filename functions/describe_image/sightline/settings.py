"""The function's configuration contract: environment variable names, defaults and validation."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sightline.errors import SettingsError
from sightline.ports import OUTPUT_MODE_SETTINGS, OutputModeSetting

# The documented interface (README, template.yaml). Keep these names.
RESULTS_TABLE = "RESULTS_TABLE"
RESULTS_TOPIC_ARN = "RESULTS_TOPIC_ARN"
CONTENT_CACHE_TABLE = "CONTENT_CACHE_TABLE"  # optional: without it identical bytes are described again
MODEL_BASE_URL = "MODEL_BASE_URL"
MODEL_ID = "MODEL_ID"
IMAGE_DETAIL = "IMAGE_DETAIL"
MODEL_API_KEY_SECRET_ARN = "MODEL_API_KEY_SECRET_ARN"
MODEL_API_KEY = "MODEL_API_KEY"  # local runs only; the deployed stack reads the secret
OBJECT_KEY_SUFFIXES = "OBJECT_KEY_SUFFIXES"
MAX_OBJECT_BYTES = "MAX_OBJECT_BYTES"
MAX_IMAGE_PIXELS = "MAX_IMAGE_PIXELS"
MODEL_TIMEOUT_SECONDS = "MODEL_TIMEOUT_SECONDS"
MODEL_MAX_ATTEMPTS = "MODEL_MAX_ATTEMPTS"
MODEL_MAX_OUTPUT_TOKENS = "MODEL_MAX_OUTPUT_TOKENS"
MODEL_OUTPUT_MODE = "MODEL_OUTPUT_MODE"  # auto | json_schema | json_object | off
MODEL_STREAM = "MODEL_STREAM"  # true | false
MODEL_STREAM_STALL_SECONDS = "MODEL_STREAM_STALL_SECONDS"
PROFILES_FILE = "PROFILES_FILE"  # optional: the YAML file of profiles; default the one bundled with the function
# Documents (PDF, multi-page TIFF) and the image transport.
RESULTS_BUCKET = "RESULTS_BUCKET"  # where document results (JSON + Markdown) and URL-mode images are written
WORK_QUEUE_URL = "WORK_QUEUE_URL"  # where long documents' page ranges are sent (the uploads queue)
DOCUMENT_MAX_PAGES = "DOCUMENT_MAX_PAGES"
DOCUMENT_RANGE_PAGES = "DOCUMENT_RANGE_PAGES"
DOCUMENT_CONCURRENCY = "DOCUMENT_CONCURRENCY"
DOCUMENT_TEXT_ANCHOR = "DOCUMENT_TEXT_ANCHOR"  # true | false
MODEL_IMAGE_TRANSPORT = "MODEL_IMAGE_TRANSPORT"  # base64 | url
RENDER_MEMORY_MB = "RENDER_MEMORY_MB"
# Set by Lambda: the function's memory, which the decode budget is a share of (the template's 2048 locally).
FUNCTION_MEMORY_MB = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
RENDER_PAGE_SECONDS = "RENDER_PAGE_SECONDS"
RENDER_DOCUMENT_SECONDS = "RENDER_DOCUMENT_SECONDS"
# Spend control: model calls in flight, the daily budget and the provider's shared circuit breaker.
MODEL_CONCURRENCY = "MODEL_CONCURRENCY"  # model calls in flight per function instance
CONTROL_TABLE = "CONTROL_TABLE"  # budget counters and breaker state; without it neither applies
BUDGET_DAILY_LIMIT = "BUDGET_DAILY_LIMIT"  # per UTC day, for the stack; 0 or empty: no cap
BUDGET_UNIT = "BUDGET_UNIT"  # tokens | usd (any currency of the pricing table)
BUDGET_PROFILE_LIMITS = "BUDGET_PROFILE_LIMITS"  # "alt-text=200000,documents=5000000", in BUDGET_UNIT
BREAKER_FAILURES = "BREAKER_FAILURES"  # provider failures (429/5xx/timeouts) in a window that open it; 0: off
BREAKER_WINDOW_SECONDS = "BREAKER_WINDOW_SECONDS"
BREAKER_COOLDOWN_SECONDS = "BREAKER_COOLDOWN_SECONDS"
PRICING_FILE = "PRICING_FILE"  # optional: default the pricing.toml bundled with the function

# functions/describe_image/profiles.yaml: /var/task/profiles.yaml in the deployed function.
BUNDLED_PROFILES_FILE = str(Path(__file__).resolve().parent.parent / "profiles.yaml")

DEFAULT_MODEL_BASE_URL = "https://api.novita.ai/openai"
DEFAULT_MODEL_ID = "qwen/qwen2.5-vl-72b-instruct"

# Records hold one status per page: bounded so any page count fits a DynamoDB item and an SNS message.
MAX_DOCUMENT_PAGES = 5_000
ImageTransport = Literal["base64", "url"]
IMAGE_TRANSPORTS: tuple[ImageTransport, ...] = ("base64", "url")
BudgetUnit = Literal["tokens", "usd"]
BUDGET_UNITS: tuple[BudgetUnit, ...] = ("tokens", "usd")

Detail = Literal["low", "high", "auto"]
DETAILS: tuple[Detail, ...] = ("low", "high", "auto")


@dataclass(frozen=True)
class Settings:
    results_table: str
    results_topic_arn: str
    content_cache_table: str | None = None
    model_base_url: str = DEFAULT_MODEL_BASE_URL
    model_id: str = DEFAULT_MODEL_ID
    image_detail: Detail = "auto"
    model_api_key_secret_arn: str | None = None
    model_api_key: str | None = field(default=None, repr=False)  # never in logs
    object_key_suffixes: tuple[str, ...] = ()
    max_object_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000
    model_timeout_seconds: float = 30.0
    model_max_attempts: int = 3
    model_max_output_tokens: int = 1024
    model_output_mode: OutputModeSetting = "auto"
    model_stream: bool = True  # measured: see the README's "Streaming" section
    model_stream_stall_seconds: float = 15.0
    profiles_file: str = BUNDLED_PROFILES_FILE
    results_bucket: str | None = None
    work_queue_url: str | None = None  # without it a long document is described in one invocation
    document_max_pages: int = 500
    document_range_pages: int = 8  # pages one invocation describes; longer documents fan out in ranges
    document_concurrency: int = 4  # model requests in flight per document range
    document_text_anchor: bool = True
    model_image_transport: ImageTransport = "base64"
    render_memory_mb: int = 1024
    function_memory_mb: int = 2048
    render_page_seconds: float = 15.0
    render_document_seconds: float = 90.0
    model_concurrency: int = 10
    control_table: str | None = None
    budget_daily_limit: float = 0.0  # 0: no cap for the stack
    budget_unit: BudgetUnit = "tokens"
    budget_profile_limits: tuple[tuple[str, float], ...] = ()
    breaker_failures: int = 20
    breaker_window_seconds: int = 60
    breaker_cooldown_seconds: int = 120
    pricing_file: str | None = None  # None: the bundled pricing.toml

    @property
    def budget_enabled(self) -> bool:
        return self.control_table is not None and (self.budget_daily_limit > 0 or bool(self.budget_profile_limits))

    @property
    def breaker_enabled(self) -> bool:
        return self.control_table is not None and self.breaker_failures > 0

    def accepts_key(self, key: str) -> bool:
        """Suffix filter, case-insensitive (S3's own suffix filter is case-sensitive)."""
        if not self.object_key_suffixes:
            return True
        return key.lower().endswith(self.object_key_suffixes)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is required and empty")
    return value


def _number(env: Mapping[str, str], name: str, default: float, minimum: float, cast: type = int) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return cast(default)
    try:
        value = cast(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _bounded_number(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    value: int = _number(env, name, default, minimum)
    if value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _profile_limits(env: Mapping[str, str]) -> tuple[tuple[str, float], ...]:
    """``name=limit,name=limit``: a daily cap per profile, in BUDGET_UNIT."""
    limits: dict[str, float] = {}
    for part in env.get(BUDGET_PROFILE_LIMITS, "").split(","):
        if not part.strip():
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        try:
            value = float(raw) if sep and name else -1.0
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value <= 0:
            raise SettingsError(f"{BUDGET_PROFILE_LIMITS} must be name=limit pairs with limits above 0, got {part!r}")
        if name in limits:
            raise SettingsError(f"{BUDGET_PROFILE_LIMITS} names the profile {name!r} twice")
        limits[name] = value
    return tuple(limits.items())


def load_settings(env: Mapping[str, str] | None = None, *, require_stack: bool = True) -> Settings:
    """Read and validate settings once, at cold start: a missing table name fails here, not at the first write.

    ``require_stack=False`` is for describing local files, where there is no table or topic.
    """
    env = os.environ if env is None else env
    stack = _required if require_stack else (lambda values, name: values.get(name, "").strip())
    raw_detail = env.get(IMAGE_DETAIL, "auto").strip().lower() or "auto"
    detail = next((d for d in DETAILS if d == raw_detail), None)
    if detail is None:
        raise SettingsError(f"{IMAGE_DETAIL} must be one of {', '.join(DETAILS)}, got {raw_detail!r}")
    secret_arn = env.get(MODEL_API_KEY_SECRET_ARN, "").strip() or None
    api_key = env.get(MODEL_API_KEY, "").strip() or None
    if secret_arn and api_key:
        raise SettingsError(f"set {MODEL_API_KEY_SECRET_ARN} or {MODEL_API_KEY}, not both")
    base_url = env.get(MODEL_BASE_URL, "").strip() or DEFAULT_MODEL_BASE_URL
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError(f"{MODEL_BASE_URL} must be an http(s) URL, got {base_url!r}")
    transport = _choice(env, MODEL_IMAGE_TRANSPORT, IMAGE_TRANSPORTS, "base64")
    if transport == "url" and not env.get(RESULTS_BUCKET, "").strip():
        raise SettingsError(f"{MODEL_IMAGE_TRANSPORT}=url needs {RESULTS_BUCKET}: the images are staged there")
    suffixes = tuple(s.strip().lower() for s in env.get(OBJECT_KEY_SUFFIXES, "").split(",") if s.strip())
    budget_limit: float = _number(env, BUDGET_DAILY_LIMIT, 0.0, 0.0, float)
    if not math.isfinite(budget_limit):
        raise SettingsError(f"{BUDGET_DAILY_LIMIT} must be a finite number, got {env.get(BUDGET_DAILY_LIMIT)!r}")
    return Settings(
        results_table=stack(env, RESULTS_TABLE),
        results_topic_arn=stack(env, RESULTS_TOPIC_ARN),
        content_cache_table=env.get(CONTENT_CACHE_TABLE, "").strip() or None,
        model_base_url=base_url.rstrip("/"),
        model_id=env.get(MODEL_ID, "").strip() or DEFAULT_MODEL_ID,
        image_detail=detail,
        model_api_key_secret_arn=secret_arn,
        model_api_key=api_key,
        object_key_suffixes=suffixes,
        max_object_bytes=_number(env, MAX_OBJECT_BYTES, 50 * 1024 * 1024, 1),
        max_image_pixels=_number(env, MAX_IMAGE_PIXELS, 100_000_000, 1),
        model_timeout_seconds=_number(env, MODEL_TIMEOUT_SECONDS, 30.0, 0.1, float),
        model_max_attempts=_number(env, MODEL_MAX_ATTEMPTS, 3, 1),
        model_max_output_tokens=_number(env, MODEL_MAX_OUTPUT_TOKENS, 1024, 64),
        model_output_mode=_choice(env, MODEL_OUTPUT_MODE, OUTPUT_MODE_SETTINGS, "auto"),  # type: ignore[arg-type]
        model_stream=_flag(env, MODEL_STREAM, True),
        model_stream_stall_seconds=_number(env, MODEL_STREAM_STALL_SECONDS, 15.0, 1.0, float),
        profiles_file=env.get(PROFILES_FILE, "").strip() or BUNDLED_PROFILES_FILE,
        results_bucket=env.get(RESULTS_BUCKET, "").strip() or None,
        work_queue_url=env.get(WORK_QUEUE_URL, "").strip() or None,
        document_max_pages=_bounded_number(env, DOCUMENT_MAX_PAGES, 500, 1, MAX_DOCUMENT_PAGES),
        document_range_pages=_bounded_number(env, DOCUMENT_RANGE_PAGES, 8, 1, 100),
        document_concurrency=_bounded_number(env, DOCUMENT_CONCURRENCY, 4, 1, 16),
        document_text_anchor=_flag(env, DOCUMENT_TEXT_ANCHOR, True),
        model_image_transport=transport,  # type: ignore[arg-type]
        render_memory_mb=_number(env, RENDER_MEMORY_MB, 1024, 256),
        function_memory_mb=_number(env, FUNCTION_MEMORY_MB, 2048, 128),
        render_page_seconds=_number(env, RENDER_PAGE_SECONDS, 15.0, 1.0, float),
        render_document_seconds=_number(env, RENDER_DOCUMENT_SECONDS, 90.0, 1.0, float),
        model_concurrency=_bounded_number(env, MODEL_CONCURRENCY, 10, 1, 256),
        control_table=env.get(CONTROL_TABLE, "").strip() or None,
        budget_daily_limit=budget_limit,
        budget_unit=_choice(env, BUDGET_UNIT, BUDGET_UNITS, "tokens"),  # type: ignore[arg-type]
        budget_profile_limits=_profile_limits(env),
        breaker_failures=_number(env, BREAKER_FAILURES, 20, 0),
        breaker_window_seconds=_bounded_number(env, BREAKER_WINDOW_SECONDS, 60, 1, 3600),
        breaker_cooldown_seconds=_bounded_number(env, BREAKER_COOLDOWN_SECONDS, 120, 1, 3600),
        pricing_file=env.get(PRICING_FILE, "").strip() or None,
    )
