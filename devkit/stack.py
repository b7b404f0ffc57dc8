"""Deploys template.yaml into a moto server, so local runs and tests use the resources the template defines."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from samtranslator.metrics.metrics import Metrics
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import to_py27_compatible_template, undo_mark_unicode_str_in_template
from samtranslator.yaml_helper import yaml_parse

__all__ = [
    "DEFAULT_TEMPLATE_PATH",
    "OfflineManagedPolicyLoader",
    "StackDeploymentError",
    "StackResources",
    "TemplateResolutionError",
    "deploy_stack",
    "inline_mapping_lookups",
    "load_sam_template",
    "prune_undeployable_resources",
    "render_template",
    "transform_template",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE_PATH = REPO_ROOT / "template.yaml"
DEFAULT_REGION = "us-east-1"

# Logical ids in template.yaml that make up the documented local stack.
UPLOADS_BUCKET_ID = "UploadsBucket"
RESULTS_BUCKET_ID = "ResultsBucket"
UPLOADS_QUEUE_ID = "UploadsQueue"
DEAD_LETTER_QUEUE_ID = "UploadsDeadLetterQueue"
RESULTS_TABLE_ID = "ResultsTable"
CONTROL_TABLE_ID = "ControlTable"
RESULTS_TOPIC_ID = "ResultsTopic"
FUNCTION_ID = "DescribeImageFunction"
EVENT_RULE_ID = "UploadsEventRule"  # only with IntakeRoute=EventBridge

# Resource types the local stack leaves out. Moto would try to run the function in Docker for an event
# source mapping, and creates no secret; the code, its role and its permissions have no local use. Moto
# 5.2's CloudFormation skips the policies, the alarms and the alarm topic's (optional) email subscription
# (it lists them as resources without a logical id), and it does not enforce resource policies anyway.
UNDEPLOYABLE_RESOURCE_TYPES = frozenset(
    {
        "AWS::Lambda::Function",
        "AWS::Lambda::LayerVersion",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::Permission",
        "AWS::IAM::Role",
        "AWS::SecretsManager::Secret",
        "AWS::S3::BucketPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::CloudWatch::Alarm",
        "AWS::SNS::Subscription",
    }
)

# Placeholder artifact location for local CodeUri/ContentUri values, which the translator only accepts
# as S3 URIs (sam package uploads them first). The resources using it are pruned before deployment.
_LOCAL_ARTIFACT_URI = "s3://sightline-local-artifacts/{logical_id}"
_ARTIFACT_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}

_STACK_POLL_SECONDS = 0.1
_FAILED_STACK_STATUSES = frozenset({"CREATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_FAILED", "ROLLBACK_COMPLETE"})
_SUB_VARIABLE = re.compile(r"\$\{([^!}][^}]*)\}")


class StackDeploymentError(RuntimeError):
    """The stack did not reach CREATE_COMPLETE."""


class TemplateResolutionError(ValueError):
    """A template value uses an intrinsic function or reference this module cannot resolve locally."""


class OfflineManagedPolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader, which lists AWS managed policies through IAM.

    The translator only consults it for managed policies named in a function's Policies; the names
    below are those SAM itself attaches, so the answer is correct offline.
    """

    POLICY_ARNS: Mapping[str, str] = {
        "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "AWSLambdaSQSQueueExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
        "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }

    def load(self) -> dict[str, str]:
        return dict(self.POLICY_ARNS)


@dataclass(frozen=True)
class StackResources:
    """Physical ids of the deployed stack, and the function settings the template gives them."""

    bucket: str
    # Document results (results/), presigned page images (page-images/) and page-range results (work/).
    results_bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    table: str
    topic_arn: str
    # Budget counters and the provider's circuit breaker (CONTROL_TABLE).
    control_table: str
    # The function's environment variables with the deployed names filled in; variables naming a
    # resource the local stack does not have (MODEL_API_KEY_SECRET_ARN) are left out.
    function_environment: dict[str, str]
    function_timeout: int
    batch_size: int
    max_receive_count: int
    # IntakeRoute=EventBridge: the rule forwarding the bucket's events to the uploads queue (None: S3 notifications).
    event_rule_arn: str | None = None


def load_sam_template(template_path: Path) -> dict[str, Any]:
    """Reads a SAM/CloudFormation YAML template, short-form tags (!Ref, !Sub, ...) included."""
    return yaml_parse(template_path.read_text(encoding="utf-8"))


def transform_template(
    sam_template: Mapping[str, Any],
    parameters: Mapping[str, str] | None = None,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """Expands the SAM transform offline, as samtranslator.translator.transform.transform does.

    The translator is built here rather than through transform() so that it takes the region from an
    explicit session instead of the process environment. Local CodeUri/ContentUri paths are replaced
    with a placeholder S3 URI first.
    """
    template = copy.deepcopy(dict(sam_template))
    for logical_id, resource in template.get("Resources", {}).items():
        artifact_property = _ARTIFACT_PROPERTIES.get(resource.get("Type", ""))
        properties = resource.get("Properties", {})
        if artifact_property and isinstance(properties.get(artifact_property), str):
            properties[artifact_property] = _LOCAL_ARTIFACT_URI.format(logical_id=logical_id)

    parameter_values: dict[str, Any] = dict(parameters or {})
    to_py27_compatible_template(template, parameter_values)
    metrics = Metrics("ServerlessTransform")  # publishes nowhere; published below so it does not warn
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=region), metrics=metrics)
    transformed = translator.translate(
        template, parameter_values=parameter_values, get_managed_policy_map=OfflineManagedPolicyLoader().load
    )
    metrics.publish()
    return undo_mark_unicode_str_in_template(transformed)


