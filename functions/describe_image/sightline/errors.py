"""The domain's one language of failure: every error says whether retrying can help."""

from __future__ import annotations

from sightline.redaction import redact


class SightlineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    #: Stable, documented name stored in failed records (``error_type``).
    error_type = "SightlineError"
    #: A permanent error is the input's fault: it is recorded as failed and never retried.
    permanent = False

    def __init__(self, message: str) -> None:
        # Redacted at the source: the message is stored, published and logged, and may quote a provider that
        # echoed the API key or a presigned URL.
        message = redact(message)
        super().__init__(message)
        self.message = message


# --- Permanent: the object itself is the problem. Recorded as a failed record, notified, not retried.


class PermanentInputError(SightlineError):
    error_type = "PermanentInputError"
    permanent = True


class EmptyObjectError(PermanentInputError):
    error_type = "EmptyObject"


class ObjectTooLargeError(PermanentInputError):
    error_type = "ObjectTooLarge"

    @classmethod
    def for_size(cls, size: int, limit: int) -> ObjectTooLargeError:
        return cls(f"the object is {size:,} bytes, above the limit of {limit:,} bytes (MAX_OBJECT_BYTES)")


class NotAnImageError(PermanentInputError):
    error_type = "NotAnImage"


class UnsupportedImageFormatError(PermanentInputError):
    error_type = "UnsupportedImageFormat"


class CorruptImageError(PermanentInputError):
    error_type = "CorruptImage"


class ImageTooLargeError(PermanentInputError):
    """Too many pixels or absurd dimensions: refused from the header, before any decode."""

    error_type = "ImageTooLarge"


class ObjectNotFoundError(PermanentInputError):
    """The object (or that version of it) is gone; retrying cannot bring it back."""

    error_type = "ObjectNotFound"


class InvalidMetadataError(PermanentInputError):
    """The object's own sightline metadata (profile, language) names something that does not exist."""

    error_type = "InvalidMetadata"


class ModelRejectedImageError(PermanentInputError):
    """The model answered 400/422 for this image: the same request would fail again."""

    error_type = "ModelRejectedImage"


class InvalidModelOutputError(PermanentInputError):
    """The model answered, but not with the JSON we asked for (after one repair attempt)."""

    error_type = "InvalidModelOutput"


class TruncatedModelOutputError(InvalidModelOutputError):
    """The answer hit the output token limit (finish_reason=length): never stored as a success."""

    error_type = "TruncatedModelOutput"


class RepetitiveModelOutputError(TruncatedModelOutputError):
    """A streamed answer that kept repeating itself was cut off early instead of running to the limit."""

    error_type = "RepetitiveModelOutput"


class EmptyModelAnswerError(InvalidModelOutputError):
    """The model completed with no content at all: nothing to repair, so no repair call is paid for."""

    error_type = "EmptyModelAnswer"


class ModelRefusedError(PermanentInputError):
    """The model (or the provider's content filter) declined to describe this image.

    The model's own words go into the error message, never into alt text or a description.
    """

    error_type = "ModelRefused"


class RequestTooLargeError(PermanentInputError):
    """HTTP 413: a gateway refuses a request this size. The same request fails again, so it is not retried;
    the message says which settings make the request smaller."""

    error_type = "RequestTooLarge"


class ObjectChangedError(SightlineError):
    """The object was overwritten after the event was sent (ETag no longer matches).

    Neither the image's fault nor worth a retry: the newer version's own event will be applied.
    """

    error_type = "ObjectChanged"


class RecordRejectedError(SightlineError):
    """DynamoDB or SNS refused what we sent as invalid (ValidationException, InvalidParameter).

    Our fault, not the image's, and deterministic: the same write would be refused again, so the pipeline
    stores (or announces) a smaller version that says why instead of retrying into the DLQ.
    """

    error_type = "RecordRejected"


# --- Deferred: neither the object's fault nor worth retrying now. The item waits (parked in its record, or sent
# back to the queue with a delay) and is resumed when the reason is gone; it never burns a receive count.


class DeferredError(SightlineError):
    """Base of the reasons to hold an item back; ``resume_after_ms`` is when it is worth trying again (epoch ms)."""

    error_type = "Deferred"

    def __init__(self, message: str, resume_after_ms: int) -> None:
        super().__init__(message)
        self.resume_after_ms = resume_after_ms


class BudgetExhaustedError(DeferredError):
    """The day's spend cap (for the stack, or for the object's profile) is reached: no new model call starts."""

    error_type = "BudgetExhausted"


class ProviderPausedError(DeferredError):
    """The shared circuit breaker is open after a burst of 429/5xx across invocations: calls pause for a cool-down."""

    error_type = "ProviderPaused"


# --- Transient: fail the item so SQS redelivers it; after maxReceiveCount it lands in the DLQ.


class TransientError(SightlineError):
    error_type = "TransientError"


class ModelUnavailableError(TransientError):
    """429, 5xx, timeouts and connection errors from the model endpoint."""

    error_type = "ModelUnavailable"


class AwsThrottlingError(TransientError):
    error_type = "AwsThrottling"


class AwsUnavailableError(TransientError):
    error_type = "AwsUnavailable"


class ProviderResponseError(TransientError):
    """HTTP 200 whose body is not a chat completion (an HTML page, an error object, a broken stream).

    The provider's or a gateway's fault, never the image's: retried, then parked in the DLQ with this reason.
    """

    error_type = "InvalidProviderResponse"


class InProgressError(TransientError):
    """Another delivery holds the claim on this object version (or on identical content) right now.

    Retrying later finds its result instead of paying for the same description twice.
    """

    error_type = "InProgress"


class ConfigurationError(TransientError):
    """401/402/403/404 from the model, a missing permission or resource: our fault, not the image's.

    Retried (the operator may fix the key or the policy) and alarmed, never recorded as a failed image.
    """

    error_type = "Configuration"


class SettingsError(ValueError):
    """Invalid or missing settings, raised at cold start so misconfiguration fails fast."""
