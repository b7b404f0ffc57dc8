"""Translate botocore failures into the domain's errors, once, for every AWS adapter."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from sightline.errors import (
    AwsThrottlingError,
    AwsUnavailableError,
    ConfigurationError,
    ObjectChangedError,
    ObjectNotFoundError,
    RecordRejectedError,
    SightlineError,
)
from sightline.text import bounded

_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "SlowDown",
    "TooManyRequestsException",
    "LimitExceededException",
}
_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
# What we sent was refused as invalid: deterministic, so never retried as if it were an outage.
_REJECTED = {"ValidationException", "InvalidParameter", "InvalidParameterValue", "InvalidParameterException"}
_CONFIGURATION = {
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ResourceNotFoundException",
    "NoSuchBucket",
    "NotFoundException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
}


def translate_aws_error(exc: Exception, action: str, *, reading_object: bool = False) -> SightlineError:
    """Throttling and outages are transient; denied access and missing resources are configuration; a refused
    request is ours to fix. Only where the object itself is read (``reading_object``) is "not found" the
    object's own problem; elsewhere (a deleted topic, a missing table) it is configuration."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = exc.response.get("Error", {}).get("Message", "")
        text = bounded(f"{action} failed: {code or status}: {message}".rstrip(": "), 1_000)
        if code in _THROTTLING or status == 429:
            return AwsThrottlingError(text)
        if code == "PreconditionFailed" or status == 412:
            return ObjectChangedError(text)
        if code in _NOT_FOUND or (reading_object and status == 404):
            return ObjectNotFoundError(text) if reading_object else ConfigurationError(text)
        if code in _REJECTED:
            return RecordRejectedError(text)
        if code in _CONFIGURATION or status in (401, 403):
            return ConfigurationError(text)
        return AwsUnavailableError(text)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, BotoCoreError)):
        return AwsUnavailableError(bounded(f"{action} failed: {exc}", 1_000))
    return AwsUnavailableError(bounded(f"{action} failed: {type(exc).__name__}: {exc}", 1_000))