def prune_undeployable_resources(template: Mapping[str, Any]) -> dict[str, Any]:
    """Drops what moto must not or cannot deploy (UNDEPLOYABLE_RESOURCE_TYPES), and then every resource
    and output that references something dropped, and dropped names from DependsOn."""
    pruned = copy.deepcopy(dict(template))
    resources: dict[str, Any] = pruned.get("Resources", {})
    removed = {logical_id for logical_id, body in resources.items() if body["Type"] in UNDEPLOYABLE_RESOURCE_TYPES}
    while True:
        dependents = {
            logical_id
            for logical_id, body in resources.items()
            if logical_id not in removed and _referenced_names(body.get("Properties", {})) & removed
        }
        if not dependents:
            break
        removed |= dependents
    for logical_id in removed:
        resources.pop(logical_id, None)
    for body in resources.values():
        depends_on = body.get("DependsOn")
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        if depends_on is not None:
            kept = [name for name in depends_on if name not in removed]
            if kept:
                body["DependsOn"] = kept
            else:
                del body["DependsOn"]
    outputs: dict[str, Any] = pruned.get("Outputs", {})
    for output_name in [name for name, output in outputs.items() if _referenced_names(output) & removed]:
        del outputs[output_name]
    return pruned


def inline_mapping_lookups(template: Mapping[str, Any], parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Replaces each Fn::FindInMap whose keys are literals or parameters with the value it finds.

    Moto turns Number parameters into ints and then fails to find them among the (string) mapping keys.
    """
    inlined = copy.deepcopy(dict(template))
    resolver = _IntrinsicResolver(template=inlined, parameters=parameters or {})

    def inline(value: Any) -> Any:
        if isinstance(value, list):
            return [inline(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Fn::FindInMap"}:
            try:
                return resolver.resolve(value)
            except TemplateResolutionError:
                return value  # keys depend on something only CloudFormation knows; leave it to moto
        return {key: inline(item) for key, item in value.items()}

    inlined["Resources"] = inline(inlined.get("Resources", {}))
    return inlined


def render_template(
    template_path: Path = DEFAULT_TEMPLATE_PATH,
    parameters: dict[str, str] | None = None,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """Returns template.yaml as the CloudFormation template the local (moto) stack is created from."""
    transformed = transform_template(load_sam_template(template_path), parameters, region)
    return inline_mapping_lookups(prune_undeployable_resources(transformed), parameters)


def deploy_stack(
    session: boto3.session.Session,
    stack_name: str = "sightline",
    template_path: Path = DEFAULT_TEMPLATE_PATH,
    parameters: dict[str, str] | None = None,
    endpoint_url: str | None = None,
    timeout_seconds: float = 60.0,
) -> StackResources:
    """Creates the stack from template.yaml in (moto) CloudFormation and returns its resources.

    Moto's CloudFormation applies only the encryption of a bucket, so its versioning, public access block,
    ownership controls, lifecycle rules and NotificationConfiguration are applied afterwards through the
    S3 API from the same template, which stays the single source of truth. With IntakeRoute=EventBridge, moto
    deploys the template's rule itself and routes the bucket's events through it (see
    emulate_documented_s3_eventbridge_events for the one thing devkit corrects: the event's content).
    """
    region = session.region_name or DEFAULT_REGION

    def client(service_name: str) -> Any:
        return session.client(service_name, region_name=region, endpoint_url=endpoint_url)

    parameters = dict(parameters or {})
    sam_template = load_sam_template(template_path)
    transformed = transform_template(sam_template, parameters, region)
    deployable = inline_mapping_lookups(prune_undeployable_resources(transformed), parameters)

    cloudformation = client("cloudformation")
    stack_id = cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(deployable),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )["StackId"]
    _wait_for_stack_creation(cloudformation, stack_id, timeout_seconds)

    # Moto lists a resource whose Condition is false (UploadsEventRule with S3 notifications) without a logical id.
    physical_ids = {
        resource["LogicalResourceId"]: resource["PhysicalResourceId"]
        for resource in cloudformation.describe_stack_resources(StackName=stack_id)["StackResources"]
        if "LogicalResourceId" in resource
    }
    sqs = client("sqs")
    queue_arns = {
        logical_id: _queue_arn(sqs, physical_ids[logical_id]) for logical_id in (UPLOADS_QUEUE_ID, DEAD_LETTER_QUEUE_ID)
    }
    resolver = _IntrinsicResolver(
        template=transformed,
        parameters=parameters,
        pseudo_parameters=_pseudo_parameters(stack_id, stack_name, region),
        physical_ids=physical_ids,
        attributes={(logical_id, "Arn"): arn for logical_id, arn in queue_arns.items()},
    )

    s3 = client("s3")
    for bucket_id in (UPLOADS_BUCKET_ID, RESULTS_BUCKET_ID):
        bucket_properties = resolver.resolve(transformed["Resources"][bucket_id].get("Properties", {}))
        _apply_bucket_properties_moto_skips(s3, physical_ids[bucket_id], bucket_properties)
    # Moto's CloudFormation leaves a table's TTL disabled: apply the template's through the DynamoDB API.
    dynamodb = client("dynamodb")
    for logical_id, resource in transformed["Resources"].items():
        ttl = (
            resource.get("Properties", {}).get("TimeToLiveSpecification")
            if resource["Type"] == "AWS::DynamoDB::Table"
            else None
        )
        if ttl and logical_id in physical_ids:
            dynamodb.update_time_to_live(
                TableName=physical_ids[logical_id],
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": bool(ttl["Enabled"])},
            )

    function_properties = transformed["Resources"][FUNCTION_ID]["Properties"]
    queue_properties = transformed["Resources"][UPLOADS_QUEUE_ID]["Properties"]
    event_rule_arn = None
    if EVENT_RULE_ID in physical_ids:
        event_rule_arn = client("events").describe_rule(Name=physical_ids[EVENT_RULE_ID])["Arn"]
    return StackResources(
        bucket=physical_ids[UPLOADS_BUCKET_ID],
        results_bucket=physical_ids[RESULTS_BUCKET_ID],
        queue_url=physical_ids[UPLOADS_QUEUE_ID],
        queue_arn=queue_arns[UPLOADS_QUEUE_ID],
        dlq_url=physical_ids[DEAD_LETTER_QUEUE_ID],
        dlq_arn=queue_arns[DEAD_LETTER_QUEUE_ID],
        table=physical_ids[RESULTS_TABLE_ID],
        control_table=physical_ids[CONTROL_TABLE_ID],
        topic_arn=physical_ids[RESULTS_TOPIC_ID],
        function_environment=_function_environment(function_properties, resolver),
        function_timeout=int(resolver.resolve(function_properties["Timeout"])),
        batch_size=int(resolver.resolve(_event_source_mapping(transformed, FUNCTION_ID)["BatchSize"])),
        max_receive_count=int(resolver.resolve(queue_properties["RedrivePolicy"]["maxReceiveCount"])),
        event_rule_arn=event_rule_arn,
    )


def _wait_for_stack_creation(cloudformation: Any, stack_id: str, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        status = cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"]
        if status == "CREATE_COMPLETE":
            return
        if status in _FAILED_STACK_STATUSES or time.monotonic() > deadline:
            events = cloudformation.describe_stack_events(StackName=stack_id)["StackEvents"]
            reasons = [
                f"{event['LogicalResourceId']}: {event['ResourceStatus']} {event['ResourceStatusReason']}"
                for event in events
                if event.get("ResourceStatusReason")
            ]
            raise StackDeploymentError(f"stack {stack_id} is {status}: " + ("; ".join(reasons) or "no reason given"))
        time.sleep(_STACK_POLL_SECONDS)


def _queue_arn(sqs: Any, queue_url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _pseudo_parameters(stack_id: str, stack_name: str, region: str) -> dict[str, str]:
    # A stack id is arn:<partition>:cloudformation:<region>:<account>:stack/<name>/<uuid>.
    _, partition, _, _, account_id, _ = stack_id.split(":", 5)
    return {
        "AWS::AccountId": account_id,
        "AWS::Partition": partition,
        "AWS::Region": region,
        "AWS::StackId": stack_id,
        "AWS::StackName": stack_name,
        "AWS::URLSuffix": "amazonaws.com",
    }


def _apply_bucket_properties_moto_skips(s3: Any, bucket: str, properties: Mapping[str, Any]) -> None:
    """Applies the resolved bucket properties that moto's CloudFormation ignores, through the S3 API."""
    if "VersioningConfiguration" in properties:
        s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": properties["VersioningConfiguration"]["Status"]}
        )
    if "PublicAccessBlockConfiguration" in properties:
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=dict(properties["PublicAccessBlockConfiguration"])
        )
    if "OwnershipControls" in properties:
        # The same shape in CloudFormation and the S3 API; moto stores it (and enforces nothing).
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=dict(properties["OwnershipControls"]))
    if "LifecycleConfiguration" in properties:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                "Rules": [_lifecycle_rule(rule) for rule in properties["LifecycleConfiguration"]["Rules"]]
            },
        )
    if "NotificationConfiguration" in properties:
        notification_configuration = _notification_configuration(properties["NotificationConfiguration"])
        if "EventBridgeConfiguration" in notification_configuration:
            emulate_documented_s3_eventbridge_events()
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=notification_configuration)


