"""The deployed permissions grant exactly what the code calls: moto does not enforce IAM, so only this can tell."""

from __future__ import annotations

import ast
import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from devkit.stack import DEFAULT_TEMPLATE_PATH, load_sam_template, transform_template
from tests.support.iam import CALLS, FUNCTION_ROLES, PLATFORM_CALLS, X_RAY_ACTIONS

pytestmark = pytest.mark.unit

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
    """IAM matches actions case-insensitively, with * and ? as wildcards."""
    return any(fnmatchcase(action.lower(), pattern.lower()) for pattern in granted)


def granted_by_resource(template: dict[str, Any], role_id: str) -> dict[str, set[str]]:
    """The actions a role's statements grant, by the logical id of the stack resource each statement names."""
    names = re.compile(r"\b(" + "|".join(map(re.escape, template["Resources"])) + r")\b")
    granted: dict[str, set[str]] = {}
    for statement in function_statements(template, role_id):
        assert statement["Effect"] == "Allow", statement
        for resource in listed(statement["Resource"]):
            for logical_id in set(names.findall(json.dumps(resource))) - {"AWS"}:
                granted.setdefault(logical_id, set()).update(listed(statement["Action"]))
    return granted


@pytest.mark.parametrize("role_id", sorted(CALLS))
def test_each_role_is_granted_exactly_the_calls_its_code_makes(transformed: dict[str, Any], role_id: str) -> None:
    """Neither short (a call refused in production, invisible on moto) nor wider than the code (SAM's policy
    templates granted Scan, Query, BatchWriteItem, DeleteItem and more on every table). The Lambda service's own
    calls with the describe function's role (polling the queue, writing logs) are granted beside them."""
    expected = {resource: set(actions) for resource, actions in CALLS[role_id].items()}
    for resource, actions in PLATFORM_CALLS.get(role_id, {}).items():
        expected.setdefault(resource, set()).update(actions)
    assert granted_by_resource(transformed, role_id) == expected


def test_no_function_role_has_a_managed_policy_beyond_logs_and_tracing(transformed: dict[str, Any]) -> None:
    for role_id in FUNCTION_ROLES:
        managed = transformed["Resources"][role_id]["Properties"].get("ManagedPolicyArns", [])
        names = {json.dumps(arn).rsplit("/", 1)[-1].strip('"]}') for arn in managed}
        assert names <= {"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}, (role_id, names)


def test_batch_operations_may_assume_only_the_backfill_role(transformed: dict[str, Any]) -> None:
    trust = transformed["Resources"]["BatchOperationsRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [statement["Principal"] for statement in trust] == [{"Service": "batchoperations.s3.amazonaws.com"}]


def test_every_granted_resource_names_a_resource_of_the_stack(transformed: dict[str, Any]) -> None:
    """No statement reaches beyond the stack: every resource is built from a Ref, GetAtt or ${...} of one."""
    names = re.compile(r"\b(" + "|".join(map(re.escape, transformed["Resources"])) + r")\b")
    for role_id in CALLS:
        for statement in function_statements(transformed, role_id):
            for resource in listed(statement["Resource"]):
                assert resource == "*" or names.search(json.dumps(resource)), statement


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


def test_no_wildcard_actions_and_the_only_wildcard_resource_is_x_ray(transformed: dict[str, Any]) -> None:
    for role_id in CALLS:
        for statement in function_statements(transformed, role_id):
            actions = listed(statement["Action"])
            assert not any(action.endswith(":*") or action == "*" for action in actions), statement
            if statement["Resource"] == "*":
                assert set(actions) == X_RAY_ACTIONS, statement


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


# --- Alarms, metrics and the dashboard -------------------------------------------------------------------------------

FUNCTION_CODE = DEFAULT_TEMPLATE_PATH.parent / "functions" / "describe_image"
# The stack's own value of the metrics' `service` dimension (powertools takes it from POWERTOOLS_SERVICE_NAME).
SERVICE_DIMENSION = "sightline-${AWS::StackName}"
ALARM_TOPIC = {"Ref": "AlarmTopic"}
# Alarm -> (namespace, metric, dimension name, dimension value, statistic, threshold)
ALARMS = {
    "DeadLetterQueueAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        {"Fn::GetAtt": ["UploadsDeadLetterQueue", "QueueName"]},
        "Maximum",
        0,
    ),
    "UploadsQueueAgeAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        "QueueName",
        {"Fn::GetAtt": ["UploadsQueue", "QueueName"]},
        "Maximum",
        15 * 60,
    ),
    "DescribeImageFunctionErrorsAlarm": (
        "AWS/Lambda",
        "Errors",
        "FunctionName",
        {"Ref": "DescribeImageFunction"},
        "Sum",
        0,
    ),
    "DescribeImageFunctionThrottlesAlarm": (
        "AWS/Lambda",
        "Throttles",
        "FunctionName",
        {"Ref": "DescribeImageFunction"},
        "Sum",
        0,
    ),
    "ConfigurationErrorAlarm": (
        "Sightline",
        "ConfigurationErrors",
        "service",
        {"Fn::Sub": SERVICE_DIMENSION},
        "Sum",
        0,
    ),
    "BudgetCapAlarm": ("Sightline", "BudgetCapReached", "service", {"Fn::Sub": SERVICE_DIMENSION}, "Sum", 0),
    "ProviderPausedAlarm": ("Sightline", "ProviderPaused", "service", {"Fn::Sub": SERVICE_DIMENSION}, "Sum", 0),
}


