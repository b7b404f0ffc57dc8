"""Image preparation benchmark: prepare_image against libvips and naive Pillow, time and peak memory per input."""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType

import PIL
import pillow_heif
from PIL import Image, ImageOps, ImageStat

from benchmarks import corpus
from sightline.errors import SightlineError
from sightline.imaging import BUDGETS, prepare_image
from sightline.settings import DETAILS, Detail

MAX_PIXELS = 100_000_000  # Settings.max_image_pixels default
VIPS_CONCURRENCY = "1"  # Lambda at 2048 MB has ~1.2 vCPU, and Pillow is single-threaded
MB = 1_000_000
METHODS = ("ours", "vips", "naive")
CASES: tuple[tuple[str, Detail], ...] = (
    *((name, "high") for name in corpus.TIMED),
    ("photo-24mp", "low"),
    ("photo-50mp", "low"),
)
TOKEN_SAMPLES = ("photo-24mp", "scan-a4")
MAX_TIME_VS_VIPS = 1.2
MIN_SPEEDUP_VS_NAIVE = 2.0
MIN_MEMORY_SAVING_VS_NAIVE = 2.0
CHILD_TIMEOUT_SECONDS = 120
# Outputs whose mean colour differs more than this from ours (in 8-bit levels) are flagged as not comparable.
MAX_MEAN_DIFFERENCE = 8.0


@dataclass(frozen=True)
class Case:
    sample: corpus.Sample
    detail: Detail
    width: int  # the size every method produces: what our preparation sent
    height: int
    refused: str | None  # prepare_image's error when it refuses the input


Method = Callable[[bytes, Case], bytes]


@dataclass
class Row:
    name: str
    detail: Detail
    size_mb: float
    sent: str
    ms: dict[str, float | None] = field(default_factory=dict)
    peak_mb: dict[str, float | None] = field(default_factory=dict)
    output: dict[str, str] = field(default_factory=dict)  # each method's output size and colour check
    errors: dict[str, str] = field(default_factory=dict)  # methods that cannot handle this input

    @property
    def input(self) -> str:
        return f"{self.name} {self.detail}"


@dataclass
class Target:
    target: str
    met: bool
    failing: list[str]
    unchecked: list[str]


@dataclass
class TokenFigure:
    input: str
    detail: Detail
    budget: str
    document_like: bool
    sent: str
    jpeg_quality: int
    bytes_sent: int
    estimated_image_tokens: int


def _ours(data: bytes, case: Case) -> bytes:
    return prepare_image(data, case.detail, max_pixels=MAX_PIXELS).jpeg


