"""S3 adapter: read the object version an event names, refusing oversize objects before the download."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_clients import DeadlineGuard
from sightline.adapters.aws_errors import translate_aws_error
from sightline.errors import ObjectTooLargeError
from sightline.events import ObjectEvent
from sightline.ports import FetchedObject, ObjectFacts

# The body is read in chunks so that the invocation's deadline is looked at between them; each socket read inside a
# chunk waits at most the client's read timeout, so a stalled body ends as a ReadTimeoutError (transient).
BODY_CHUNK_BYTES = 1024 * 1024


class S3ObjectStore:
    def __init__(self, client: Any, guard: DeadlineGuard | None = None) -> None:
        self._client = client
        self._guard = guard

    def fetch(self, event: ObjectEvent, max_bytes: int) -> FetchedObject:
        request: dict[str, Any] = {"Bucket": event.bucket, "Key": event.key}
        if event.version_id:
            request["VersionId"] = event.version_id  # the version the event is about, not whatever is newest
        elif event.etag:
            request["IfMatch"] = event.etag  # unversioned bucket: refuse bytes the event is not about
        try:
            response = self._client.get_object(**request)
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"GetObject {event.uri}", reading_object=True) from exc
        body = response["Body"]
        size = int(response.get("ContentLength") or 0)
        try:
            if size > max_bytes:
                raise ObjectTooLargeError.for_size(size, max_bytes)
            # Read at most one byte past the limit, in case ContentLength was absent or wrong.
            data = self._read(body, max_bytes + 1, f"reading {event.uri}")
            if len(data) > max_bytes:
                raise ObjectTooLargeError.for_size(len(data), max_bytes)
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"reading {event.uri}", reading_object=True) from exc
        finally:
            body.close()
        last_modified = response.get("LastModified")
        return FetchedObject(
            body=data,
            facts=ObjectFacts(
                etag=(response.get("ETag") or "").strip('"') or None,
                version_id=response.get("VersionId") or None,
                size=len(data),
                content_type=response.get("ContentType"),
                last_modified=last_modified.isoformat() if last_modified else None,
                metadata={str(k).lower(): str(v) for k, v in (response.get("Metadata") or {}).items()},
            ),
        )

    def _read(self, body: Any, limit: int, action: str) -> bytes:
        """Up to ``limit`` bytes of the streamed body; no chunk is started once a stalled read would outlast the
        invocation (AwsDeadlineError: transient)."""
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            if self._guard is not None:
                self._guard.before_body_read(action)
            chunk = body.read(min(BODY_CHUNK_BYTES, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
