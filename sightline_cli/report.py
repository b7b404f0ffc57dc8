"""`sightline report`: the records as a static HTML gallery to review alt text and captions, one file that opens
from disk (no server, no CDN, nothing fetched).

Each object is shown with a small thumbnail made by Sightline's own preparation code (`prepare_image` at the
"low" budget, then scaled to THUMBNAIL_SIDE px and inlined as a data: URL); a PDF or a multi-page TIFF shows its
first page, rendered by the same child-process renderer the function uses. An object that cannot be read or
prepared (gone, too large, not an image) gets a text placeholder saying why: a thumbnail never stops the report.

The page (sightline_cli/gallery/: page.html, gallery.css, gallery.js, inlined at build time) draws the items from
JSON embedded in a `<script type="application/json">` element, with every "<", ">" and "&" escaped, so no value
of a record can end that element or become markup; the page's script puts values into the page as text only. A
Content-Security-Policy lets only the page's own script and style run (by their SHA-256) and loads nothing.

In the page a reviewer filters (status, profile, flag), searches, sorts, edits alt text and downloads the edits
as a review file (JSON Lines), which `sightline review apply FILE` stores.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sightline.gallery import FLAG_CODES, FLAG_HELP, GalleryItem, gallery_items
from sightline.pricing import PriceTable
from sightline.profiles import ProfileSet
from sightline.settings import Settings

__all__ = [
    "DEFAULT_OUT_DIR",
    "THUMBNAIL_SIDE",
    "Thumbnail",
    "add_arguments",
    "build_page",
    "make_thumbnail",
    "run",
    "script_json",
    "write_gallery",
]

DEFAULT_OUT_DIR = "sightline-report"
PAGE_NAME = "index.html"
TITLE = "Sightline review gallery"
THUMBNAIL_SIDE = 240  # px, the longest side: about 5-15 KB of JPEG each
THUMBNAIL_QUALITY = 72
THUMBNAIL_WORKERS = 4  # objects fetched and prepared at once (a document's page renders in a child process)
_NOTE_MAX_CHARS = 300

# Short names for the flag codes (sightline.gallery.FLAG_CODES), shown before each flag's message; FLAG_HELP
# explains each in the page's legend.
FLAG_TITLES: Mapping[str, str] = {
    "failed": "Failed",
    "partial": "Partial document",
    "deferred": "Deferred",
    "processing": "Processing",
    "review_stale": "Review stale",
    "alt_missing": "Alt text missing",
    "alt_too_long": "Alt text over the limit",
    "alt_duplicate": "Alt text identical to another",
    "repeated_words": "Repeated words",
    "wrong_language": "Wrong language",
    "markup_removed": "Markup removed",
    "cache_hit": "Cache hit",
}
# How a flag's badge looks (its words say the same): "bad" needs fixing, "info" is for information only.
FLAG_SEVERITY: Mapping[str, str] = {
    "failed": "bad",
    "alt_missing": "bad",
    "alt_too_long": "bad",
    "cache_hit": "info",
    "processing": "info",
    "deferred": "info",
}


# --- Thumbnails.


@dataclass(frozen=True)
class Thumbnail:
    """A data: URL of a small JPEG, or None with a note saying why there is none."""

    src: str | None = None
    width: int | None = None
    height: int | None = None
    note: str = ""


class ThumbnailError(Exception):
    """Why an object has no thumbnail, in words for the page."""


def _reason(exc: BaseException) -> str:
    from sightline.errors import SightlineError

    text = str(exc) if isinstance(exc, SightlineError | ThumbnailError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= _NOTE_MAX_CHARS else text[: _NOTE_MAX_CHARS - 1] + "…"


def _downscale(jpeg: bytes, side: int) -> Thumbnail:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as opened:
        image = opened.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    data_url = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return Thumbnail(src=data_url, width=image.width, height=image.height)


def make_thumbnail(data: bytes, *, max_pixels: int, renderer: Any | None, side: int = THUMBNAIL_SIDE) -> Thumbnail:
    """The object's bytes as a thumbnail: an image through `prepare_image` (low budget) then scaled to `side`;
    a PDF or multi-page TIFF's first page through `renderer` (a PageRenderer; None: a placeholder). Raises the
    pipeline's own errors for what it refuses (empty, not an image, too large, corrupt…)."""
    from sightline.imaging import prepare_image
    from sightline.pages import document_kind

    kind = document_kind(data)
    if kind is not None:
        if renderer is None:
            return Thumbnail(note=f"{kind.upper()} document: no page preview")
        rendered = renderer.render(data, pages=range(1, 2))
        if not rendered.pages:
            raise ThumbnailError(f"the {kind.upper()} document has no page to show")
        count = rendered.page_count
        thumbnail = _downscale(rendered.pages[0].image.jpeg, side)
        return Thumbnail(thumbnail.src, thumbnail.width, thumbnail.height, f"Page 1 of {count}")
    prepared = prepare_image(data, "low", max_pixels=max_pixels)
    return _downscale(prepared.jpeg, side)


