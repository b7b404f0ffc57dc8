"""The results bucket: documents' results, page ranges' partial results, and images staged for URL mode."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_errors import translate_aws_error

# A prefix with its own lifecycle rule in template.yaml (a day: the URLs are valid for minutes).
PAGE_IMAGES_PREFIX = "page-images/"
# A presigned URL long enough for a slow provider's queue, short enough to be worthless once leaked.
IMAGE_URL_SECONDS = 900


class S3ResultsBucket:
    def __init__(self, client: Any, bucket: str, *, url_seconds: int = IMAGE_URL_SECONDS) -> None:
        self._client = client
        self._bucket = bucket
        self._url_seconds = url_seconds

    @property
    def bucket(self) -> str:
        return self._bucket

    def put(self, key: str, body: bytes, content_type: str) -> str:
        try:
            self._client.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"PutObject s3://{self._bucket}/{key}") from exc
        return f"s3://{self._bucket}/{key}"

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
            data = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise translate_aws_error(exc, f"GetObject s3://{self._bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise translate_aws_error(exc, f"GetObject s3://{self._bucket}/{key}") from exc
        value = json.loads(data)
        return value if isinstance(value, dict) else None

    def url_for(self, jpeg: bytes) -> str:
        """Stage the prepared JPEG (named by its content: a retry reuses it) and sign a short-lived GET."""
        key = f"{PAGE_IMAGES_PREFIX}{hashlib.sha256(jpeg).hexdigest()}.jpg"
        self.put(key, jpeg, "image/jpeg")
        try:
            return str(
                self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=self._url_seconds
                )
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"presigning s3://{self._bucket}/{key}") from exc
