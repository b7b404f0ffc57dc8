"""Secrets out of error text: the one place that redacts keys, credentials and signatures from a message.

Providers and gateways echo what they were sent (the API key, the Authorization header, a presigned image URL)
into their error bodies, and those texts are stored in DynamoDB, published to SNS and logged. Every domain
error's message passes through :func:`redact` at the source (``SightlineError.__init__``), the model adapter
scrubs the provider's error bodies with it, and the handler redacts any other exception text it logs.

What is replaced with ``[redacted]``:

1. every secret value registered with :func:`register_secret` (the model API key once it is known), verbatim
   and URL-encoded;
2. credentials by their label: ``Authorization:`` headers, ``Bearer <token>``, ``api_key=``/``"api_key": ...``,
   ``x-api-key:``, ``aws_secret_access_key``, ``aws_session_token``, ``client_secret``, ``password`` ...;
3. credentials by their shape: ``sk-...`` keys and AWS access key ids (``AKIA``/``ASIA`` + 16 characters);
4. presigned-URL signatures: ``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token`` and
   ``Signature=`` query values (also when the URL itself is percent-encoded).

Only the secret part goes: the label, the URL's host, path and other parameters stay, so the message still says
what went wrong. Redacting twice gives the same text.

Why not powertools' data-masking utility: it erases or encrypts *fields of a dict* chosen by key path (and needs
the AWS Encryption SDK and a KMS provider for anything but erasing). Here the secret sits somewhere inside a
free-text message (an HTML error page, an exception string), so what is needed is substring redaction by value
and by pattern; a small pure module with no dependency does that and is cheap enough to run on every error.
"""

from __future__ import annotations

import re
import threading
import urllib.parse

__all__ = ["MIN_SECRET_LENGTH", "REDACTED", "redact", "register_secret"]

#: What a secret becomes. Lower case, as the model adapter has always written it into stored messages.
REDACTED = "[redacted]"
#: Shorter values are ignored by register_secret: redacting them would eat ordinary words ("no-key", "test").
MIN_SECRET_LENGTH = 8

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None

# A value ends at whitespace, a quote, a separator or markup; "%26"/"%22" are an encoded "&"/'"'.
# A label starts a word, or follows an encoded "?"/"&" (a presigned URL quoted inside another URL).
_VALUE = r"(?:[^\s\"'&,;:<>(){}\[\]\\%]|%(?!26|22|27|2C|3B)[0-9A-Fa-f]{2}|\[redacted\])+"
_START = r"(?:(?<![A-Za-z0-9-])|(?<=%26)|(?<=%3F)|(?<=%3f))"
_ASSIGN = r"(?:[\"']?\s*[:=]\s*[\"']?|%3D|%22%3A%22|%3A)"

# 1. An Authorization header value: the token after a scheme (Bearer, Basic, AWS4-HMAC-SHA256 ...), else the value
#    up to the end of the clause, so the rest of the message stays.
_AUTHORIZATION = re.compile(
    r"(?P<label>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?P<scheme>bearer|basic|token|digest|aws4-hmac-sha256|apikey)\s+(?P<token>[^\s\"'<>,;]+)"
    r"|(?P<value>[^\r\n\"'<>,;]+))",
    re.IGNORECASE,
)
# 2. A bearer token wherever it appears (not the words that usually follow "bearer" in prose).
_BEARER = re.compile(
    r"(?P<label>\bbearer\s+)(?!(?:token|auth|authentication|authorization)\b)(?P<value>[^\s\"',;<>]+)",
    re.IGNORECASE,
)
# 3. Labelled credentials: query parameters, headers, JSON fields, environment-style assignments.
_LABELLED = re.compile(
    r"(?P<label>" + _START + r"(?:x-)?(?:api[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token"
    r"|client[_-]?secret|secret[_-]?access[_-]?key|aws[_-]?secret[_-]?access[_-]?key|aws[_-]?session[_-]?token"
    r"|password|passwd)" + _ASSIGN + r")(?P<value>" + _VALUE + r")",
    re.IGNORECASE,
)
# 4. Presigned-URL credentials (SigV4, SigV2, CloudFront, Azure SAS "sig").
_PRESIGNED = re.compile(
    r"(?P<label>" + _START + r"(?:x-amz-(?:signature|credential|security-token)|signature|sig"
    r"|awsaccesskeyid)(?:=|%3D))(?P<value>" + _VALUE + r")",
    re.IGNORECASE,
)
# 5. Credentials recognisable by their shape alone.
_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{17,}|(?:AKIA|ASIA)[0-9A-Z]{16})(?![A-Za-z0-9])",
)


def register_secret(value: str | None) -> None:
    """Redact this exact value (and its URL-encoded forms) from now on. Safe from any thread; registering the
    same value again is free. Values shorter than MIN_SECRET_LENGTH (the local placeholder key) are ignored."""
    global _secret_pattern
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        forms = {form for secret in _secrets for form in _forms(secret)}
        # Longest first, so a secret that contains another is replaced whole.
        _secret_pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))


def redact(text: str) -> str:
    """The text with every registered secret, labelled credential, key shape and URL signature replaced."""
    if not text:
        return text
    pattern = _secret_pattern  # one read: a concurrent register_secret swaps in a new pattern whole
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _AUTHORIZATION.sub(_keep_scheme, text)
    text = _BEARER.sub(_keep_label, text)
    text = _LABELLED.sub(_keep_label, text)
    text = _PRESIGNED.sub(_keep_label, text)
    return _SHAPES.sub(REDACTED, text)


def _forms(secret: str) -> set[str]:
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret), urllib.parse.quote(secret)}


def _keep_label(match: re.Match[str]) -> str:
    return f"{match['label']}{REDACTED}"


def _keep_scheme(match: re.Match[str]) -> str:
    scheme = f"{match['scheme']} " if match["scheme"] else ""
    return f"{match['label']}{scheme}{REDACTED}"