def emitted_metric_names(path: Path) -> set[str]:
    """The metric names a function module emits: the values of its *_METRICS tables and add_metric(name="...")."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id.endswith("_METRICS") for target in node.targets
        ):
            assert isinstance(node.value, ast.Dict), ast.dump(node)
            names.update(ast.literal_eval(value) for value in node.value.values)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_metric":
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    names.add(keyword.value.value)
    return names


@pytest.fixture(scope="module")
def emitted() -> set[str]:
    names = emitted_metric_names(FUNCTION_CODE / "app.py") | emitted_metric_names(FUNCTION_CODE / "resume_app.py")
    # The parse found the tables and the literal calls, not just some of them.
    assert {"ImagesDescribed", "ItemsDeferred", "BudgetCapReached", "ConfigurationErrors", "ModelLatency"} <= names
    assert {"DeferredResumed", "DeferredWaiting"} <= names
    return names


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_the_metrics_service_dimension_is_per_stack(sam: dict[str, Any], transformed: dict[str, Any]) -> None:
    variables = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == {"Fn::Sub": SERVICE_DIMENSION}
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Sightline"
    for function_id in ("DescribeImageFunction", "ResumeDeferredFunction"):
        function_variables = transformed["Resources"][function_id]["Properties"]["Environment"]["Variables"]
        assert function_variables["POWERTOOLS_SERVICE_NAME"] == {"Fn::Sub": SERVICE_DIMENSION}, function_id


def test_the_operator_alarms_exist(sam: dict[str, Any]) -> None:
    assert set(alarms(sam)) == set(ALARMS)


@pytest.mark.parametrize("alarm_id", sorted(ALARMS))
def test_alarm_watches_its_metric(sam: dict[str, Any], alarm_id: str) -> None:
    alarm = alarms(sam)[alarm_id]
    namespace, metric, dimension, value, statistic, threshold = ALARMS[alarm_id]

    assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
    assert alarm["Dimensions"] == [{"Name": dimension, "Value": value}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        statistic,
        threshold,
        "GreaterThanThreshold",
    )


@pytest.mark.parametrize("alarm_id", sorted(ALARMS))
def test_every_alarm_notifies_the_alarm_topic(sam: dict[str, Any], alarm_id: str) -> None:
    alarm = alarms(sam)[alarm_id]

    assert alarm["AlarmActions"] == [ALARM_TOPIC]
    assert alarm["OKActions"] == [ALARM_TOPIC]
    assert alarm["TreatMissingData"] == "notBreaching"
    assert len(alarm["AlarmDescription"]) > 40, "say what happened and where to look"


def test_every_custom_metric_alarm_uses_the_stacks_service_dimension(sam: dict[str, Any], emitted: set[str]) -> None:
    custom = {
        logical_id: alarm for logical_id, alarm in alarms(sam).items() if not alarm["Namespace"].startswith("AWS/")
    }
    assert set(custom) == {"ConfigurationErrorAlarm", "BudgetCapAlarm", "ProviderPausedAlarm"}
    service = sam["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    for logical_id, alarm in custom.items():
        assert (
            alarm["Namespace"] == sam["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
        )
        assert alarm["Dimensions"] == [{"Name": "service", "Value": service}], logical_id
        assert alarm["MetricName"] in emitted, logical_id


def test_the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(sam: dict[str, Any]) -> None:
    """CloudWatch publishes as a service principal, which alias/aws/sns does not admit: alarms would be dropped."""
    resources = sam["Resources"]
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    assert resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = resources["AlarmTopicKey"]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(cloudwatch) == 1
    assert cloudwatch[0]["Effect"] == "Allow"
    assert set(listed(cloudwatch[0]["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    # The account keeps administering its key (without this statement the key becomes unmanageable).
    assert any(
        s["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}} for s in statements
    )
    assert sam["Outputs"]["AlarmTopicArn"]["Value"] == ALARM_TOPIC


def test_the_alarm_email_subscription_is_created_only_when_an_address_is_given(sam: dict[str, Any]) -> None:
    subscriptions = {
        logical_id: resource
        for logical_id, resource in sam["Resources"].items()
        if resource["Type"] == "AWS::SNS::Subscription"
    }
    assert list(subscriptions) == ["AlarmEmailSubscription"]
    subscription = subscriptions["AlarmEmailSubscription"]

    assert subscription["Properties"] == {
        "TopicArn": ALARM_TOPIC,
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert sam["Conditions"][subscription["Condition"]] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}
    parameter = sam["Parameters"]["AlarmEmail"]
    assert (parameter["Type"], parameter["Default"]) == ("String", "")
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("ops@example.com")
    assert not pattern.fullmatch("ops@example") and not pattern.fullmatch("a@example.com,b@example.com")


def dashboard_metrics(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """(namespace, name, dimensions, options) of every metric of the dashboard's metric widgets."""
    metrics = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        for row in widget["properties"]["metrics"]:
            options = row[-1] if isinstance(row[-1], dict) else {}
            fields = row[:-1] if options else row
            assert all(isinstance(field, str) and field != "..." for field in fields), row  # no shorthand rows
            namespace, name, *pairs = fields
            assert len(pairs) % 2 == 0, row
            metrics.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), options))
    return metrics