def _naive(data: bytes, case: Case) -> bytes:
    """Pillow without the tricks: exif_transpose decodes the whole image (no draft), Lanczos thumbnail, quality 85."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))  # a full decode: no draft
    img = img.convert("RGB")
    img.thumbnail((case.width, case.height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _methods(pyvips: ModuleType) -> dict[str, Method]:
    def vips(data: bytes, case: Case) -> bytes:
        """thumbnail: shrink-on-load, EXIF autorotate, import to 8-bit sRGB (CMYK, 16-bit); then JPEG at Q=85."""
        thumbnail = pyvips.Image.thumbnail_buffer(data, case.width, height=case.height, size="down")
        return thumbnail.jpegsave_buffer(Q=85)

    return {"ours": _ours, "vips": vips, "naive": _naive}


def _fit(data: bytes, detail: Detail) -> tuple[int, int]:
    """The budget's size for an input our preparation refuses, so the other methods still have a target."""
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    if img.getexif().get(corpus.EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
        width, height = height, width
    budget = BUDGETS["high" if detail == "auto" else detail]
    scale = min(1.0, budget.max_side / max(width, height), math.sqrt(budget.max_pixels / (width * height)))
    return round(width * scale), round(height * scale)


def _case(sample: corpus.Sample, detail: Detail) -> Case:
    try:
        prepared = prepare_image(sample.data, detail, max_pixels=MAX_PIXELS)
    except SightlineError as exc:
        return Case(sample, detail, *_fit(sample.data, detail), refused=_error(exc))
    return Case(sample, detail, prepared.sent_width, prepared.sent_height, refused=None)


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _status(name: str) -> int:
    """A /proc/self/status figure in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(name)


def _release_free_heap() -> None:
    """Give memory the parent freed but kept (glibc) back to the OS, so that reusing it cannot hide an allocation."""
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


def _measure_peak(method: Method, warm_up: Case, case: Case, conn: Connection) -> None:
    """Child: warm the method on a tiny image, read the input, reset the high-water mark, run once.

    Sends VmHWM after the operation minus VmRSS before it; where /proc/self/clear_refs is not writable, ru_maxrss
    stands in for VmHWM (an upper bound: reading the input counts too).
    """
    try:
        method(warm_up.sample.data, warm_up)
        data = case.sample.path.read_bytes()
        _release_free_heap()
        exact = _reset_peak()
        before = _status("VmRSS")
        method(data, case)
        peak = _status("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        conn.send((peak - before, exact, None))
    except Exception as exc:
        conn.send((0, False, _error(exc)))


def _peak(method: Method, warm_up: Case, case: Case) -> tuple[int, bool, str | None]:
    """(peak bytes above the resident set before the operation, measured via clear_refs, error) from a fresh fork."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_measure_peak, args=(method, warm_up, case, sender))
    child.start()
    try:
        if not receiver.poll(CHILD_TIMEOUT_SECONDS):
            child.kill()
            return 0, False, f"no answer within {CHILD_TIMEOUT_SECONDS} s"
        peak, exact, error = receiver.recv()
        return peak, exact, error
    finally:
        child.join()


def _tiny_case() -> Case:
    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").resize((320, 240)).save(buffer, "JPEG")
    sample = corpus.Sample("warm-up", "320×240 JPEG", Path(), buffer.getvalue())
    return Case(sample, "high", 320, 240, refused=None)


def _describe_output(jpeg: bytes, case: Case, reference: list[float] | None) -> tuple[str, list[float]]:
    """'W×H Δmean' of an output, flagged unless comparable (size ±1 px, similar colour), and its mean colour."""
    img = Image.open(io.BytesIO(jpeg))
    mean = ImageStat.Stat(img.convert("RGB")).mean
    difference = max(abs(a - b) for a, b in zip(mean, reference, strict=True)) if reference else 0.0
    comparable = (
        img.format == "JPEG"
        and abs(img.width - case.width) <= 1
        and abs(img.height - case.height) <= 1
        and difference <= MAX_MEAN_DIFFERENCE
    )
    text = f"{img.width}×{img.height}" + (f" Δ{difference:.1f}" if reference else "")
    return text + ("" if comparable else " (!)"), mean


def _time(methods: dict[str, Method], case: Case, runs: int, row: Row) -> None:
    """One warm-up (whose output is checked), then the methods interleaved run by run; median milliseconds."""
    available = {name: method for name, method in methods.items() if name not in row.errors}
    reference: list[float] | None = None
    for name in sorted(available, key=lambda name: name != "ours"):  # ours first: the colour reference
        try:
            jpeg = available[name](case.sample.data, case)
        except Exception as exc:
            row.errors[name] = _error(exc)
            continue
        row.output[name], mean = _describe_output(jpeg, case, reference)
        reference = reference or mean
    timings: dict[str, list[float]] = {name: [] for name in available if name not in row.errors}
    for _ in range(runs):
        for name, samples in timings.items():
            start = time.perf_counter()
            available[name](case.sample.data, case)
            samples.append(time.perf_counter() - start)
    row.ms = {name: statistics.median(timings[name]) * 1000 if name in timings else None for name in METHODS}


def _measure_memory(methods: dict[str, Method], cases: list[Case], rows: list[Row]) -> bool:
    """Peak memory of every (input, method) in its own child; False when any fell back to ru_maxrss."""
    warm_up, exact = _tiny_case(), True
    for case, row in zip(cases, rows, strict=True):
        for name in METHODS:
            row.peak_mb[name] = None
            if name in row.errors:
                continue
            peak, reset, error = _peak(methods[name], warm_up, case)
            if error:
                row.errors[name] = error
            else:
                row.peak_mb[name], exact = peak / MB, exact and reset
    return exact


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def _cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _print_table(rows: list[Row]) -> None:
    header = (
        "input",
        "size",
        "ours ms",
        "vips ms",
        "naive ms",
        "ours/vips",
        "naive/ours",
        "ours MB",
        "vips MB",
        "naive MB",
        "naive/ours mem",
    )
    lines = [header]
    for row in rows:
        ms, peak = row.ms, row.peak_mb
        lines.append(
            (
                row.input,
                f"{row.size_mb:.1f} MB",
                _cell(ms["ours"], ".0f"),
                _cell(ms["vips"], ".0f"),
                _cell(ms["naive"], ".0f"),
                _cell(_ratio(ms["ours"], ms["vips"]), ".2f"),
                _cell(_ratio(ms["naive"], ms["ours"]), ".2f"),
                _cell(peak["ours"], ".0f"),
                _cell(peak["vips"], ".0f"),
                _cell(peak["naive"], ".0f"),
                _cell(_ratio(peak["naive"], peak["ours"]), ".2f"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for number, line in enumerate(lines):
        print(
            " | ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if number == 0:
            print("-+-".join("-" * width for width in widths))


def _print_outputs(rows: list[Row]) -> None:
    print(
        "\nsize sent by ours; each output's size and mean-colour difference from ours in 8-bit levels;"
        f" (!) = off by more than 1 px or {MAX_MEAN_DIFFERENCE:g} levels (CMYK without a profile: libvips converts"
        " through its built-in CMYK profile, Pillow inverts)"
    )
    for row in rows:
        outputs = "  ".join(f"{name} {row.output[name]}" for name in METHODS if name in row.output)
        print(f"  {row.input:22} {row.sent:>10}  {outputs}")
        for name, error in row.errors.items():
            print(f"  {'':22} {'':>10}  {name} cannot: {error}")


def _targets(rows: list[Row]) -> list[Target]:
    """Each target with the rows that fail it and the rows where it cannot be measured."""
    large = [row for row in rows if row.name in corpus.LARGE_JPEGS]
    # (title, rows, figure, other method, how many times ours must beat the other method at least)
    checks = (
        (f"median time ≤ {MAX_TIME_VS_VIPS}× libvips on every input", rows, "ms", "vips", 1 / MAX_TIME_VS_VIPS),
        (
            f"≥ {MIN_SPEEDUP_VS_NAIVE:g}× faster than naive Pillow on the large JPEGs",
            large,
            "ms",
            "naive",
            MIN_SPEEDUP_VS_NAIVE,
        ),
        (
            f"peak memory ≤ 1/{MIN_MEMORY_SAVING_VS_NAIVE:g} of naive Pillow's on the large JPEGs",
            large,
            "peak_mb",
            "naive",
            MIN_MEMORY_SAVING_VS_NAIVE,
        ),
    )
    targets = []
    for title, checked, figure, other, minimum in checks:
        failing, unchecked = [], []
        for row in checked:
            values = getattr(row, figure)
            advantage = _ratio(values[other], values["ours"])
            if advantage is None:
                unchecked.append(row.input)
            elif advantage < minimum:
                shown = 1 / advantage if other == "vips" else advantage  # as the table shows it
                failing.append(f"{row.input} ({shown:.2f}×)")
        targets.append(Target(title, not failing and not unchecked, failing, unchecked))
    return targets


def _print_targets(targets: list[Target]) -> None:
    print("\ntargets")
    for target in targets:
        details = [f"failing: {', '.join(target.failing)}"] if target.failing else []
        details += [f"not measurable: {', '.join(target.unchecked)}"] if target.unchecked else []
        verdict = "met" if target.met else "NOT met"
        print(f"  {verdict:8} {target.target}" + (f" — {'; '.join(details)}" if details else ""))


def _tokens(cache_dir: Path) -> list[TokenFigure]:
    figures = []
    for name in TOKEN_SAMPLES:
        sample = corpus.load(name, cache_dir)
        for detail in DETAILS:
            prepared = prepare_image(sample.data, detail, max_pixels=MAX_PIXELS)
            figures.append(
                TokenFigure(
                    input=sample.description,
                    detail=detail,
                    budget=prepared.budget,
                    document_like=prepared.document_like,
                    sent=f"{prepared.sent_width}×{prepared.sent_height}",
                    jpeg_quality=prepared.jpeg_quality,
                    bytes_sent=prepared.bytes_sent,
                    estimated_image_tokens=prepared.estimated_image_tokens,
                )
            )
    return figures


def _print_tokens(figures: list[TokenFigure]) -> None:
    print("\nbytes sent (base64) and estimated image tokens per detail level")
    for figure in figures:
        print(
            f"  {figure.input:34} {figure.detail:4} → budget {figure.budget:8}"
            f" {'document' if figure.document_like else 'photo':8} {figure.sent:>9} q{figure.jpeg_quality}"
            f" {figure.bytes_sent:>9,} B {figure.estimated_image_tokens:>6,} tokens"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="timed runs per input and method after one warm-up (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 timed runs unless --runs is given")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--cache-dir", type=Path, default=corpus.CACHE_DIR)
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)

    os.environ["VIPS_CONCURRENCY"] = VIPS_CONCURRENCY  # read when libvips initialises, on import
    import pyvips

    pyvips.cache_set_max(0)  # every call decodes afresh, as every Lambda invocation does
    if "HEIF" not in Image.OPEN:  # sightline.imaging registers it with its own options; keep those
        pillow_heif.register_heif_opener()  # the naive path opens HEIC through Pillow
    methods = _methods(pyvips)
    print(
        f"Python {platform.python_version()}, Pillow {PIL.__version__}, pillow-heif {pillow_heif.__version__},"
        f" libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}, {os.cpu_count()} CPUs"
        f" ({platform.machine()}); libvips threads: {pyvips.concurrency_get()} (VIPS_CONCURRENCY={VIPS_CONCURRENCY})"
    )
    print(
        f"median of {runs} runs after one warm-up; peak memory of one run in a fresh forked child; MB = 10^6 bytes;"
        f" load average {os.getloadavg()[0]:.2f}\n"
    )

    started = time.perf_counter()
    samples = {name: corpus.load(name, args.cache_dir) for name, _ in CASES}
    cases = [_case(samples[name], detail) for name, detail in CASES]
    rows = [
        Row(case.sample.name, case.detail, len(case.sample.data) / MB, f"{case.width}×{case.height}") for case in cases
    ]
    for case, row in zip(cases, rows, strict=True):
        if case.refused:
            row.errors["ours"] = case.refused

    # Memory first, while this process has not run libvips yet: forking a process with live worker threads is unsafe.
    exact = _measure_memory(methods, cases, rows)
    if not exact:
        print(
            "note: /proc/self/clear_refs is not writable here; peak memory is ru_maxrss minus VmRSS (an upper bound)\n"
        )
    for case, row in zip(cases, rows, strict=True):
        _time(methods, case, runs, row)

    _print_table(rows)
    _print_outputs(rows)
    targets = _targets(rows)
    _print_targets(targets)
    tokens = _tokens(args.cache_dir)
    _print_tokens(tokens)
    print(f"\nbenchmark time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")

    if args.json:
        figures = {
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
            "vips_concurrency": pyvips.concurrency_get(),
            "runs": runs,
            "peak_memory": "VmHWM - VmRSS (clear_refs)" if exact else "ru_maxrss - VmRSS",
            "rows": [asdict(row) for row in rows],
            "targets": [asdict(target) for target in targets],
            "tokens": [asdict(figure) for figure in tokens],
        }
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
