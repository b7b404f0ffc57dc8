"""The queue a long document's page ranges travel through (the uploads queue: same consumer, same DLQ)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_errors import translate_aws_error
from sightline.errors import AwsUnavailableError

SEND_BATCH = 10  # SendMessageBatch's limit


class SqsWorkQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SEND_BATCH):
            batch = messages[start : start + SEND_BATCH]
            entries = [
                {"Id": str(index), "MessageBody": json.dumps(message, separators=(",", ":"))}
                for index, message in enumerate(batch)
            ]
            try:
                response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                raise translate_aws_error(exc, f"SendMessageBatch {self._queue_url}") from exc
            failed = response.get("Failed") or []
            if failed:
                # Re-sending every range is harmless (a range counts once): the retry sends them all again.
                first = failed[0]
                raise AwsUnavailableError(
                    f"SQS refused {len(failed)} of {len(entries)} page-range items ({first.get('Code')}: "
                    f"{first.get('Message')})"
                )
