"""DynamoDB adapters: the results table (one record per key, claimed by conditional writes) and the content cache."""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal
from typing import Any, Literal

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_errors import translate_aws_error
from sightline.events import ObjectEvent
from sightline.ordering import LEGACY_TIMED_PREFIX, SEQUENCED_PREFIX, refused_claim, refused_forced_claim
from sightline.ports import Claim, ModelUsage, ReviewChangedError
from sightline.records import (
    DEFERRED,
    ERROR_MESSAGE_MAX_BYTES,
    FAILED,
    PARTIAL,
    PROCESSING,
    SUCCEEDED,
    utc_now_iso,
)
from sightline.text import bounded

_serializer = TypeSerializer()
STATUS_INDEX = "status-index"  # template.yaml: records by status, oldest first
_deserializer = TypeDeserializer()

# One delivery may apply an event when the key is new, when its event is newer than the one applied, when the
# same event's earlier claim was released or expired (a crashed or timed-out delivery), or when the same event was
# parked (deferred) and is now sent again. A document described in page ranges (fanout_order set for the event) is
# no longer its event's to re-claim: the ranges' own items finish it.
_CLAIM_CONDITION = (
    "attribute_not_exists(order_key) OR order_key < :order"
    " OR (order_key = :order AND ((#status = :processing AND claim_until < :now"
    " AND (attribute_not_exists(fanout_order) OR fanout_order <> :order)) OR #status = :deferred))"
)
# A real S3 event also takes over a record ordered by the old, too-high key of events without a sequencer.
_LEGACY_CONDITION = " OR begins_with(order_key, :legacy)"
# A forced backfill item takes a finished record once per run (and its own released or parked claim), keeping the
# record's order: a real event still outranks it.
_FORCED_CLAIM_CONDITION = (
    "attribute_exists(order_key) AND ("
    "(#status IN (:succeeded, :partial, :failed) AND (attribute_not_exists(forced_run) OR forced_run <> :run))"
    " OR (forced_run = :run AND ((#status = :processing AND claim_until < :now) OR #status = :deferred)))"
)
_CLAIM_UPDATE = (
    "SET #status = :processing, claim_id = :claim, claim_until = :until, notified = :false"
    # a new claim starts the page-range count afresh (a retried fan-out sends every range again)
    " REMOVE ranges_done, fanout_order, ranges_total, fanout_pages, deferred_event, deferred_until"
)
# How many parked records one query reads (the resumer pages through the rest on its next run).
DEFERRED_PAGE = 100


