"""The deployed permissions grant exactly what the code calls: moto does not enforce IAM, so only this can tell."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devkit.stack import DEFAULT_TEMPLATE_PATH, load_sam_template, transform_template

pytestmark = pytest.mark.unit

# Every AWS call the function makes, by the logical id of the resource it touches.
CALLS = {
    "ResultsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    "ContentCacheTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    "UploadsBucket": {"s3:GetObject", "s3:GetObjectVersion"},
    "ResultsTopic": {"sns:Publish"},
    "ModelApiKeySecret": {"secretsmanager:GetSecretValue"},
}


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    return transform_template(load_sam_template(DEFAULT_TEMPLATE_PATH))


def function_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"]["DescribeImageFunctionRole"]["Properties"]
    return [statement for policy in role.get("Policies", []) for statement in policy["PolicyDocument"]["Statement"]]


def actions_on(statements: list[dict[str, Any]], logical_id: str) -> set[str]:
    granted: set[str] = set()
    for statement in statements:
        if logical_id in json.dumps(statement["Resource"]):
            actions = statement["Action"]
            granted.update([actions] if isinstance(actions, str) else actions)
    return granted


@pytest.mark.parametrize("logical_id", sorted(CALLS))
def test_every_call_the_function_makes_is_granted(transformed: dict[str, Any], logical_id: str) -> None:
    granted = actions_on(function_statements(transformed), logical_id)
    assert CALLS[logical_id] <= granted, f"{logical_id}: missing {sorted(CALLS[logical_id] - granted)}"


def test_no_wildcard_actions_or_resources(transformed: dict[str, Any]) -> None:
    for statement in function_statements(transformed):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(action.endswith(":*") or action == "*" for action in actions), statement
        assert statement["Resource"] != "*", statement


def test_the_function_reads_the_documented_environment(transformed: dict[str, Any]) -> None:
    from sightline import settings

    variables = transformed["Resources"]["DescribeImageFunction"]["Properties"]["Environment"]["Variables"]
    documented = {
        settings.RESULTS_TABLE,
        settings.RESULTS_TOPIC_ARN,
        settings.CONTENT_CACHE_TABLE,
        settings.MODEL_BASE_URL,
        settings.MODEL_ID,
        settings.IMAGE_DETAIL,
        settings.MODEL_API_KEY_SECRET_ARN,
        settings.OBJECT_KEY_SUFFIXES,
        settings.MAX_OBJECT_BYTES,
        settings.MAX_IMAGE_PIXELS,
        settings.MODEL_TIMEOUT_SECONDS,
        settings.MODEL_MAX_ATTEMPTS,
        settings.MODEL_MAX_OUTPUT_TOKENS,
        settings.MODEL_OUTPUT_MODE,
        settings.MODEL_STREAM,
        settings.MODEL_STREAM_STALL_SECONDS,
    }
    assert documented <= set(variables), sorted(documented - set(variables))
    assert settings.MODEL_API_KEY not in variables, "the deployed stack reads the key from Secrets Manager only"


def test_visibility_timeout_is_at_least_six_function_timeouts(transformed: dict[str, Any]) -> None:
    sam = load_sam_template(DEFAULT_TEMPLATE_PATH)
    timeouts = sam["Parameters"]["FunctionTimeout"]["AllowedValues"]
    mapping = sam["Mappings"]["QueueSettings"]
    assert all(mapping[str(t)]["VisibilityTimeout"] >= 6 * int(t) for t in timeouts)