def fetch_object(s3_client: Any, bucket: str, key: str, version_id: str | None, max_bytes: int) -> bytes:
    """The object's bytes (the record's version when it has a version id), at most `max_bytes`."""
    from botocore.exceptions import ClientError

    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    try:
        response = s3_client.get_object(**request)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound"):
            raise ThumbnailError("the object (this version) is no longer in the bucket") from None
        if code in ("AccessDenied", "403", "Forbidden"):
            raise ThumbnailError("no permission to read the object (s3:GetObject)") from None
        raise ThumbnailError(f"the object cannot be read ({code or exc})") from None
    body = response["Body"]
    try:
        size = response.get("ContentLength")
        if isinstance(size, int) and size > max_bytes:
            raise ThumbnailError(f"the object is {size:,} bytes, above the {max_bytes:,} read for a thumbnail")
        data = body.read(max_bytes + 1)
    finally:
        body.close()
    if len(data) > max_bytes:
        raise ThumbnailError(f"the object is above the {max_bytes:,} bytes read for a thumbnail")
    return bytes(data)


def _thumbnail_for(
    item: GalleryItem, version_id: str | None, s3_client: Any, settings: Settings, renderer: Any | None
) -> Thumbnail:
    """Never raises: any failure becomes a placeholder with its reason."""
    if item.size == 0:
        return Thumbnail(note="the object is empty (0 bytes)")
    try:
        data = fetch_object(s3_client, item.bucket, item.key, version_id, settings.max_object_bytes)
        return make_thumbnail(data, max_pixels=settings.max_image_pixels, renderer=renderer)
    except Exception as exc:  # a thumbnail never stops the report: whatever went wrong is shown instead
        return Thumbnail(note=_reason(exc))


def make_thumbnails(
    items: list[GalleryItem],
    version_ids: Mapping[tuple[str, str], str | None],
    *,
    s3_client: Any,
    settings: Settings,
    renderer: Any | None,
    workers: int = THUMBNAIL_WORKERS,
) -> list[Thumbnail]:
    """One thumbnail (or placeholder) per item, in the items' order."""

    def one(item: GalleryItem) -> Thumbnail:
        return _thumbnail_for(item, version_ids.get((item.bucket, item.key)), s3_client, settings, renderer)

    if workers <= 1 or len(items) <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbnail") as pool:
        return list(pool.map(one, items))


# --- The page.


def _asset(name: str) -> str:
    text = resources.files("sightline_cli").joinpath("gallery", name).read_text(encoding="utf-8")
    return text.replace("\r\n", "\n")


_SCRIPT_ESCAPES = {ord(char): f"\\u{ord(char):04x}" for char in "<>&\u2028\u2029"}


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: "<", ">" and "&" (and U+2028/9) as \\u escapes, which JSON.parse reads
    back unchanged, so no value can close the element ("</script>") or open a comment ("<!--")."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return text.translate(_SCRIPT_ESCAPES)


def _finite(value: Any) -> Any:
    """The value with every float that JSON cannot carry (NaN, infinities) as None, however deep."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def item_data(item: GalleryItem, thumbnail: Thumbnail | None) -> dict[str, Any]:
    """What the page's script gets of an item: every field of GalleryItem, the effective values, the thumbnail."""
    data = {name: _finite(value) for name, value in asdict(item).items()}
    data["effective_alt_text"] = item.effective_alt_text
    data["effective_decorative"] = item.effective_decorative
    data["alt_text_source"] = item.alt_text_source
    data["thumbnail"] = asdict(thumbnail) if thumbnail is not None else None
    return data


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _legend() -> str:
    rows = "".join(
        f"<dt>{html.escape(FLAG_TITLES.get(code, code))}</dt><dd>{html.escape(FLAG_HELP.get(code, ''))}</dd>"
        for code in FLAG_CODES
    )
    return f'<dl class="legend">{rows}</dl>'


