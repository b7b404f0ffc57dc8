"""Shared fixtures: event files, a moto server, the stack from template.yaml and the loopback model server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"

# Tests never reach a real account: fake credentials, and every AWS call goes to loopback.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_SERVICE_NAME="sightline",
    POWERTOOLS_METRICS_NAMESPACE="Sightline",
    POWERTOOLS_DEV="false",
)
os.environ.pop("AWS_PROFILE", None)


def load_event(name: str) -> dict[str, Any]:
    """The same event files `sam local invoke -e events/<name>` uses."""
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server on 127.0.0.1 for the session, as `make run` starts it."""
    from devkit.run import emulated_aws

    with emulated_aws() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    """A clean emulated account per test; boto3 everywhere (the handler included) talks to the moto server."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    yield boto3.session.Session(region_name="us-east-1")


@dataclass
class Deployment:
    """The stack plus a queue subscribed to the results topic, as a subscriber would have."""

    session: boto3.session.Session
    resources: Any
    notifications_url: str

    def client(self, name: str) -> Any:
        return self.session.client(name)

    def received_notifications(self) -> list[dict[str, Any]]:
        """Every notification delivered so far: the JSON message plus its message attributes."""
        from devkit.lambda_emulator import read_sns_notifications

        return read_sns_notifications(self.client("sqs"), self.notifications_url)

    def record(self, key: str) -> dict[str, Any] | None:
        from sightline.adapters.dynamodb import from_item

        item = (
            self.client("dynamodb")
            .get_item(TableName=self.resources.table, Key={"bucket": {"S": self.resources.bucket}, "key": {"S": key}})
            .get("Item")
        )
        return None if item is None else from_item(item)


@pytest.fixture
def deployment(aws: boto3.session.Session) -> Deployment:
    return deploy_with_subscriber(aws)


def deploy_with_subscriber(aws: boto3.session.Session, **parameters: str) -> Deployment:
    """The stack from template.yaml (with these parameters) plus a queue subscribed to its results topic."""
    from devkit.stack import deploy_stack

    resources = deploy_stack(aws, endpoint_url=os.environ["AWS_ENDPOINT_URL"], parameters=parameters)
    sqs = aws.client("sqs")
    notifications_url = sqs.create_queue(QueueName="notifications-subscriber")["QueueUrl"]
    notifications_arn = sqs.get_queue_attributes(QueueUrl=notifications_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws.client("sns").subscribe(TopicArn=resources.topic_arn, Protocol="sqs", Endpoint=notifications_arn)
    return Deployment(session=aws, resources=resources, notifications_url=notifications_url)


@pytest.fixture
def model() -> Iterator[Any]:
    """A scriptable OpenAI-compatible server on 127.0.0.1, reached through the real openai client."""
    from devkit.model_server import ModelServer, ScriptedResponder

    responder = ScriptedResponder()
    with ModelServer(responder) as server:
        server.responder = responder  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def function_env(deployment: Deployment, model: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The function's environment exactly as template.yaml sets it, pointed at the loopback model."""
    from sightline.composition import get_runtime

    env = dict(deployment.resources.function_environment)
    env.update(MODEL_BASE_URL=model.base_url, MODEL_API_KEY="test-key", MODEL_MAX_ATTEMPTS="1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import resume_app

    get_runtime.cache_clear()
    resume_app._runtime.cache_clear()
    yield env
    get_runtime.cache_clear()
    resume_app._runtime.cache_clear()