def _dynamodb_value(value: Any) -> Any:
    """DynamoDB takes numbers as Decimal, not float (extracted fields hold floats); NaN and infinity not at all."""
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _dynamodb_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_dynamodb_value(item) for item in value]
    return value


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(_dynamodb_value(value)) for name, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    """DynamoDB numbers arrive as Decimal, which json cannot encode: the domain speaks int and float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | set):
        return [_plain(item) for item in value]
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def conditional_write(client: Any, table_name: str, action: str, **request: Any) -> bool:
    """A put/update/delete whose failed condition is an answer (False), not an error."""
    try:
        getattr(client, action)(TableName=table_name, **request)
        return True
    except ClientError as exc:
        if _condition_failed(exc):
            return False
        raise translate_aws_error(exc, f"{action} {table_name}") from exc
    except BotoCoreError as exc:
        raise translate_aws_error(exc, f"{action} {table_name}") from exc


class DynamoDBResultStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def _write(self, action: str, **request: Any) -> bool:
        return conditional_write(self._client, self._table_name, action, **request)

    @staticmethod
    def _key(bucket: str, key: str) -> dict[str, Any]:
        return {"Key": to_item({"bucket": bucket, "key": key})}

    def claim(
        self, event: ObjectEvent, *, order: str, version: str, claim_id: str, until_ms: int, now_ms: int
    ) -> Claim:
        condition = _CLAIM_CONDITION
        values: dict[str, Any] = {
            ":order": order,
            ":version": version,
            ":processing": PROCESSING,
            ":deferred": DEFERRED,
            ":claim": claim_id,
            ":until": until_ms,
            ":now": now_ms,
            ":false": False,
        }
        if order.startswith(SEQUENCED_PREFIX):
            condition += _LEGACY_CONDITION
            values[":legacy"] = LEGACY_TIMED_PREFIX
        claimed, current = self._claim_update(
            event,
            UpdateExpression=_CLAIM_UPDATE.replace("SET ", "SET order_key = :order, version_token = :version, ", 1),
            ConditionExpression=condition,
            ExpressionAttributeValues=to_item(values),
        )
        if claimed:
            return Claim("claimed", current)
        backfill = event.backfill
        if backfill is None or not backfill.force:
            return refused_claim(current, order)
        return self._claim_forced(event, backfill.run, version, claim_id, until_ms, now_ms)

    def _claim_forced(
        self, event: ObjectEvent, run: str, version: str, claim_id: str, until_ms: int, now_ms: int
    ) -> Claim:
        claimed, current = self._claim_update(
            event,
            UpdateExpression=_CLAIM_UPDATE.replace("SET ", "SET version_token = :version, forced_run = :run, ", 1),
            ConditionExpression=_FORCED_CLAIM_CONDITION,
            ExpressionAttributeValues=to_item(
                {
                    ":version": version,
                    ":run": run,
                    ":succeeded": SUCCEEDED,
                    ":partial": PARTIAL,
                    ":failed": FAILED,
                    ":processing": PROCESSING,
                    ":deferred": DEFERRED,
                    ":claim": claim_id,
                    ":until": until_ms,
                    ":now": now_ms,
                    ":false": False,
                }
            ),
        )
        if claimed and current:
            return Claim("claimed", current, order=str(current["order_key"]))
        return refused_forced_claim(current, run)

    def _claim_update(self, event: ObjectEvent, **request: Any) -> tuple[bool, dict[str, Any] | None]:
        """(claimed, the record before the write) for a claim's conditional update."""
        try:
            response = self._client.update_item(
                TableName=self._table_name,
                **self._key(event.bucket, event.key),
                ExpressionAttributeNames={"#status": "status"},
                ReturnValues="ALL_OLD",  # the previous item: usage paid by released deliveries of this event
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **request,
            )
            return True, from_item(response.get("Attributes") or {}) or None
        except ClientError as exc:
            if not _condition_failed(exc):
                raise translate_aws_error(exc, f"UpdateItem {self._table_name}") from exc
            return False, from_item(exc.response.get("Item") or {}) or self._get(event.bucket, event.key)
        except BotoCoreError as exc:
            raise translate_aws_error(exc, f"UpdateItem {self._table_name}") from exc

    def _get(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            item = self._client.get_item(TableName=self._table_name, ConsistentRead=True, **self._key(bucket, key))
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"GetItem {self._table_name}") from exc
        return from_item(item["Item"]) if "Item" in item else None

    def complete(self, record: dict[str, Any], claim_id: str) -> bool:
        """Store the result only while this delivery still holds the claim (a newer event may have taken it)
        and the key's review is the one the record carries (a person may have reviewed it meanwhile)."""
        review_at = (record.get("review") or {}).get("reviewed_at")
        review_condition = "review.reviewed_at = :review_at" if review_at else "attribute_not_exists(review)"
        values = {":claim": claim_id, ":review_at": review_at} if review_at else {":claim": claim_id}
        if self._write(
            "put_item",
            Item=to_item({**record, "claim_id": claim_id, "claim_until": 0}),
            ConditionExpression=f"claim_id = :claim AND {review_condition}",
            ExpressionAttributeValues=to_item(values),
        ):
            return True
        current = self._get(record["bucket"], record["key"]) or {}
        if current.get("claim_id") != claim_id:
            return False
        raise ReviewChangedError(current.get("review"))

    def set_review(self, bucket: str, key: str, review: dict[str, Any]) -> bool:
        return self._write(
            "update_item",
            **self._key(bucket, key),
            UpdateExpression="SET review = :review, alt_text_reviewed = :alt, review_stale = :false",
            ConditionExpression="attribute_exists(#key)",
            ExpressionAttributeNames={"#key": "key"},
            ExpressionAttributeValues=to_item({":review": review, ":alt": review.get("alt_text", ""), ":false": False}),
        )

    def release(self, event: ObjectEvent, claim_id: str, error_type: str, message: str, usage: ModelUsage) -> None:
        """Give the claim back at once (the retry need not wait for it to expire), say why, and keep what the
        attempt paid for so the final record counts it."""
        self._write(
            "update_item",
            **self._key(event.bucket, event.key),
            UpdateExpression=(
                "SET claim_until = :zero, last_error_type = :type, last_error_message = :message,"
                " attempt_usage = :usage"
            ),
            ConditionExpression="claim_id = :claim",
            ExpressionAttributeValues=to_item(
                {
                    ":zero": 0,
                    ":type": bounded(error_type, 100),
                    ":message": bounded(message, ERROR_MESSAGE_MAX_BYTES),
                    ":usage": usage.to_item(),
                    ":claim": claim_id,
                }
            ),
        )

    def defer(
        self, event: ObjectEvent, claim_id: str, error_type: str, message: str, usage: ModelUsage, resume_after_ms: int
    ) -> bool:
        """Park the claimed event in its record; the status index (status = deferred) is how the resumer finds it."""
        return self._write(
            "update_item",
            **self._key(event.bucket, event.key),
            UpdateExpression=(
                "SET #status = :deferred, claim_until = :zero, error_type = :type, error_message = :message,"
                " last_error_type = :type, last_error_message = :message, attempt_usage = :usage,"
                " deferred_event = :event, deferred_until = :until, processed_at = :now"
            ),
            ConditionExpression="claim_id = :claim",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_item(
                {
                    ":deferred": DEFERRED,
                    ":zero": 0,
                    ":type": bounded(error_type, 100),
                    ":message": bounded(message, ERROR_MESSAGE_MAX_BYTES),
                    ":usage": usage.to_item(),
                    ":event": json.dumps(event.to_s3_record(), separators=(",", ":")),
                    ":until": resume_after_ms,
                    ":now": utc_now_iso(),
                    ":claim": claim_id,
                }
            ),
        )

    def deferred(self, limit: int) -> list[dict[str, Any]]:
        """Parked records, longest parked first: the status index lists them, a consistent read gives each whole."""
        keys: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self._table_name,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#status = :deferred",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": to_item({":deferred": DEFERRED}),
            "ProjectionExpression": "#bucket, #key",
        }
        request["ExpressionAttributeNames"].update({"#bucket": "bucket", "#key": "key"})
        try:
            while len(keys) < limit:
                response = self._client.query(**request, Limit=min(DEFERRED_PAGE, limit - len(keys)))
                keys.extend(from_item(item) for item in response.get("Items", []))
                if "LastEvaluatedKey" not in response:
                    break
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"Query {self._table_name}/{STATUS_INDEX}") from exc
        records = [self._get(str(k["bucket"]), str(k["key"])) for k in keys]
        # The index is eventually consistent: keep only what is still parked.
        return [r for r in records if r is not None and r.get("status") == DEFERRED and r.get("deferred_event")]

    def mark_resumed(self, bucket: str, key: str, order: str) -> bool:
        return self._write(
            "update_item",
            **self._key(bucket, key),
            UpdateExpression="SET #status = :processing, claim_until = :zero REMOVE deferred_event, deferred_until",
            ConditionExpression="order_key = :order AND #status = :deferred",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_item(
                {":processing": PROCESSING, ":zero": 0, ":order": order, ":deferred": DEFERRED}
            ),
        )

    def get(self, bucket: str, key: str) -> dict[str, Any] | None:
        return self._get(bucket, key)

    def mark_fanout(self, event: ObjectEvent, claim_id: str, order: str, *, ranges_total: int, page_count: int) -> bool:
        return self._write(
            "update_item",
            **self._key(event.bucket, event.key),
            UpdateExpression=(
                "SET fanout_order = :order, ranges_total = :total, fanout_pages = :pages, claim_until = :zero"
            ),
            ConditionExpression="claim_id = :claim AND order_key = :order AND #status = :processing",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_item(
                {
                    ":order": order,
                    ":total": ranges_total,
                    ":pages": page_count,
                    ":zero": 0,
                    ":claim": claim_id,
                    ":processing": PROCESSING,
                }
            ),
        )

    def add_range_done(self, bucket: str, key: str, order: str, range_id: str) -> int | None:
        try:
            response = self._client.update_item(
                TableName=self._table_name,
                **self._key(bucket, key),
                UpdateExpression="ADD ranges_done :range",  # a string set: a duplicate item adds nothing
                ConditionExpression="order_key = :order AND #status = :processing",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":range": {"SS": [range_id]},
                    **to_item({":order": order, ":processing": PROCESSING}),
                },
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise translate_aws_error(exc, f"UpdateItem {self._table_name}") from exc
        except BotoCoreError as exc:
            raise translate_aws_error(exc, f"UpdateItem {self._table_name}") from exc
        return len(response.get("Attributes", {}).get("ranges_done", {}).get("SS", []))

    def claim_assembly(
        self, bucket: str, key: str, order: str, claim_id: str, until_ms: int, now_ms: int
    ) -> Literal["claimed", "busy", "gone", "not_ready"]:
        if self._write(
            "update_item",
            **self._key(bucket, key),
            UpdateExpression="SET claim_id = :claim, claim_until = :until",
            ConditionExpression=(
                "order_key = :order AND #status = :processing AND fanout_order = :order AND claim_until < :now"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_item(
                {":claim": claim_id, ":until": until_ms, ":order": order, ":processing": PROCESSING, ":now": now_ms}
            ),
        ):
            return "claimed"
        current = self._get(bucket, key) or {}
        if current.get("order_key") != order or current.get("status") != PROCESSING:
            return "gone"
        if current.get("fanout_order") != order:
            return "not_ready"
        return "busy"

    def claim_notification(self, record: dict[str, Any], until_ms: int, now_ms: int) -> bool:
        """Only one delivery publishes for an applied event, even when duplicates run at the same time."""
        return self._write(
            "update_item",
            **self._key(record["bucket"], record["key"]),
            UpdateExpression="SET notify_until = :until",
            ConditionExpression=(
                "order_key = :order AND notified = :false AND (attribute_not_exists(notify_until) OR notify_until < :now)"
            ),
            ExpressionAttributeValues=to_item(
                {":order": record["order_key"], ":false": False, ":until": until_ms, ":now": now_ms}
            ),
        )

    def mark_notified(self, record: dict[str, Any], notified: bool) -> None:
        self._write(
            "update_item",
            **self._key(record["bucket"], record["key"]),
            UpdateExpression="SET notified = :notified, notify_until = :zero",
            ConditionExpression="order_key = :order",
            ExpressionAttributeValues=to_item({":notified": notified, ":zero": 0, ":order": record["order_key"]}),
        )


class DynamoDBContentCache:
    """Descriptions by content (sha256 of the bytes, model, prompt version, detail), with a claim per content."""

    def __init__(self, client: Any, table_name: str, ttl_seconds: int = 90 * 24 * 3600) -> None:
        self._client = client
        self._table_name = table_name
        self._ttl_seconds = ttl_seconds

    def _key(self, content_key: str) -> dict[str, Any]:
        return {"Key": to_item({"content_key": content_key})}

    def get(self, content_key: str) -> dict[str, Any] | None:
        try:
            item = self._client.get_item(TableName=self._table_name, ConsistentRead=True, **self._key(content_key))
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"GetItem {self._table_name}") from exc
        entry = from_item(item.get("Item") or {})
        # DynamoDB's TTL deletes within days, not at the second: an expired entry is not served.
        if entry.get("state") != "ready" or int(entry.get("expires_at", 0)) < time.time():
            return None
        return entry

    def claim(self, content_key: str, claim_id: str, until_ms: int, now_ms: int) -> bool:
        return conditional_write(
            self._client,
            self._table_name,
            "update_item",
            **self._key(content_key),
            UpdateExpression="SET #state = :pending, claim_id = :claim, claim_until = :until",
            ConditionExpression=(
                "attribute_not_exists(content_key) OR (#state = :pending AND claim_until < :now)"
                " OR (#state = :ready AND expires_at < :now_s)"
            ),
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=to_item(
                {
                    ":pending": "pending",
                    ":ready": "ready",
                    ":claim": claim_id,
                    ":until": until_ms,
                    ":now": now_ms,
                    ":now_s": now_ms // 1000,
                }
            ),
        )

    def put(self, content_key: str, entry: dict[str, Any], ttl_seconds: int | None = None) -> None:
        item = {
            **entry,
            "content_key": content_key,
            "state": "ready",
            "expires_at": int(time.time()) + (ttl_seconds or self._ttl_seconds),
        }
        conditional_write(self._client, self._table_name, "put_item", Item=to_item(item))

    def release(self, content_key: str, claim_id: str) -> None:
        """Expire our pending claim at once so another key may describe the content (an update, not a delete:
        the function's write policy grants PutItem and UpdateItem only)."""
        conditional_write(
            self._client,
            self._table_name,
            "update_item",
            **self._key(content_key),
            UpdateExpression="SET claim_until = :zero",
            ConditionExpression="claim_id = :claim AND #state = :pending",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=to_item({":zero": 0, ":claim": claim_id, ":pending": "pending"}),
        )
