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
    SightlineError,
)

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


def translate_aws_error(exc: Exception, action: str) -> SightlineError:
    """Throttling and outages are transient; missing objects are permanent; denied access is configuration."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{action} failed: {code or status}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
        if code in _THROTTLING or status == 429:
            return AwsThrottlingError(text)
        if code == "PreconditionFailed" or status == 412:
            return ObjectChangedError(text)
        if code in _NOT_FOUND:
            return ObjectNotFoundError(text)
        if code in _CONFIGURATION or status in (401, 403):
            return ConfigurationError(text)
        return AwsUnavailableError(text)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, BotoCoreError)):
        return AwsUnavailableError(f"{action} failed: {exc}")
    return AwsUnavailableError(f"{action} failed: {type(exc).__name__}: {exc}")
