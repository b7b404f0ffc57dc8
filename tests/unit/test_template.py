"""The deployed permissions grant exactly what the code calls: moto does not enforce IAM, so only this can tell."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from typing import Any

import pytest

from devkit.stack import DEFAULT_TEMPLATE_PATH, load_sam_template, transform_template

pytestmark = pytest.mark.unit

# Every AWS call the function makes, by the logical id of the resource it touches.
CALLS = {
    "ResultsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    "ContentCacheTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    "UploadsBucket": {"s3:GetObject", "s3:GetObjectVersion"},
    # Document results, page-range results and the page JPEGs it presigns GET URLs for (a presigned URL
    # carries the permissions of the role that signed it).
    "ResultsBucket": {"s3:GetObject", "s3:PutObject"},
    # Page ranges of long documents go back to the queue it consumes (SendMessageBatch is authorized as
    # sqs:SendMessage).
    "UploadsQueue": {"sqs:SendMessage"},
    "ResultsTopic": {"sns:Publish"},
    "ModelApiKeySecret": {"secretsmanager:GetSecretValue"},
    # Budget counters and the breaker: reserve/settle/count (UpdateItem), the breaker's state (GetItem).
    "ControlTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
}
# The other functions: the resumer of parked items, and the S3 Batch Operations entry point.
OTHER_CALLS = {
    "ResumeDeferredFunctionRole": {
        "ResultsTable": {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem"},
        "UploadsQueue": {"sqs:SendMessage"},
        "ControlTable": {"dynamodb:GetItem"},
    },
    "BatchBackfillFunctionRole": {
        "ResultsTable": {"dynamodb:GetItem"},
        "UploadsBucket": {"s3:GetObject", "s3:GetObjectVersion"},
        "UploadsQueue": {"sqs:SendMessage"},
    },
    "BatchOperationsRole": {
        "BatchBackfillFunction": {"lambda:InvokeFunction"},
        "UploadsBucket": {"s3:GetObject"},
        "ResultsBucket": {"s3:PutObject"},
    },
}


# Where the function writes in the results bucket; every prefix is covered by a lifecycle rule or kept on purpose.
RESULTS_PREFIXES = {"results/", "page-images/", "work/"}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam_template(DEFAULT_TEMPLATE_PATH)


@pytest.fixture(scope="module")
def transformed(sam: dict[str, Any]) -> dict[str, Any]:
    return transform_template(sam)


def function_statements(template: dict[str, Any], role_id: str = "DescribeImageFunctionRole") -> list[dict[str, Any]]:
    role = template["Resources"][role_id]["Properties"]
    return [statement for policy in role.get("Policies", []) for statement in policy["PolicyDocument"]["Statement"]]


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions_on(statements: list[dict[str, Any]], logical_id: str) -> set[str]:
    granted: set[str] = set()
    for statement in statements:
        if logical_id in json.dumps(statement["Resource"]):
            granted.update(listed(statement["Action"]))
    return granted


def is_granted(action: str, granted: set[str]) -> bool:
    """IAM matches actions case-insensitively, with * and ? as wildcards (SAM grants sqs:SendMessage*)."""
    return any(fnmatchcase(action.lower(), pattern.lower()) for pattern in granted)


@pytest.mark.parametrize("logical_id", sorted(CALLS))
def test_every_call_the_function_makes_is_granted(transformed: dict[str, Any], logical_id: str) -> None:
    granted = actions_on(function_statements(transformed), logical_id)
    missing = sorted(action for action in CALLS[logical_id] if not is_granted(action, granted))
    assert not missing, f"{logical_id}: missing {missing}"


@pytest.mark.parametrize(
    ("role_id", "logical_id"), sorted((role, resource) for role, calls in OTHER_CALLS.items() for resource in calls)
)
def test_every_call_the_other_functions_make_is_granted(
    transformed: dict[str, Any], role_id: str, logical_id: str
) -> None:
    granted = actions_on(function_statements(transformed, role_id), logical_id)
    missing = sorted(action for action in OTHER_CALLS[role_id][logical_id] if not is_granted(action, granted))
    assert not missing, f"{role_id} on {logical_id}: missing {missing}"


def test_batch_operations_may_assume_only_the_backfill_role(transformed: dict[str, Any]) -> None:
    trust = transformed["Resources"]["BatchOperationsRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [statement["Principal"] for statement in trust] == [{"Service": "batchoperations.s3.amazonaws.com"}]


def test_every_granted_resource_names_a_resource_of_the_stack(transformed: dict[str, Any]) -> None:
    """No statement reaches beyond the stack: every resource is built from a Ref, GetAtt or ${...} of one."""
    names = re.compile(r"\b(" + "|".join(map(re.escape, transformed["Resources"])) + r")\b")
    for statement in function_statements(transformed):
        for resource in listed(statement["Resource"]):
            assert names.search(json.dumps(resource)), statement


def test_the_function_writes_results_only_under_known_prefixes(transformed: dict[str, Any]) -> None:
    statements = [
        statement
        for statement in function_statements(transformed)
        if "ResultsBucket" in json.dumps(statement["Resource"])
    ]
    writes = [statement for statement in statements if "s3:PutObject" in listed(statement["Action"])]
    assert [resource["Fn::Sub"] for statement in writes for resource in listed(statement["Resource"])] == [
        f"${{ResultsBucket.Arn}}/{prefix}*" for prefix in ("results/", "page-images/", "work/")
    ]
    # Neither the lifecycle rules nor the bucket policy, and nothing is deleted: results are written once.
    granted = actions_on(statements, "ResultsBucket")
    for action in ("s3:PutLifecycleConfiguration", "s3:PutBucketPolicy", "s3:DeleteObject", "s3:DeleteBucket"):
        assert not is_granted(action, granted), action


def test_the_function_sends_only_to_the_uploads_queue(transformed: dict[str, Any]) -> None:
    sends = [
        statement
        for statement in function_statements(transformed)
        if any(action.startswith("sqs:") for action in listed(statement["Action"]))
    ]
    assert sends, "no sqs statement"
    for statement in sends:
        assert all(action.startswith("sqs:SendMessage") for action in listed(statement["Action"])), statement
        resources = listed(statement["Resource"])
        assert len(resources) == 1, statement
        assert resources[0]["Fn::Sub"][1] == {"queueName": {"Fn::GetAtt": ["UploadsQueue", "QueueName"]}}


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


def test_the_function_environment_names_the_document_resources_and_settings(sam: dict[str, Any]) -> None:
    variables = sam["Resources"]["DescribeImageFunction"]["Properties"]["Environment"]["Variables"]
    expected = {
        "RESULTS_BUCKET": {"Ref": "ResultsBucket"},
        "WORK_QUEUE_URL": {"Ref": "UploadsQueue"},  # the queue URL: page ranges travel through the uploads queue
        "DOCUMENT_MAX_PAGES": {"Ref": "DocumentMaxPages"},
        "DOCUMENT_RANGE_PAGES": {"Ref": "DocumentRangePages"},
        "DOCUMENT_CONCURRENCY": "4",
        "MODEL_IMAGE_TRANSPORT": {"Ref": "ModelImageTransport"},
        "DOCUMENT_TEXT_ANCHOR": "true",
        "RENDER_MEMORY_MB": "1024",
        "RENDER_PAGE_SECONDS": "15",
        "RENDER_DOCUMENT_SECONDS": "90",
    }
    assert {name: variables.get(name) for name in expected} == expected


def test_results_bucket_is_private_encrypted_retained_and_unversioned(sam: dict[str, Any]) -> None:
    bucket = sam["Resources"]["ResultsBucket"]
    properties = bucket["Properties"]

    assert bucket["Type"] == "AWS::S3::Bucket"
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    assert properties["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    }
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "VersioningConfiguration" not in properties  # each result is written once under its own key


def test_results_bucket_lifecycle_expires_page_images_and_work_and_optionally_results(sam: dict[str, Any]) -> None:
    rules = sam["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    conditional = [rule for rule in rules if "Fn::If" in rule]
    fixed = {rule["Id"]: rule for rule in rules if "Fn::If" not in rule}

    assert all(rule["Status"] == "Enabled" for rule in fixed.values())
    expirations = {rule["Prefix"]: rule["ExpirationInDays"] for rule in fixed.values() if "ExpirationInDays" in rule}
    # results/ is kept unless a retention is set; S3 Batch Operations backfill reports for 90 days
    assert expirations == {"page-images/": 1, "work/": 7, "batch-reports/": 90}
    assert [rule["AbortIncompleteMultipartUpload"] for rule in fixed.values() if "Prefix" not in rule] == [
        {"DaysAfterInitiation": 1}
    ]

    assert len(conditional) == 1
    condition, if_retention, otherwise = conditional[0]["Fn::If"]
    assert sam["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "DocumentResultsRetentionDays"}, "0"]}]}
    assert if_retention == {
        "Id": "ExpireResults",
        "Status": "Enabled",
        "Prefix": "results/",
        "ExpirationInDays": {"Ref": "DocumentResultsRetentionDays"},
    }
    assert otherwise == {"Ref": "AWS::NoValue"}
    # Every prefix the function writes is covered, and batch-reports/ (written by S3 Batch Operations' role)
    assert set(expirations) | {if_retention["Prefix"]} == RESULTS_PREFIXES | {"batch-reports/"}


def test_results_bucket_policy_denies_insecure_transport(sam: dict[str, Any]) -> None:
    policy = sam["Resources"]["ResultsBucketPolicy"]["Properties"]

    assert policy["Bucket"] == {"Ref": "ResultsBucket"}
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [{"Fn::GetAtt": ["ResultsBucket", "Arn"]}, {"Fn::Sub": "${ResultsBucket.Arn}/*"}],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]


def test_document_parameters_and_outputs(sam: dict[str, Any]) -> None:
    parameters = sam["Parameters"]

    assert parameters["ModelImageTransport"] | {"Description": ""} == {
        "Type": "String",
        "Default": "base64",
        "AllowedValues": ["base64", "url"],
        "Description": "",
    }
    assert parameters["DocumentRangePages"] | {"Description": ""} == {
        "Type": "Number",
        "Default": 8,
        "MinValue": 2,
        "MaxValue": 50,
        "Description": "",
    }
    assert parameters["DocumentMaxPages"] | {"Description": ""} == {
        "Type": "Number",
        "Default": 500,
        "MinValue": 1,
        "MaxValue": 5000,
        "Description": "",
    }
    assert parameters["DocumentResultsRetentionDays"] | {"Description": ""} == {
        "Type": "Number",
        "Default": 0,
        "MinValue": 0,
        "Description": "",
    }
    assert sam["Outputs"]["ResultsBucketName"]["Value"] == {"Ref": "ResultsBucket"}


def test_visibility_timeout_is_at_least_six_function_timeouts(sam: dict[str, Any]) -> None:
    timeouts = sam["Parameters"]["FunctionTimeout"]["AllowedValues"]
    mapping = sam["Mappings"]["QueueSettings"]
    assert all(mapping[str(t)]["VisibilityTimeout"] >= 6 * int(t) for t in timeouts)
