"""IntakeRoute in template.yaml: S3 notifications or an EventBridge rule into the same queue, with the same filters."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from PIL import Image

from devkit.stack import DEFAULT_TEMPLATE_PATH, load_sam_template
from sightline import imaging
from sightline.pages import DocumentKind

pytestmark = pytest.mark.unit

ROUTES = ("S3Notifications", "EventBridge")


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam_template(DEFAULT_TEMPLATE_PATH)


def chosen(value: Any, conditions: dict[str, bool]) -> Any:
    """The template value with each Fn::If on `conditions` decided (others left as they are) and AWS::NoValue
    dropped (None: no value)."""
    if isinstance(value, list):
        return [item for item in (chosen(item, conditions) for item in value) if item is not None]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Fn::If"} and value["Fn::If"][0] in conditions:
        name, if_true, if_false = value["Fn::If"]
        return chosen(if_true if conditions[name] else if_false, conditions)
    if value == {"Ref": "AWS::NoValue"}:
        return None
    return {key: item for key, item in ((k, chosen(v, conditions)) for k, v in value.items()) if item is not None}


def conditions_for(route: str, prefix: bool = False) -> dict[str, bool]:
    return {"UseEventBridgeIntake": route == "EventBridge", "HasObjectKeyPrefix": prefix}


def resources_for(sam: dict[str, Any], route: str, prefix: bool = False) -> dict[str, Any]:
    """The resources a stack with this IntakeRoute creates, their Fn::If decided."""
    conditions = conditions_for(route, prefix)
    return {
        logical_id: chosen(body, conditions)
        for logical_id, body in sam["Resources"].items()
        if conditions.get(body.get("Condition", ""), True)
    }


def accepted_key_suffixes() -> set[str]:
    """The key suffixes of every format the code takes: the image formats it decodes (Pillow's own extensions for
    them; MPO opens through the JPEG plugin) and the documents it renders."""
    formats = {*imaging.ACCEPTED_FORMATS, "MPO"}
    images = {suffix for suffix, fmt in Image.registered_extensions().items() if fmt in formats}
    return images | {f".{kind}" for kind in get_args(DocumentKind)}


def rule_key_filters(sam: dict[str, Any], prefix: bool = False) -> list[dict[str, Any]]:
    rule = resources_for(sam, "EventBridge", prefix)["UploadsEventRule"]
    return list(rule["Properties"]["EventPattern"]["detail"]["object"]["key"])


def test_the_intake_route_is_a_parameter_defaulting_to_s3_notifications(sam: dict[str, Any]) -> None:
    parameter = sam["Parameters"]["IntakeRoute"]
    assert parameter["Default"] == "S3Notifications"
    assert parameter["AllowedValues"] == list(ROUTES)
    assert sam["Conditions"]["UseEventBridgeIntake"] == {"Fn::Equals": [{"Ref": "IntakeRoute"}, "EventBridge"]}


def test_the_rule_lets_through_exactly_the_formats_the_code_takes(sam: dict[str, Any]) -> None:
    filters = rule_key_filters(sam)
    assert all(set(f) == {"suffix"} and set(f["suffix"]) == {"equals-ignore-case"} for f in filters), filters
    suffixes = [f["suffix"]["equals-ignore-case"] for f in filters]
    assert len(suffixes) == len(set(suffixes))
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in suffixes)
    # A format added to (or removed from) imaging.py or pages.py must be added to (removed from) the rule.
    assert set(suffixes) == accepted_key_suffixes()


def test_every_accepted_format_has_a_suffix_in_the_rule(sam: dict[str, Any]) -> None:
    suffixes = {f["suffix"]["equals-ignore-case"] for f in rule_key_filters(sam)}
    extensions = Image.registered_extensions()
    for fmt in imaging.ACCEPTED_FORMATS:
        assert any(extensions.get(suffix) == fmt for suffix in suffixes), fmt


def test_with_a_prefix_the_rule_matches_the_prefix_instead(sam: dict[str, Any]) -> None:
    # An event pattern cannot test detail.object.key twice: the prefix wins, the function filters the rest.
    assert rule_key_filters(sam, prefix=True) == [{"prefix": {"Ref": "ObjectKeyPrefix"}}]


def test_the_rule_takes_object_created_and_deleted_of_the_uploads_bucket_from_the_default_bus(
    sam: dict[str, Any],
) -> None:
    rule = resources_for(sam, "EventBridge")["UploadsEventRule"]["Properties"]
    pattern = rule["EventPattern"]
    assert rule["EventBusName"] == "default" and rule["State"] == "ENABLED"
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created", "Object Deleted"]
    # The bucket's own name expression (a Ref to the bucket would close a dependency cycle through the queue policy).
    assert pattern["detail"]["bucket"]["name"] == [sam["Resources"]["UploadsBucket"]["Properties"]["BucketName"]]
    assert set(pattern) == {"source", "detail-type", "detail"}
    assert set(pattern["detail"]) == {"bucket", "object"}


def test_the_rule_delivers_to_the_uploads_queue_and_dead_letters_what_it_cannot(sam: dict[str, Any]) -> None:
    (target,) = resources_for(sam, "EventBridge")["UploadsEventRule"]["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    # The existing dead-letter queue: undeliverable events share its alarm and its redrive with failed uploads.
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["UploadsDeadLetterQueue", "Arn"]}}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    assert "InputTransformer" not in target and "Input" not in target  # the handler reads S3's event as it is


@pytest.mark.parametrize("route", ROUTES)
def test_the_bucket_notifies_through_the_chosen_route_only(sam: dict[str, Any], route: str) -> None:
    notifications = resources_for(sam, route)["UploadsBucket"]["Properties"]["NotificationConfiguration"]
    if route == "EventBridge":
        assert notifications == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    else:
        assert set(notifications) == {"QueueConfigurations"}
        assert [c["Event"] for c in notifications["QueueConfigurations"]] == [
            "s3:ObjectCreated:*",
            "s3:ObjectRemoved:*",
        ]


@pytest.mark.parametrize("route", ROUTES)
def test_only_the_chosen_route_may_send_to_the_uploads_queue(sam: dict[str, Any], route: str) -> None:
    resources = resources_for(sam, route)
    (statement,) = resources["UploadsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Effect"] == "Allow"
    if route == "EventBridge":
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["UploadsEventRule", "Arn"]}}}
        assert "UploadsEventRule" in resources
    else:
        assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
        assert "UploadsEventRule" not in resources


@pytest.mark.parametrize("route", ROUTES)
def test_only_the_rule_may_dead_letter_into_the_dead_letter_queue(sam: dict[str, Any], route: str) -> None:
    resources = resources_for(sam, route)
    if route == "S3Notifications":
        assert "UploadsDeadLetterQueuePolicy" not in resources
        return
    policy = resources["UploadsDeadLetterQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "UploadsDeadLetterQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["UploadsEventRule", "Arn"]}}}


def test_the_rule_is_an_output_of_an_eventbridge_stack(sam: dict[str, Any]) -> None:
    output = sam["Outputs"]["UploadsEventRuleArn"]
    assert output["Condition"] == "UseEventBridgeIntake"
    assert output["Value"] == {"Fn::GetAtt": ["UploadsEventRule", "Arn"]}