# CloudFormation's lifecycle rule properties that _lifecycle_rule translates; any other one is refused rather
# than silently left out of the local bucket.
_LIFECYCLE_RULE_PROPERTIES = frozenset(
    {"Id", "Status", "Prefix", "ExpirationInDays", "AbortIncompleteMultipartUpload", "NoncurrentVersionExpiration"}
)


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A bucket's CloudFormation lifecycle rule (resolved), in the shape of the S3 API."""
    unsupported = set(rule) - _LIFECYCLE_RULE_PROPERTIES
    if unsupported:
        raise TemplateResolutionError(f"lifecycle rule properties not supported locally: {sorted(unsupported)}")
    api_rule: dict[str, Any] = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        api_rule["ID"] = rule["Id"]
    if "ExpirationInDays" in rule:
        api_rule["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        api_rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpiration" in rule:
        noncurrent = rule["NoncurrentVersionExpiration"]
        unsupported = set(noncurrent) - {"NoncurrentDays"}
        if unsupported:
            raise TemplateResolutionError(
                f"NoncurrentVersionExpiration properties not supported locally: {sorted(unsupported)}"
            )
        api_rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(noncurrent["NoncurrentDays"])}
    return api_rule


def _notification_configuration(cloudformation_notifications: Mapping[str, Any]) -> dict[str, Any]:
    """A bucket's CloudFormation QueueConfigurations and EventBridgeConfiguration, in the shape of the S3 API (the
    template has no topic or function notifications)."""
    unsupported = set(cloudformation_notifications) - {"QueueConfigurations", "EventBridgeConfiguration"}
    if unsupported:
        raise TemplateResolutionError(f"notification configurations not supported locally: {sorted(unsupported)}")
    queue_configurations = []
    for queue_configuration in cloudformation_notifications.get("QueueConfigurations", []):
        api_configuration: dict[str, Any] = {
            "QueueArn": queue_configuration["Queue"],
            "Events": [queue_configuration["Event"]],
        }
        filter_rules = queue_configuration.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if filter_rules:
            api_configuration["Filter"] = {
                "Key": {"FilterRules": [{"Name": rule["Name"], "Value": rule["Value"]} for rule in filter_rules]}
            }
        queue_configurations.append(api_configuration)
    api_notifications: dict[str, Any] = {"QueueConfigurations": queue_configurations}
    event_bridge = cloudformation_notifications.get("EventBridgeConfiguration", {})
    if str(event_bridge.get("EventBridgeEnabled", "")).lower() == "true":
        api_notifications["EventBridgeConfiguration"] = {}  # the S3 API's way of saying "enabled"
    return api_notifications


