"""The domain's one language of failure: every error says whether retrying can help."""

from __future__ import annotations


class SightlineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    #: Stable, documented name stored in failed records (``error_type``).
    error_type = "SightlineError"
    #: A permanent error is the input's fault: it is recorded as failed and never retried.
    permanent = False

    def __init__(self, message: str) -> None:
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


class ModelRejectedImageError(PermanentInputError):
    """The model answered 400/422 for this image: the same request would fail again."""

    error_type = "ModelRejectedImage"


class InvalidModelOutputError(PermanentInputError):
    """The model answered, but not with the JSON we asked for (after one repair attempt)."""

    error_type = "InvalidModelOutput"


class TruncatedModelOutputError(InvalidModelOutputError):
    """The answer hit the output token limit (finish_reason=length): never stored as a success."""

    error_type = "TruncatedModelOutput"


class ObjectChangedError(SightlineError):
    """The object was overwritten after the event was sent (ETag no longer matches).

    Neither the image's fault nor worth a retry: the newer version's own event will be applied.
    """

    error_type = "ObjectChanged"


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


class InProgressError(TransientError):
    """Another delivery holds the claim on this object version (or on identical content) right now.

    Retrying later finds its result instead of paying for the same description twice.
    """

    error_type = "InProgress"


class ConfigurationError(TransientError):
    """401/403/404 from the model or a missing permission: our fault, not the image's.

    Retried (the operator may fix the key or the policy) and alarmed, never recorded as a failed image.
    """

    error_type = "Configuration"


class SettingsError(ValueError):
    """Invalid or missing settings, raised at cold start so misconfiguration fails fast."""
