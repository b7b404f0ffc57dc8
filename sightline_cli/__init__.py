"""`sightline`: the operator command (describe local files, list records, redrive the DLQ, …)."""
