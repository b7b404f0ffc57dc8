"""`sightline describe FILE…`: the pipeline's own describe step on local files, no AWS needed."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sightline.errors import SettingsError, SightlineError
from sightline.profiles import load_profiles_file, normalize_language
from sightline.prompt import CONTEXT_MAX_BYTES
from sightline.settings import DETAILS, Settings, load_settings
from sightline.text import bounded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="image files or documents (PDF, multi-page TIFF)")
    parser.add_argument("--json", action="store_true", help="one JSON result a line instead of a summary")
    parser.add_argument("--detail", choices=DETAILS, help="override IMAGE_DETAIL")
    parser.add_argument("--model", help="override MODEL_ID")
    parser.add_argument("--base-url", help="override MODEL_BASE_URL")
    parser.add_argument("--profile", help="a profile of the profiles file (default: the one the file name matches)")
    parser.add_argument("--language", help="override the profile's language (BCP 47, e.g. de, pt-BR)")
    parser.add_argument(
        "--context", help="where the image is used (page title, product, keyphrase): data, not instructions"
    )
    parser.add_argument("--profiles-file", help="override PROFILES_FILE (default: the bundled profiles.yaml)")
    parser.add_argument(
        "--markdown-dir", type=Path, help="write each document's whole text as Markdown into this directory"
    )


@contextlib.contextmanager
def _endpoint(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """The configured provider when a key is given; otherwise the embedded offline OCR endpoint on loopback."""
    if settings.model_api_key or settings.model_api_key_secret_arn:
        yield settings, settings.model_base_url
        return
    from dataclasses import replace

    from devkit.model_server import ModelServer
    from devkit.ocr_model import MODEL_ID, OcrResponder

    with ModelServer(OcrResponder()) as server:
        label = f"{server.base_url} (embedded offline OCR endpoint: no MODEL_API_KEY, so no caption model)"
        yield replace(settings, model_base_url=server.base_url, model_id=MODEL_ID), label


def _not_described(error_type: str, message: str) -> dict[str, Any]:
    return {"status": "failed", "error_type": error_type, "error_message": message, "usage": {"model_calls": 0}}


def _summary(path: Path, item: dict[str, Any]) -> str:
    lines = [
        f"{path}: {item['status']}" + (f" (profile {item['profile']}, {item['language']})" if "profile" in item else "")
    ]
    document = item.get("document")
    if document:
        failed = document.get("pages_failed") or []
        lines.append(
            f"  document:    {str(document['kind']).upper()}, {document['pages']} page(s),"
            f" {document.get('pages_succeeded', 0)} read"
            + (f", failed: {', '.join(map(str, failed))}" if failed else "")
        )
        for error in document.get("page_errors") or []:
            lines.append(f"  page {error['page']}:      {error['error_type']}: {error['error_message']}")
    if item["status"] in ("succeeded", "partial"):
        lines += [
            f"  description: {item['description']}",
            f"  alt_text:    {item['alt_text']}",
            f"  text:        {item['text'][:300].replace(chr(10), ' | ') or '(none)'}",
            f"  tags:        {', '.join(item['tags'])}",
        ]
        if item.get("decorative"):
            lines.append("  decorative:  true (alt text empty by design)")
        if item.get("fields") is not None:
            lines.append(f"  fields:      {json.dumps(item['fields'], ensure_ascii=False)}")
        if item.get("adjustments"):
            lines.append(f"  adjusted:    {'; '.join(item['adjustments'])}")
    else:
        lines.append(f"  error:       {item['error_type']}: {item['error_message']}")
    usage = item["usage"]
    if usage["model_calls"]:
        lines.append(
            f"  usage:       {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens,"
            f" {usage['model_calls']} call(s), output mode {item.get('output_mode', 'off')}"
        )
    return "\n".join(lines)


def _describe_document(
    body: bytes, options: Any, model: Any, settings: Settings, path: Path, markdown_dir: Path | None
) -> dict[str, Any]:
    """A PDF or multi-page TIFF: every page, two per request, then the summary pass, as the function does."""
    from sightline.adapters.page_renderer import ChildProcessPageRenderer
    from sightline.documents import PageDescriber, assemble_document, document_failure, render_pages
    from sightline.errors import PermanentInputError
    from sightline.pages import document_kind
    from sightline.ports import ModelUsage

    kind = document_kind(body) or "pdf"
    renderer = ChildProcessPageRenderer.from_settings(settings)
    usage = ModelUsage()
    try:
        page_count, rendered, failed = render_pages(renderer, body, None)
    except PermanentInputError as exc:
        return document_failure(exc, kind=kind, options=options, usage=usage).to_item()
    describer = PageDescriber(
        model=model, options=options, concurrency=settings.document_concurrency, anchors=settings.document_text_anchor
    )
    pages = describer.describe(rendered, None, usage)
    result = assemble_document(
        [*pages, *failed], kind=kind, page_count=page_count, options=options, model=model, deadline=None, usage=usage
    )
    if markdown_dir is not None:
        markdown_dir.mkdir(parents=True, exist_ok=True)
        target = markdown_dir / f"{path.name}.md"
        target.write_text(result.markdown(title=path.name), encoding="utf-8")
        print(f"{path}: Markdown written to {target}", file=sys.stderr)
    return result.to_item()


def run(args: argparse.Namespace) -> int:
    from sightline.composition import build_model
    from sightline.describe import DescribeOptions, describe_image
    from sightline.pages import document_kind

    overrides = {
        "IMAGE_DETAIL": args.detail,
        "MODEL_ID": args.model,
        "MODEL_BASE_URL": args.base_url,
        "PROFILES_FILE": args.profiles_file,
    }
    env = {**os.environ, **{name: value for name, value in overrides.items() if value}}
    try:
        settings = load_settings(env, require_stack=False)
        profiles = load_profiles_file(settings.profiles_file)
        chosen = profiles.get(args.profile) if args.profile else None
        if args.profile and chosen is None:
            raise SettingsError(f"no profile named {args.profile!r} in {settings.profiles_file}")
        language = normalize_language(args.language) if args.language else None
        if args.language and language is None:
            raise SettingsError(f"--language {args.language!r} is not a BCP 47 language tag")
    except SettingsError as exc:
        print(f"sightline describe: {exc}", file=sys.stderr)
        return 2
    failures = 0
    with _endpoint(settings) as (settings, label):
        print(f"model: {settings.model_id} at {label}", file=sys.stderr)
        model = build_model(settings)
        for path in args.files:
            profile = chosen or profiles.for_key(str(path))
            if profile is None:
                item = _not_described("NoProfile", "no profile matches the file name and the file has no default")
                failures += 1
                print(json.dumps({"file": str(path), **item}) if args.json else _summary(path, item))
                continue
            context = bounded(args.context, CONTEXT_MAX_BYTES) if args.context else None
            options = DescribeOptions.for_profile(profile, settings, language=language, context=context)
            try:
                body = path.read_bytes()
                if document_kind(body) is None:
                    item = describe_image(body, options, model).to_item()
                else:
                    item = _describe_document(body, options, model, settings, path, args.markdown_dir)
            except OSError as exc:
                item = _not_described("Unreadable", str(exc))
            except SightlineError as exc:  # transient: the provider is down, or the key is wrong
                item = _not_described(exc.error_type, exc.message)
            failures += item["status"] not in ("succeeded", "partial")
            if args.json:
                print(json.dumps({"file": str(path), **item}, ensure_ascii=False))
            else:
                print(_summary(path, item))
    return 1 if failures else 0
