"""Settings: validated once at cold start, failing fast on misconfiguration."""

from __future__ import annotations

import pytest

from sightline.errors import SettingsError
from sightline.settings import DEFAULT_MODEL_BASE_URL, DEFAULT_MODEL_ID, load_settings

pytestmark = pytest.mark.unit

BASE = {"RESULTS_TABLE": "results", "RESULTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:results"}


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings(BASE)
    assert settings.model_base_url == DEFAULT_MODEL_BASE_URL == "https://api.novita.ai/openai"
    assert settings.model_id == DEFAULT_MODEL_ID == "qwen/qwen2.5-vl-72b-instruct"
    assert settings.image_detail == "auto"
    assert settings.model_timeout_seconds == 30
    assert settings.model_max_attempts == 3


@pytest.mark.parametrize("missing", ["RESULTS_TABLE", "RESULTS_TOPIC_ARN"])
def test_missing_required_names_fail_fast(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IMAGE_DETAIL", "ultra"),
        ("MAX_OBJECT_BYTES", "ten"),
        ("MAX_OBJECT_BYTES", "0"),
        ("MODEL_BASE_URL", "ftp://x"),
        ("MODEL_MAX_ATTEMPTS", "0"),
    ],
)
def test_invalid_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({**BASE, name: value})


def test_key_and_secret_are_exclusive_and_the_key_never_prints() -> None:
    with pytest.raises(SettingsError):
        load_settings({**BASE, "MODEL_API_KEY": "sk-1", "MODEL_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:x"})
    settings = load_settings({**BASE, "MODEL_API_KEY": "sk-secret-value"})
    assert "sk-secret-value" not in repr(settings)


def test_suffix_filter_is_case_insensitive() -> None:
    settings = load_settings({**BASE, "OBJECT_KEY_SUFFIXES": ".jpg, .PNG"})
    assert settings.accepts_key("a/b.JPG")
    assert settings.accepts_key("c.png")
    assert not settings.accepts_key("notes.txt")
    assert load_settings(BASE).accepts_key("anything")


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "lots"])
def test_a_budget_limit_must_be_a_finite_number_of_at_least_zero(raw: str) -> None:

    with pytest.raises(SettingsError, match="BUDGET_DAILY_LIMIT"):
        load_settings({"RESULTS_TABLE": "t", "RESULTS_TOPIC_ARN": "a", "BUDGET_DAILY_LIMIT": raw})


@pytest.mark.parametrize("raw", ["alt-text", "alt-text=0", "alt-text=nan", "=5", "a=1,a=2"])
def test_profile_limits_are_name_limit_pairs_above_zero_each_named_once(raw: str) -> None:

    with pytest.raises(SettingsError, match="BUDGET_PROFILE_LIMITS"):
        load_settings({"RESULTS_TABLE": "t", "RESULTS_TOPIC_ARN": "a", "BUDGET_PROFILE_LIMITS": raw})


def test_spend_settings_are_read_with_their_defaults() -> None:

    settings = load_settings(
        {
            "RESULTS_TABLE": "t",
            "RESULTS_TOPIC_ARN": "a",
            "CONTROL_TABLE": "c",
            "BUDGET_DAILY_LIMIT": "2.5",
            "BUDGET_UNIT": "USD",
            "BUDGET_PROFILE_LIMITS": "alt-text=1, documents=4",
        }
    )
    assert (settings.budget_daily_limit, settings.budget_unit) == (2.5, "usd")
    assert settings.budget_profile_limits == (("alt-text", 1.0), ("documents", 4.0))
    assert settings.budget_enabled and settings.breaker_enabled and settings.model_concurrency == 10
    assert not load_settings({"RESULTS_TABLE": "t", "RESULTS_TOPIC_ARN": "a"}).budget_enabled
