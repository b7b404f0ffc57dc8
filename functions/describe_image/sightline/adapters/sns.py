"""SNS adapter: publish the notification with filterable message attributes."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_errors import translate_aws_error
from sightline.text import storable


class SnsNotifier:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._client = client
        self._topic_arn = topic_arn

    def publish(self, message: dict[str, Any], attributes: dict[str, str]) -> None:
        try:
            self._client.publish(
                TopicArn=self._topic_arn,
                # The domain bounds and scrubs every field; storable() here keeps a stray surrogate from ever
                # becoming a UnicodeEncodeError inside botocore.
                Message=storable(json.dumps(message, ensure_ascii=False, separators=(",", ":"))),
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, "SNS Publish") from exc
