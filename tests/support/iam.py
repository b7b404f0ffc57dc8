"""The AWS calls each function of the stack makes, by role and by the logical id of the resource they touch.

One map, read by two tests: the template test (tests/unit/test_template.py) checks that each role is granted exactly
these actions, and the recorded-calls test (tests/integration/test_iam_calls.py) checks that running the functions
on the emulated stack makes exactly these calls. moto does not enforce IAM, so only the two together can tell that
the deployed permissions are neither short nor wider than the code.

Actions are IAM action names: GetObject with a version id is authorized as s3:GetObjectVersion, HeadObject as
s3:GetObject(Version), SendMessageBatch as sqs:SendMessage, a Query on an index on the index's ARN (``/index/…``).
"""

from __future__ import annotations

# Granted although no call names it: with s3:ListBucket, a GET or HEAD of a missing key is a 404 (the object is
# gone: a skipped event, an absent partial result) instead of a 403 (which would read as a configuration error).
LIST_BUCKET = "s3:ListBucket"

CALLS: dict[str, dict[str, set[str]]] = {
    "DescribeImageFunctionRole": {
        # Claims, results, review-safe completion (conditional PutItem/UpdateItem), the current record (GetItem).
        "ResultsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        "ContentCacheTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        # Budget counters and the breaker: reserve/settle/count (UpdateItem), the breaker's state (GetItem).
        "ControlTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "UploadsBucket": {"s3:GetObject", "s3:GetObjectVersion", LIST_BUCKET},
        # Document results (written only), page-range partial results (written and read back under work/), and
        # the page JPEGs it presigns GET URLs for (a presigned URL carries the permissions of the role that signed
        # it). ListBucket: an absent partial result is a 404.
        "ResultsBucket": {"s3:GetObject", "s3:PutObject", LIST_BUCKET},
        # Page ranges of long documents go back to the queue it consumes.
        "UploadsQueue": {"sqs:SendMessage"},
        "ResultsTopic": {"sns:Publish"},
        "ModelApiKeySecret": {"secretsmanager:GetSecretValue"},
    },
    # The resumer of parked items: finds them on the status index, reads the budget and breaker, sends them back.
    "ResumeDeferredFunctionRole": {
        "ResultsTable": {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem"},
        "ControlTable": {"dynamodb:GetItem"},
        "UploadsQueue": {"sqs:SendMessage"},
    },
    # The S3 Batch Operations entry point: HEADs the task's object, skips versions already described, queues.
    "BatchBackfillFunctionRole": {
        "ResultsTable": {"dynamodb:GetItem"},
        "UploadsBucket": {"s3:GetObject", "s3:GetObjectVersion", LIST_BUCKET},
        "UploadsQueue": {"sqs:SendMessage"},
    },
    # Not a function: the role S3 Batch Operations assumes for a backfill job (its calls are S3's, not our code's).
    "BatchOperationsRole": {
        "BatchBackfillFunction": {"lambda:InvokeFunction"},
        "UploadsBucket": {"s3:GetObject", "s3:GetObjectVersion", LIST_BUCKET},
        "ResultsBucket": {"s3:PutObject"},
    },
}

# Calls the Lambda service makes with the describe function's own role (not SAM-made, so it is granted by hand): the
# event source mapping polls the queue; the runtime writes the function's logs. X-Ray's two actions have no
# resource-level permissions, so they are the one grant on "*".
PLATFORM_CALLS: dict[str, dict[str, set[str]]] = {
    "DescribeImageFunctionRole": {
        "UploadsQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
        "DescribeImageFunctionLogGroup": {"logs:CreateLogStream", "logs:PutLogEvents"},
    },
}
X_RAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}

# The roles whose calls are our code's (the recorded-calls test runs these functions).
FUNCTION_ROLES = ("DescribeImageFunctionRole", "ResumeDeferredFunctionRole", "BatchBackfillFunctionRole")