# --- Emulation glue: what S3 sends to EventBridge ---------------------------------------------------------------
#
# Moto 5.2 sends a bucket's events to EventBridge when its notification configuration enables it, matches them
# against the deployed rules' patterns (prefix, suffix, equals-ignore-case included) and delivers the matches to their
# SQS targets: the routing the template defines is moto's own, and a wrong rule fails the tests. The event it sends is
# not the one S3 sends, though: every event has the same sequencer ("617f08299329d189": a deletion looks like a
# duplicate of the creation it follows) and the same id, the ETag under "eTag" instead of "etag", the reason
# "ObjectCreated" / "ObjectRemoved" instead of the S3 API's name, and no deletion-type; and it is sent to every bus,
# not only the default one. Devkit replaces that one function of moto with the shape S3 documents
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html), increasing sequencers included. Matching and
# delivery stay moto's. This works on a moto running in this process (devkit.run.emulated_aws, the tests' server).
# Moto sends nothing, on either route, for a delete marker (DeleteObject without a version id on a versioned bucket)
# or a lifecycle expiration: locally, deleting a key's last version is what produces a deletion event.

_logger = logging.getLogger(__name__)

# The S3 API behind a notification event, as the EventBridge event's detail.reason names it.
_EVENTBRIDGE_REASONS = {
    "s3:ObjectCreated:Put": "PutObject",
    "s3:ObjectCreated:Post": "POST Object",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
    "s3:ObjectRemoved:Delete": "DeleteObject",
    "s3:ObjectRemoved:DeleteMarkerCreated": "DeleteObject",
}
# S3's sequencer grows with each change of a key: one counter for the whole process does too. 18 hex digits, as S3's.
_sequencers = itertools.count(time.time_ns())
_moto_send_event_bridge_message: Callable[..., None] | None = None