@pytest.fixture(scope="module")
def dashboard(sam: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    resource = sam["Resources"]["Dashboard"]
    assert resource["Type"] == "AWS::CloudWatch::Dashboard"
    text = resource["Properties"]["DashboardBody"]["Fn::Sub"]
    return text, json.loads(text)


def test_the_dashboard_substitutes_only_names_the_stack_has(sam: dict[str, Any], dashboard: tuple[str, Any]) -> None:
    text, _ = dashboard
    for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
        assert name.startswith("AWS::") or name.split(".", 1)[0] in sam["Resources"], name


def test_the_dashboard_shows_the_pipeline_metrics_the_code_emits(dashboard: tuple[str, Any], emitted: set[str]) -> None:
    metrics = dashboard_metrics(dashboard[1])
    custom = [
        (name, dimensions, options) for namespace, name, dimensions, options in metrics if namespace == "Sightline"
    ]

    assert all(dimensions == {"service": SERVICE_DIMENSION} for _, dimensions, _ in custom), custom
    shown = {name for name, _, _ in custom}
    assert shown <= emitted, sorted(shown - emitted)
    expected = {
        "ImagesDescribed",
        "ImagesFailed",
        "DocumentsPartial",
        "ContentCacheHits",
        "ItemsDeferred",
        "PromptTokens",
        "CompletionTokens",
        "ModelLatency",
    }
    assert expected <= shown, sorted(expected - shown)
    assert {options.get("stat") for name, _, options in custom if name == "ModelLatency"} == {"p50", "p90"}


def test_the_dashboard_shows_the_queues_and_the_function(dashboard: tuple[str, Any]) -> None:
    shown = {
        (namespace, name, tuple(sorted(dimensions.items())))
        for namespace, name, dimensions, _ in dashboard_metrics(dashboard[1])
        if namespace.startswith("AWS/")
    }
    queue = (("QueueName", "${UploadsQueue.QueueName}"),)
    dead_letter_queue = (("QueueName", "${UploadsDeadLetterQueue.QueueName}"),)
    function = (("FunctionName", "${DescribeImageFunction}"),)
    assert {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", queue),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dead_letter_queue),
        ("AWS/Lambda", "Duration", function),
        ("AWS/Lambda", "Errors", function),
        ("AWS/Lambda", "Throttles", function),
        ("AWS/Lambda", "ConcurrentExecutions", function),
    } <= shown


def test_the_dashboard_lists_every_alarm_and_is_an_output(sam: dict[str, Any], dashboard: tuple[str, Any]) -> None:
    widgets = [widget for widget in dashboard[1]["widgets"] if widget["type"] == "alarm"]
    assert [set(widget["properties"]["alarms"]) for widget in widgets] == [{f"${{{alarm}.Arn}}" for alarm in ALARMS}]
    assert sam["Outputs"]["DashboardName"]["Value"] == {"Ref": "Dashboard"}
    assert "${Dashboard}" in sam["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]


# --- Storage hygiene ---------------------------------------------------------------------------------------------------


def test_uploads_bucket_lifecycle_aborts_multipart_uploads_and_optionally_expires_old_versions(
    sam: dict[str, Any],
) -> None:
    properties = sam["Resources"]["UploadsBucket"]["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = properties["LifecycleConfiguration"]["Rules"]
    fixed = [rule for rule in rules if "Fn::If" not in rule]
    conditional = [rule["Fn::If"] for rule in rules if "Fn::If" in rule]

    assert fixed == [
        {
            "Id": "AbortIncompleteMultipartUploads",
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
    ]
    assert len(conditional) == 1
    condition, if_expiring, otherwise = conditional[0]
    assert sam["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "UploadsNoncurrentVersionDays"}, "0"]}]}
    assert if_expiring == {
        "Id": "ExpireNoncurrentVersions",
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": {"Ref": "UploadsNoncurrentVersionDays"}},
    }
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert sam["Parameters"]["UploadsNoncurrentVersionDays"] | {"Description": ""} == {
        "Type": "Number",
        "Default": 30,
        "MinValue": 0,
        "Description": "",
    }


def test_only_the_results_table_has_point_in_time_recovery(sam: dict[str, Any]) -> None:
    tables = {
        logical_id: resource["Properties"]
        for logical_id, resource in sam["Resources"].items()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }
    recovered = {
        logical_id
        for logical_id, properties in tables.items()
        if properties.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled")
    }
    # The content cache and the control table hold what is rebuilt (a description) or expires within a day.
    assert recovered == {"ResultsTable"}
    assert "PointInTimeRecoverySpecification" not in tables["ContentCacheTable"]


def test_every_checkov_suppression_names_a_check_and_gives_its_reason(sam: dict[str, Any]) -> None:
    """checkov runs in CI (make scan) and fails on any finding not suppressed; a suppression without its reason
    would hide a finding from the next reader."""
    suppressions = [
        (logical_id, skip)
        for logical_id, resource in sam["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert suppressions
    for logical_id, skip in suppressions:
        assert re.fullmatch(r"CKV_AWS_\d+", skip.get("id", "")), (logical_id, skip)
        assert len(skip.get("comment", "").split()) >= 8, (logical_id, skip)


def test_the_describe_function_gives_freed_image_memory_back(sam: dict[str, Any]) -> None:
    """Without it, the worker threads' malloc arenas keep every decoded image: a batch of ten images at the pixel
    limit peaked at 2-3 times the function's memory (make bench-coldstart)."""
    variables = sam["Resources"]["DescribeImageFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["MALLOC_MMAP_THRESHOLD_"] == "1048576"
