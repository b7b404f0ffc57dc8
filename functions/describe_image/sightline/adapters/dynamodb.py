"""DynamoDB adapter: store one record per (bucket, key)."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_errors import translate_aws_error


class DynamoDBResultStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table_name = table_name
        self._serializer = TypeSerializer()

    def put(self, record: dict[str, Any]) -> None:
        item = {name: self._serializer.serialize(value) for name, value in record.items() if value is not None}
        try:
            self._client.put_item(TableName=self._table_name, Item=item)
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"PutItem {self._table_name}") from exc