def build_page(
    items: list[GalleryItem],
    thumbnails: list[Thumbnail] | None = None,
    *,
    source: str = "",
    scope: str = "",
    generated_at: datetime | None = None,
) -> str:
    """The gallery as one HTML document (pure: no I/O beyond reading the page's own files)."""
    generated = (generated_at or datetime.now(UTC)).astimezone(UTC)
    thumbs: list[Thumbnail | None] = list(thumbnails) if thumbnails is not None else [None] * len(items)
    if len(thumbs) != len(items):
        raise ValueError("one thumbnail per item is needed")
    currency = next((item.currency for item in items if item.currency), None)
    meta = {
        "title": TITLE,
        "source": source,
        "scope": scope,
        "generated_at": generated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": len(items),
        "currency": currency,
        "flag_labels": dict(FLAG_TITLES),
        "flag_severity": dict(FLAG_SEVERITY),
    }
    data = {"meta": meta, "items": [item_data(item, thumb) for item, thumb in zip(items, thumbs, strict=True)]}
    css, js = _asset("gallery.css"), _asset("gallery.js")
    for name, text, end in (("gallery.css", css, "</style"), ("gallery.js", js, "</script")):
        if end in text.lower():
            raise ValueError(f"{name} must not contain {end}")  # it would end its element early
    csp = "; ".join(
        (
            "default-src 'none'",
            "img-src data:",
            f"style-src {_sha256(css)}",
            f"script-src {_sha256(js)}",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    summary = f"{len(items):,} object{'' if len(items) == 1 else 's'}"
    if source:
        summary += f" from {source}"
    if scope:
        summary += f" ({scope})"
    summary += f", written {generated.strftime('%Y-%m-%d %H:%M')} UTC."
    parts = {
        "TITLE": html.escape(TITLE),
        "SUMMARY": html.escape(summary),
        "CSP": html.escape(csp),
        "LEGEND": _legend(),
        "CSS": css,
        "JS": js,
        "DATA": script_json(data),
    }
    template = _asset("page.html")
    # One pass: text put in is never searched again for placeholders.
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda match: parts[match.group(1)], template)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".index-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_gallery(
    records: Iterable[dict[str, Any]],
    *,
    s3_client: Any | None,
    out_dir: str | Path,
    profiles: ProfileSet | None,
    prices: PriceTable | None,
    settings: Settings | None = None,
    source: str = "",
    scope: str = "",
    thumbnails: bool = True,
    renderer: Any | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``out_dir/index.html``: the gallery of these records (as the results table has them), with
    thumbnails fetched through ``s3_client`` (None, or ``thumbnails=False``: placeholders only). Returns the path.

    ``renderer`` renders a document's first page (default: the function's ChildProcessPageRenderer with
    ``settings``); ``settings`` (default: from the environment) bound the bytes read and the pixels decoded.
    """
    from sightline.adapters.page_renderer import ChildProcessPageRenderer
    from sightline.settings import load_settings

    records = list(records)
    items = gallery_items(records, profiles, prices)
    settings = settings or load_settings(require_stack=False)
    if thumbnails and s3_client is not None:
        version_ids = {(str(record.get("bucket")), str(record.get("key"))): _version_id(record) for record in records}
        if progress and items:
            progress(f"Making {len(items):,} thumbnail(s)…")
        thumbs = make_thumbnails(
            items,
            version_ids,
            s3_client=s3_client,
            settings=settings,
            renderer=renderer or ChildProcessPageRenderer.from_settings(settings),
        )
    else:
        thumbs = [Thumbnail(note="thumbnails were not made for this report")] * len(items)
    page = build_page(items, thumbs, source=source, scope=scope)
    path = Path(out_dir) / PAGE_NAME
    _write_atomically(path, page)
    return path.resolve()


def _version_id(record: dict[str, Any]) -> str | None:
    obj = record.get("object")
    version = obj.get("version_id") if isinstance(obj, dict) else None
    return str(version) if version and version != "null" else None


# --- The command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sightline_cli.records_source import add_profiles_argument, add_source_arguments

    add_source_arguments(parser)
    add_profiles_argument(parser)
    parser.add_argument("--pricing", metavar="FILE", help="pricing table (default: the bundled pricing.toml)")
    parser.add_argument(
        "--out", metavar="DIR", default=DEFAULT_OUT_DIR, help=f"write DIR/index.html (default: {DEFAULT_OUT_DIR})"
    )
    parser.add_argument(
        "--no-thumbnails", action="store_true", help="do not read the objects: placeholders instead of thumbnails"
    )


def _scope(args: argparse.Namespace) -> str:
    parts = []
    if args.prefix:
        parts.append(f"keys starting with {args.prefix!r}")
    if args.status:
        parts.append("status " + " or ".join(dict.fromkeys(args.status)))
    if args.profile:
        parts.append("profile " + " or ".join(dict.fromkeys(args.profile)))
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from scripts.redrive_dlq import MissingStackOutputError
    from sightline.errors import SightlineError
    from sightline.pricing import load_prices
    from sightline_cli.records_source import load_profile_set, load_records, resolve_table

    def progress(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        table = resolve_table(args)
        records = load_records(
            boto3.client("dynamodb"), table, prefix=args.prefix, statuses=args.status, profiles=args.profile
        )
        path = write_gallery(
            records,
            s3_client=None if args.no_thumbnails else boto3.client("s3"),
            out_dir=args.out,
            profiles=load_profile_set(args.profiles_file),
            prices=load_prices(args.pricing),
            source=table,
            scope=_scope(args),
            progress=progress,
        )
    except (ClientError, BotoCoreError, MissingStackOutputError, SightlineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    progress(f"The gallery of {len(records):,} record(s), to open in a browser:")
    print(path)
    return 0
