"""The stack that devkit.stack deploys from template.yaml into a moto server: table, queues, notifications."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

import boto3
import pytest

from devkit.stack import StackResources, deploy_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(aws: boto3.session.Session, moto_endpoint: str) -> StackResources:
    return deploy_stack(aws, endpoint_url=moto_endpoint)


def test_results_table_is_keyed_by_bucket_and_key(aws: boto3.session.Session, stack: StackResources) -> None:
    table = aws.client("dynamodb").describe_table(TableName=stack.table)["Table"]

    assert table["KeySchema"] == [
        {"AttributeName": "bucket", "KeyType": "HASH"},
        {"AttributeName": "key", "KeyType": "RANGE"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert stack.function_environment["RESULTS_TABLE"] == stack.table
    assert stack.function_environment["RESULTS_TOPIC_ARN"] == stack.topic_arn
    assert "MODEL_API_KEY_SECRET_ARN" not in stack.function_environment


def test_upload_queue_redrives_to_the_dead_letter_queue_and_outlasts_the_function(
    aws: boto3.session.Session, stack: StackResources
) -> None:
    sqs = aws.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    redrive_policy = json.loads(attributes["RedrivePolicy"])
    dead_letter_attributes = sqs.get_queue_attributes(QueueUrl=stack.dlq_url, AttributeNames=["All"])["Attributes"]

    assert redrive_policy["deadLetterTargetArn"] == stack.dlq_arn
    assert int(redrive_policy["maxReceiveCount"]) == stack.max_receive_count == 5
    assert int(dead_letter_attributes["MessageRetentionPeriod"]) == 14 * 24 * 3600
    # AWS guidance for SQS event sources: visibility timeout at least 6x the function timeout.
    assert stack.function_timeout == 120
    assert int(attributes["VisibilityTimeout"]) >= 6 * stack.function_timeout


def test_upload_notification_reaches_the_queue(aws: boto3.session.Session, stack: StackResources) -> None:
    key = "a b/ü+x.jpg"
    aws.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=b"\xff\xd8\xff not really a jpeg")

    sqs = aws.client("sqs")
    bodies = []
    for _ in range(3):
        messages = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        bodies += [json.loads(message["Body"]) for message in messages]
        if any("Records" in body for body in bodies):
            break

    # S3 confirms a new notification configuration with a test event, then reports the upload.
    assert bodies[0]["Event"] == "s3:TestEvent"
    records = [record for body in bodies for record in body.get("Records", [])]
    assert len(records) == 1
    assert records[0]["eventName"] == "ObjectCreated:Put"
    assert records[0]["s3"]["bucket"]["name"] == stack.bucket
    assert unquote_plus(records[0]["s3"]["object"]["key"]) == key


def test_results_bucket_is_private_encrypted_and_expires_temporary_objects(
    aws: boto3.session.Session, stack: StackResources
) -> None:
    s3 = aws.client("s3")
    encryption = s3.get_bucket_encryption(Bucket=stack.results_bucket)["ServerSideEncryptionConfiguration"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=stack.results_bucket)["Rules"]

    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_public_access_block(Bucket=stack.results_bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert "Status" not in s3.get_bucket_versioning(Bucket=stack.results_bucket)
    expirations = {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules if "Expiration" in rule}
    assert expirations == {"page-images/": 1, "work/": 7, "batch-reports/": 90}  # results/ is kept by default
    assert [
        rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] for rule in rules if not rule["Filter"]["Prefix"]
    ] == [1]
    assert stack.results_bucket != stack.bucket


def test_results_retention_expires_results(aws: boto3.session.Session, moto_endpoint: str) -> None:
    stack = deploy_stack(aws, endpoint_url=moto_endpoint, parameters={"DocumentResultsRetentionDays": "30"})
    rules = aws.client("s3").get_bucket_lifecycle_configuration(Bucket=stack.results_bucket)["Rules"]

    expirations = {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules if "Expiration" in rule}
    assert expirations == {"page-images/": 1, "work/": 7, "batch-reports/": 90, "results/": 30}


def test_uploads_bucket_aborts_multipart_uploads_and_expires_previous_versions(
    aws: boto3.session.Session, stack: StackResources
) -> None:
    s3 = aws.client("s3")
    rules = {rule["ID"]: rule for rule in s3.get_bucket_lifecycle_configuration(Bucket=stack.bucket)["Rules"]}

    assert s3.get_bucket_versioning(Bucket=stack.bucket)["Status"] == "Enabled"
    assert set(rules) == {"AbortIncompleteMultipartUploads", "ExpireNoncurrentVersions"}
    assert all(rule["Status"] == "Enabled" and rule["Filter"]["Prefix"] == "" for rule in rules.values())
    assert rules["AbortIncompleteMultipartUploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert rules["ExpireNoncurrentVersions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert "Expiration" not in rules["ExpireNoncurrentVersions"]  # current versions are kept


def test_uploads_previous_versions_are_kept_when_the_expiry_is_zero(
    aws: boto3.session.Session, moto_endpoint: str
) -> None:
    stack = deploy_stack(aws, endpoint_url=moto_endpoint, parameters={"UploadsNoncurrentVersionDays": "0"})
    rules = aws.client("s3").get_bucket_lifecycle_configuration(Bucket=stack.bucket)["Rules"]

    assert [(rule["ID"], rule["AbortIncompleteMultipartUpload"]) for rule in rules] == [
        ("AbortIncompleteMultipartUploads", {"DaysAfterInitiation": 7})
    ]
    assert not any("NoncurrentVersionExpiration" in rule for rule in rules)


def test_function_environment_names_the_results_bucket_and_work_queue(stack: StackResources) -> None:
    environment = stack.function_environment

    assert environment["RESULTS_BUCKET"] == stack.results_bucket
    assert environment["WORK_QUEUE_URL"] == stack.queue_url
    assert environment["DOCUMENT_RANGE_PAGES"] == "8"
    assert environment["DOCUMENT_MAX_PAGES"] == "500"
    assert environment["MODEL_IMAGE_TRANSPORT"] == "base64"
    # The metrics' `service` dimension is the stack's own (the alarms and the dashboard name the same value).
    assert environment["POWERTOOLS_SERVICE_NAME"] == "sightline-sightline"
