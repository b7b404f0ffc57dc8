"""The uploads queue as a place to send work: long documents' page ranges, and deferred items sent back (same
consumer, same DLQ)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_errors import translate_aws_error
from sightline.errors import AwsUnavailableError

SEND_BATCH = 10  # SendMessageBatch's limit
MAX_DELAY_SECONDS = 900  # SQS's limit for a message's delay


class SqsWorkQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, messages: list[dict[str, Any]], delay_seconds: int = 0) -> None:
        delay = max(0, min(int(delay_seconds), MAX_DELAY_SECONDS))
        for start in range(0, len(messages), SEND_BATCH):
            batch = messages[start : start + SEND_BATCH]
            entries = [
                {"Id": str(index), "MessageBody": json.dumps(message, separators=(",", ":")), "DelaySeconds": delay}
                for index, message in enumerate(batch)
            ]
            try:
                response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                raise translate_aws_error(exc, f"SendMessageBatch {self._queue_url}") from exc
            failed = response.get("Failed") or []
            if failed:
                # Re-sending is harmless (a range counts once, a resumed event is claimed once): the retry sends all.
                first = failed[0]
                raise AwsUnavailableError(
                    f"SQS refused {len(failed)} of {len(entries)} messages ({first.get('Code')}: "
                    f"{first.get('Message')})"
                )