def emulate_documented_s3_eventbridge_events() -> None:
    """Makes the moto in this process send S3's documented EventBridge events (idempotent)."""
    global _moto_send_event_bridge_message
    from moto.s3 import notifications

    if _moto_send_event_bridge_message is None:
        _moto_send_event_bridge_message = notifications._send_event_bridge_message
        notifications._send_event_bridge_message = _send_documented_s3_eventbridge_event


def _send_documented_s3_eventbridge_event(account_id: str, bucket: Any, event_name: Any, key: Any) -> None:
    """Takes the place of moto.s3.notifications._send_event_bridge_message (same arguments)."""
    name = str(getattr(event_name, "value", event_name))  # moto passes its S3NotificationEvent enum
    reason = _EVENTBRIDGE_REASONS.get(name)
    if reason is None:  # tags, ACLs, restores...: no rule of the stack takes them; moto's own event it is
        assert _moto_send_event_bridge_message is not None
        _moto_send_event_bridge_message(account_id, bucket, event_name, key)
        return
    try:
        from moto.core.utils import unix_time
        from moto.events.models import events_backends

        created = name.startswith("s3:ObjectCreated")
        obj: dict[str, Any] = {"key": key.name}  # as stored: EventBridge events do not URL-encode the key
        if created:
            obj.update(size=key.size, etag=key.etag.strip('"'))
        if bucket.is_versioned:
            obj["version-id"] = key.version_id
        obj["sequencer"] = f"{next(_sequencers):018X}"
        detail: dict[str, Any] = {
            "version": "0",
            "bucket": {"name": bucket.name},
            "object": obj,
            "request-id": uuid.uuid4().hex[:16].upper(),
            "requester": account_id,
            "source-ip-address": "127.0.0.1",
            "reason": reason,
        }
        if not created:
            detail["deletion-type"] = (
                "Delete Marker Created" if name.endswith("DeleteMarkerCreated") else "Permanently Deleted"
            )
        event: Any = {  # moto's EventMessageType
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Created" if created else "Object Deleted",
            "source": "aws.s3",
            "account": account_id,
            "time": unix_time(),  # moto's SQS target writes it as the ISO time EventBridge sends
            "region": bucket.region_name,
            "resources": [bucket.arn],
            "detail": detail,
        }
        default_bus = events_backends[account_id][bucket.region_name].event_buses.get("default")
        for rule in list(default_bus.rules.values()) if default_bus else []:
            if rule.state == "ENABLED":
                rule.send_to_targets(event, transform_input=False)
    except Exception:  # S3 delivers to EventBridge after the request: a failure never fails the request
        _logger.exception("emulated S3 → EventBridge delivery failed for s3://%s/%s", bucket.name, key.name)


