"""Records the AWS calls code makes through botocore while a role acts, as the IAM action and the stack resource that
authorize each (tests/integration/test_iam_calls.py compares them with tests/support/iam.py's CALLS)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import botocore.client
import botocore.signers
import pytest

# SDK operations authorized by an action of another name; every other one is authorized as <service>:<operation>
# (true of every operation the functions use; an operation that is not would show up as an unexpected call).
_ACTIONS = {
    ("s3", "HeadObject"): "s3:GetObject",  # a HEAD is authorized as the GET it stands for
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectVersions"): "s3:ListBucketVersions",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
}
# With a VersionId the call reads (or deletes) that version, which IAM authorizes by an action of its own.
_VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion"}
# The parameter naming the resource a call acts on. A Query on an index (IndexName) is on the index's ARN, a
# sub-resource of the table: it is counted as the table, as the template test reads ${Table.Arn}/index/... .
_RESOURCE_PARAMS = {
    "dynamodb": "TableName",
    "s3": "Bucket",
    "sqs": "QueueUrl",
    "sns": "TopicArn",
    "secretsmanager": "SecretId",
}
# Parameters worth showing when a call is reported.
_DETAIL_PARAMS = ("Key", "VersionId", "IndexName", "ConditionExpression")


def iam_action(service: str, operation: str, params: Mapping[str, Any]) -> str:
    """The IAM action that authorizes one SDK call."""
    action = _ACTIONS.get((service, operation), f"{service}:{operation}")
    if params.get("VersionId"):
        action = _VERSIONED.get(action, action)
    return action


@dataclass(frozen=True)
class Call:
    role: str
    action: str
    resource: str  # the stack's logical id, or "?<what was named>" when it names none of the stack's resources
    operation: str  # the SDK operation; "presigned GetObject" for a URL the role signed for someone else to use
    detail: str

    def __str__(self) -> str:
        return f"{self.operation}({self.detail})"


H = TypeVar("H", bound=Callable[..., Any])


class CallRecorder:
    """Every botocore call (any client, any thread) made while a role acts; calls made with no role acting (the
    test's own uploads and reads) are not recorded.

    The role is one process-wide value, not a context variable: the describe function makes its calls on worker
    threads, which inherit no context. Handlers therefore run one at a time. A presigned URL is recorded too: it is
    signed locally, but whoever uses it is authorized with the signing role's permissions.
    """

    def __init__(self, logical_ids: Mapping[str, str]) -> None:
        self._logical_ids = dict(logical_ids)  # physical id (table name, bucket, queue URL, ARN) -> logical id
        self._lock = threading.Lock()
        self._role: str | None = None
        self.calls: list[Call] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wraps every client's calls, and the presigning of clients created from now on (botocore attaches
        ``generate_presigned_url`` to each client class as it creates it)."""
        make_api_call = botocore.client.BaseClient._make_api_call
        presign = botocore.signers.generate_presigned_url

        def recorded_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            self._record(client, operation_name, api_params, operation_name)
            return make_api_call(client, operation_name, api_params)

        def recorded_presign(client: Any, ClientMethod: str, Params: Any = None, **kwargs: Any) -> Any:
            operation = client.meta.method_to_api_mapping.get(ClientMethod, ClientMethod)
            self._record(client, operation, Params or {}, f"presigned {operation}")
            return presign(client, ClientMethod, Params, **kwargs)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded_call)
        monkeypatch.setattr(botocore.signers, "generate_presigned_url", recorded_presign)

    @contextmanager
    def acting_as(self, role: str) -> Iterator[None]:
        with self._lock:
            assert self._role is None, f"{self._role} is still acting: run handlers one at a time"
            self._role = role
        try:
            yield
        finally:
            with self._lock:
                self._role = None

    def as_role(self, role: str, handler: H) -> H:
        """The handler, acting as ``role`` while it runs (for a QueueFeeder, whose own polling is not recorded)."""

        @functools.wraps(handler)
        def acting(*args: Any, **kwargs: Any) -> Any:
            with self.acting_as(role):
                return handler(*args, **kwargs)

        return acting  # type: ignore[return-value]

    def made(self, role: str) -> dict[str, set[str]]:
        """The actions the role's calls needed, by logical id (CALLS' shape)."""
        found: dict[str, set[str]] = {}
        for call in self.calls_of(role):
            found.setdefault(call.resource, set()).add(call.action)
        return found

    def calls_of(self, role: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.role == role]

    def _record(self, client: Any, operation: str, params: Mapping[str, Any], shown_as: str) -> None:
        role = self._role
        if role is None:
            return
        service = client.meta.service_model.service_name
        named = params.get(_RESOURCE_PARAMS.get(service, ""))
        resource = self._logical_ids.get(str(named), f"?{named}") if named is not None else f"?{service}"
        detail = ", ".join(f"{name}={params[name]!r}" for name in _DETAIL_PARAMS if params.get(name))
        call = Call(role, iam_action(service, operation, params), resource, shown_as, detail)
        with self._lock:
            self.calls.append(call)


__all__ = ["Call", "CallRecorder", "iam_action"]