def _function_environment(function_properties: Mapping[str, Any], resolver: _IntrinsicResolver) -> dict[str, str]:
    variables: Mapping[str, Any] = function_properties.get("Environment", {}).get("Variables", {})
    environment = {}
    for name, value in variables.items():
        if _referenced_names(value) - resolver.known_names:
            continue  # names a resource the local stack does not have
        environment[name] = str(resolver.resolve(value))
    return environment


def _event_source_mapping(template: Mapping[str, Any], function_id: str) -> Mapping[str, Any]:
    for body in template["Resources"].values():
        properties = body.get("Properties", {})
        if body["Type"] == "AWS::Lambda::EventSourceMapping" and properties.get("FunctionName") == {"Ref": function_id}:
            return properties
    raise TemplateResolutionError(f"no event source mapping for {function_id}")


def _referenced_names(value: Any) -> set[str]:
    """Logical ids and parameter names that a template value refers to (Ref, Fn::GetAtt, Fn::Sub)."""
    return set(_iter_referenced_names(value))


def _iter_referenced_names(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from _iter_referenced_names(item)
    elif isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref" and isinstance(argument, str):
                yield argument
            elif key == "Fn::GetAtt":
                yield (argument.split(".", 1)[0] if isinstance(argument, str) else argument[0])
            elif key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                for name in _SUB_VARIABLE.findall(text):
                    if name.split(".", 1)[0] not in variables:
                        yield name.split(".", 1)[0]
                yield from _iter_referenced_names(variables)
            else:
                yield from _iter_referenced_names(argument)


class _NoValue:
    """AWS::NoValue: removes the property or list item holding it."""


_NO_VALUE = _NoValue()


class _IntrinsicResolver:
    """Evaluates the CloudFormation intrinsic functions this module needs against a deployed stack."""

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str],
        pseudo_parameters: Mapping[str, str] | None = None,
        physical_ids: Mapping[str, str] | None = None,
        attributes: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        declared = template.get("Parameters", {})
        self._parameters = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}
        self._parameters.update(parameters)
        self._pseudo_parameters = pseudo_parameters or {}
        self._physical_ids = physical_ids or {}
        self._attributes = attributes or {}
        self._mappings: Mapping[str, Any] = template.get("Mappings", {})
        self._conditions: Mapping[str, Any] = template.get("Conditions", {})
        self._functions: dict[str, Callable[[Any], Any]] = {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::If": self._if,
            "Fn::Join": lambda argument: argument[0].join(str(item) for item in self.resolve(argument[1])),
            "Fn::Select": lambda argument: self.resolve(argument[1])[int(self.resolve(argument[0]))],
            "Fn::Split": lambda argument: str(self.resolve(argument[1])).split(argument[0]),
            "Fn::FindInMap": lambda argument: self._find_in_map(*(str(self.resolve(item)) for item in argument)),
            "Fn::Equals": lambda argument: self.resolve(argument[0]) == self.resolve(argument[1]),
            "Fn::Not": lambda argument: not self.resolve(argument[0]),
            "Fn::And": lambda argument: all(self.resolve(item) for item in argument),
            "Fn::Or": lambda argument: any(self.resolve(item) for item in argument),
            "Condition": self._condition,
        }

    @property
    def known_names(self) -> set[str]:
        """Names a Ref may resolve to: parameters, pseudo parameters and deployed resources."""
        return set(self._parameters) | set(self._pseudo_parameters) | set(self._physical_ids) | {"AWS::NoValue"}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key in self._functions:
                return self._functions[key](argument)
            if key.startswith("Fn::"):
                raise TemplateResolutionError(f"{key} is not supported locally")
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        for source in (self._parameters, self._pseudo_parameters, self._physical_ids):
            if name in source:
                return source[name]
        raise TemplateResolutionError(f"Ref {name} names nothing in the local stack")

    def _get_att(self, argument: str | list[str]) -> str:
        logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
        try:
            return self._attributes[(logical_id, attribute)]
        except KeyError:
            raise TemplateResolutionError(f"Fn::GetAtt {logical_id}.{attribute} is not known locally") from None

    def _sub(self, argument: str | list[Any]) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.resolve(value) for name, value in variables.items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in values:
                return str(values[name])
            if "." in name:
                return str(self._get_att(name))
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(substitute, text).replace("${!", "${")

    def _if(self, argument: list[Any]) -> Any:
        condition_name, value_if_true, value_if_false = argument
        return self.resolve(value_if_true if self._condition(condition_name) else value_if_false)

    def _condition(self, name: str) -> bool:
        return bool(self.resolve(self._conditions[name]))

    def _find_in_map(self, map_name: str, top_level_key: str, second_level_key: str) -> Any:
        try:
            return self._mappings[map_name][top_level_key][second_level_key]
        except KeyError:
            raise TemplateResolutionError(
                f"Fn::FindInMap {map_name}/{top_level_key}/{second_level_key} is not in the template"
            ) from None
