"""Cold start: the handler's import time with and without bytecode, and the peak memory of a batch of the largest images.

1. Import time. The layer is built twice by layers/runtime/Makefile (the same pins, for this machine's architecture:
   manylinux x86_64 here, aarch64 on Graviton), without bytecode and with it, and `import app` of
   functions/describe_image is timed in fresh processes of a CPython 3.13, the runtime's version, with
   PYTHONDONTWRITEBYTECODE=1: Lambda cannot write bytecode either (/opt and /var/task are read-only), so every module
   without it is compiled again at every cold start. LAMBDA_TASK_ROOT is set, so powertools' Tracer patches the SDKs
   at import as it does on Lambda. Three variants: no bytecode (before), the layer's bytecode (what
   layers/runtime/Makefile builds now), and the layer's plus the function code's (which `sam build` of the function
   does not compile: its python_pip build leaves *.pyc out). Runs are interleaved; the first run of each variant
   (a cold disk cache) is reported apart from the min/median/max of the others.
2. Peak memory. Images at the template's limits (MAX_IMAGE_PIXELS pixels, just under MAX_OBJECT_BYTES) are uploaded
   to the emulated stack (moto, from template.yaml); then ONE batch of their SQS records goes through
   app.lambda_handler in a fresh process, the loopback model answering at once, and the process's peak resident set
   (VmHWM) is printed against the function's MemorySize, beside its resident set after `import app`. A one-record
   batch of each kind comes first, for what one image costs. Every image is distinct (no content-cache hit). The
   worst case is a PNG with a palette and a transparent colour: decoded at 1 byte a pixel, converted to RGBA
   (4 bytes) and flattened on white through an RGB copy (Pillow keeps RGB at 4 bytes a pixel as well), while
   two images are decoded at once; a JPEG decodes at 1/8 scale (`draft`), its pixels are never all in memory.
   Freed image memory also stays in each worker thread's glibc malloc arena unless the mmap threshold is fixed:
   `--env MALLOC_MMAP_THRESHOLD_=1048576` (set in the batch's process) shows the difference.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FUNCTION_DIR = REPO / "functions" / "describe_image"
LAYER_SOURCE = REPO / "layers" / "runtime"
RUNTIME_VERSION = "3.13"
MIB = 1024 * 1024
MB = 1_000_000
CHILD_TIMEOUT_SECONDS = 600
# Below MAX_OBJECT_BYTES by this share: PNG and JPEG sizes of noise are predictable to about a percent.
OBJECT_BYTES_SHARE = 0.97

# A fresh interpreter imports the handler: seconds, and how many Python modules came with usable bytecode.
IMPORT_CHILD = r"""
import json, os, sys, time
started = time.perf_counter()
import app
seconds = time.perf_counter() - started
cached = [m.__cached__ for m in list(sys.modules.values()) if getattr(m, "__cached__", None)]
print(json.dumps({"seconds": seconds, "python_modules": len(cached), "with_bytecode": sum(map(os.path.exists, cached))}))
"""

# A fresh function instance: import, then one batch of the queue's records, as Lambda's event source delivers it.
BATCH_CHILD = r"""
import json, sys, time

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

queue_url, queue_arn, expected, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
import app
import boto3
from devkit.lambda_emulator import FakeLambdaContext, lambda_sqs_event

after_import = status("VmRSS")
sqs = boto3.client("sqs")
messages, give_up = [], time.monotonic() + 30
while len(messages) < expected and time.monotonic() < give_up:
    answer = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=min(10, expected - len(messages)), WaitTimeSeconds=1,
        AttributeNames=["All"], MessageAttributeNames=["All"],
    )
    messages += answer.get("Messages", [])
started = time.perf_counter()
result = app.lambda_handler(lambda_sqs_event(messages, queue_arn), FakeLambdaContext(timeout_seconds=timeout))
seconds = time.perf_counter() - started
peak = status("VmHWM")
for message in messages:
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
print(json.dumps({
    "records": len(messages),
    "failed_items": len(result.get("batchItemFailures", [])),
    "after_import": after_import,
    "peak": peak,
    "seconds": seconds,
    "python": sys.version.split()[0],
}))
"""


@dataclass
class Variant:
    name: str
    function_dir: Path
    layer_site: Path
    first: float = 0.0
    runs: list[float] = field(default_factory=list)
    python_modules: int = 0
    with_bytecode: int = 0


@dataclass(frozen=True)
class LayerSize:
    files: int
    pyc_files: int
    bytes: int
    zipped: int


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    mode: str
    image_format: str
    fill: Any


KINDS = {
    kind.name: kind
    for kind in (
        Kind("png-palette-alpha", "PNG, palette + transparent colour", "P", "PNG", 1),
        Kind("png-rgba", "PNG, RGBA", "RGBA", "PNG", (200, 120, 40, 160)),
        Kind("jpeg", "JPEG, RGB", "RGB", "JPEG", (200, 120, 40)),
    )
}


# --- Part 1: import time.


def find_runtime_python(explicit: str) -> str | None:
    """The CPython 3.13 that layers/runtime/Makefile would compile with (same rules: find-python.sh)."""
    done = subprocess.run(
        ["sh", str(LAYER_SOURCE / "find-python.sh"), RUNTIME_VERSION, explicit],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def build_layer(target: Path, *, bytecode: bool, runtime_python: str) -> float:
    """layers/runtime/Makefile's own build, for this machine's architecture; its wall time in seconds."""
    arch = _architecture()
    command = [
        "make",
        "--no-print-directory",
        "-C",
        str(LAYER_SOURCE),
        "build",
        f"ARTIFACTS_DIR={target}",
        f"PYTHON={sys.executable}",
        f"LAYER_PLATFORMS=manylinux2014_{arch} manylinux_2_28_{arch}",
        f"LAYER_BYTECODE={'yes' if bytecode else 'no'}",
        f"LAYER_PYTHON={runtime_python}",
    ]
    # Not the settings of a `make bench-coldstart` around us: only what is given here.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"layer build failed ({' '.join(command)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def copy_function(target: Path, runtime_python: str | None) -> Path:
    """The function's code as `sam build` ships it (no __pycache__), compiled too when runtime_python is given."""
    shutil.copytree(FUNCTION_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if runtime_python:
        subprocess.run(
            [
                *(runtime_python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"),
                *("-s", str(target), "-p", "/var/task", str(target)),  # recorded under /var/task, as on Lambda
            ],
            check=True,
        )
    return target


def layer_size(artifacts_dir: Path) -> LayerSize:
    """Files and bytes under python/, and the zip `sam deploy` would upload (deflate, zipfile's default level)."""
    files = [path for path in sorted(artifacts_dir.rglob("*")) if path.is_file()]
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(artifacts_dir))
        zipped = handle.tell()
    return LayerSize(
        files=len(files),
        pyc_files=sum(path.suffix == ".pyc" for path in files),
        bytes=sum(path.stat().st_size for path in files),
        zipped=zipped,
    )


def lambda_environment(function_dir: Path, layer_site: Path) -> dict[str, str]:
    """What a python3.13 Lambda's process has that matters here; nothing of this machine's environment."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        # Lambda's order: the function's code, then the layer.
        "PYTHONPATH": os.pathsep.join([str(function_dir), str(layer_site)]),
        "PYTHONDONTWRITEBYTECODE": "1",  # Lambda cannot write any: nothing compiled by one run helps the next
        "LAMBDA_TASK_ROOT": str(function_dir),
        "AWS_LAMBDA_FUNCTION_NAME": "sightline-describe-image",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "sightline-bench",
        "POWERTOOLS_METRICS_NAMESPACE": "Sightline",
    }


def import_once(runtime_python: str, variant: Variant, *extra: str) -> subprocess.CompletedProcess[str]:
    # -s: not the interpreter's own user site-packages; Lambda's sys.path has the function and the layer first.
    done = subprocess.run(
        [runtime_python, "-s", *extra, "-c", IMPORT_CHILD],
        env=lambda_environment(variant.function_dir, variant.layer_site),
        cwd=variant.function_dir,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"`import app` failed ({variant.name}):\n{done.stderr[-3000:]}")
    return done


def time_imports(runtime_python: str, variants: list[Variant], runs: int) -> None:
    """runs + 1 rounds, each variant once per round; the first round is each variant's first (cold) run."""
    for round_ in range(runs + 1):
        for variant in variants:
            figures = json.loads(import_once(runtime_python, variant).stdout.strip().splitlines()[-1])
            if round_ == 0:
                variant.first = figures["seconds"]
            else:
                variant.runs.append(figures["seconds"])
            variant.python_modules, variant.with_bytecode = figures["python_modules"], figures["with_bytecode"]


def import_profile(runtime_python: str, variant: Variant) -> dict[str, float]:
    """Seconds spent importing each top-level package (its modules' own time), from one -X importtime run."""
    done = import_once(runtime_python, variant, "-X", "importtime")
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        package = name.split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(self_us) / 1e6
    return totals


def print_table(header: tuple[str, ...], lines: Sequence[tuple[str, ...]], left: int = 1) -> None:
    """A plain table like the other benchmarks': the first ``left`` columns left-aligned, numbers right."""
    rows = [header, *lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        cells = (
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        print(" | ".join(cells))
        if number == 0:
            print("-+-".join("-" * width for width in widths))


def report_imports(variants: list[Variant], runs: int) -> None:
    before = statistics.median(variants[0].runs)
    lines = []
    for variant in variants:
        median = statistics.median(variant.runs)
        lines.append(
            (
                variant.name,
                f"{variant.first:.3f}",
                f"{min(variant.runs):.3f}",
                f"{median:.3f}",
                f"{max(variant.runs):.3f}",
                f"{median - before:+.3f}",
                f"{variant.with_bytecode} of {variant.python_modules}",
            )
        )
    header = ("`import app`", "first run s", "min s", "median s", "max s", "median vs before", "modules with bytecode")
    print_table(header, lines)
    print(
        f"({runs} runs per variant after the first, interleaved; seconds of `import app` alone, not interpreter start)"
    )


def report_profiles(profiles: dict[str, dict[str, float]], top: int = 8) -> None:
    names = list(profiles)
    first = profiles[names[0]]
    packages = sorted(first, key=first.__getitem__, reverse=True)[:top]
    lines = [(package, *(f"{profiles[name].get(package, 0.0) * 1000:.0f}" for name in names)) for package in packages]
    lines.append(("all", *(f"{sum(profiles[name].values()) * 1000:.0f}" for name in names)))
    print("\nwhere the import time goes (-X importtime, one run each; ms of each package's own modules):")
    print_table(("package", *(f"{name} ms" for name in names)), lines)


def report_sizes(sizes: dict[str, LayerSize], build_seconds: dict[str, float]) -> None:
    lines = [
        (
            name,
            f"{size.bytes / MB:.1f}",
            f"{size.zipped / MB:.1f}",
            f"{size.files:,}",
            f"{size.pyc_files:,}",
            f"{build_seconds[name]:.0f}",
        )
        for name, size in sizes.items()
    ]
    print(
        f"\nthe layer ({_architecture()} build; MB = 10^6 bytes; Lambda allows 250 MB unzipped for function and layers):"
    )
    print_table(("layer", "unzipped MB", "zipped MB", "files", ".pyc files", "build s"), lines)


def import_time_part(runtime_python: str, runs: int, workdir: Path) -> Path:
    """Part 1; returns the layer with bytecode (python/), for part 2."""
    version = subprocess.run(
        [runtime_python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(
        f"== Import time: `import app` in a fresh CPython {version} process ({runtime_python}),"
        f" {platform.machine()}, {os.cpu_count()} CPUs; PYTHONDONTWRITEBYTECODE=1 as on Lambda"
    )
    plain, compiled = workdir / "layer-no-bytecode", workdir / "layer-bytecode"
    build_seconds = {
        "without bytecode": build_layer(plain, bytecode=False, runtime_python=runtime_python),
        "with bytecode": build_layer(compiled, bytecode=True, runtime_python=runtime_python),
    }
    function = copy_function(workdir / "function", None)
    function_compiled = copy_function(workdir / "function-bytecode", runtime_python)
    variants = [
        Variant("no bytecode (before)", function, plain / "python"),
        Variant("layer bytecode (now)", function, compiled / "python"),
        Variant("layer + function bytecode", function_compiled, compiled / "python"),
    ]
    time_imports(runtime_python, variants, runs)
    report_imports(variants, runs)
    report_profiles({variant.name.split(" (")[0]: import_profile(runtime_python, variant) for variant in variants})
    report_sizes({"without bytecode": layer_size(plain), "with bytecode": layer_size(compiled)}, build_seconds)
    return compiled / "python"


# --- Part 2: peak memory of one batch.


def make_image(kind: Kind, side: int, noise_rows: int, seed: int) -> bytes:
    """A side×side image whose first noise_rows rows are noise (incompressible: they set the file's size)."""
    from PIL import Image

    image = Image.new(kind.mode, (side, side), kind.fill)
    if kind.mode == "P":
        image.putpalette([level for level in range(256) for _ in range(3)])
    if noise_rows:
        channels = len(kind.mode) if kind.mode != "P" else 1
        noise = random.Random(seed).randbytes(side * noise_rows * channels)
        image.paste(Image.frombytes(kind.mode, (side, noise_rows), noise), (0, 0))
    buffer = io.BytesIO()
    if kind.image_format == "PNG":
        options = {"transparency": 0} if kind.mode == "P" else {}
        image.save(buffer, "PNG", compress_level=1, **options)
    else:
        image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def largest_images(kind: Kind, side: int, max_bytes: int, count: int, seed: int) -> Iterator[bytes]:
    """count distinct images of side×side, each just under max_bytes (noise rows calibrated on the first)."""
    target = int(max_bytes * OBJECT_BYTES_SHARE)
    strip = len(make_image(kind, side, side // 20, seed)) - len(make_image(kind, side, 0, seed))
    rows = min(side, int(target / (strip / (side // 20))))
    for index in range(count):
        data = make_image(kind, side, rows, seed + index)
        while len(data) > max_bytes:  # noise is random: a rare image comes out a little larger
            rows = int(rows * 0.98)
            data = make_image(kind, side, rows, seed + index)
        yield data


def wait_for_depth(sqs: Any, queue_url: str, expected: int, seconds: float = 60) -> int:
    from devkit.lambda_emulator import queue_depth

    give_up = time.monotonic() + seconds
    depth = queue_depth(sqs, queue_url)
    while depth < expected and time.monotonic() < give_up:
        time.sleep(0.1)
        depth = queue_depth(sqs, queue_url)
    return depth


def drain(sqs: Any, queue_url: str) -> None:
    """Delete what the queue holds (PurgeQueue may run once a minute only)."""
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@dataclass(frozen=True)
class BatchFigures:
    kind: Kind
    records: int
    object_bytes: int
    after_import: int
    peak: int
    seconds: float
    statuses: dict[str, int]
    retried: int  # batchItemFailures: items SQS would deliver again
    python: str


def run_batch(child_python: str, child_env: dict[str, str], stack: Any, expected: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            child_python,
            "-s",
            "-c",
            BATCH_CHILD,
            stack.queue_url,
            stack.queue_arn,
            str(expected),
            str(stack.function_timeout),
        ],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the batch's process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def statuses(session: Any, table: str, prefix: str) -> dict[str, int]:
    from sightline.adapters.dynamodb import from_item

    records = [from_item(item) for item in session.client("dynamodb").scan(TableName=table)["Items"]]
    counts = Counter(
        record["status"] + (f" ({record['error_type']})" if record.get("error_type") else "")
        for record in records
        if str(record.get("key", "")).startswith(prefix)
    )
    return dict(counts)


def memory_part(
    kinds: list[Kind],
    records: int,
    layer_site: Path | None,
    runtime_python: str | None,
    workdir: Path,
    extra_env: dict[str, str],
) -> None:
    import boto3

    from devkit.model_server import ModelServer, ScriptedResponder
    from devkit.run import REGION, emulated_aws
    from devkit.stack import DEFAULT_TEMPLATE_PATH, FUNCTION_ID, deploy_stack, load_sam_template
    from sightline.settings import MAX_IMAGE_PIXELS, MAX_OBJECT_BYTES

    memory_mb = int(load_sam_template(DEFAULT_TEMPLATE_PATH)["Resources"][FUNCTION_ID]["Properties"]["MemorySize"])
    if runtime_python and layer_site:
        child_python, path = runtime_python, [str(workdir / "function"), str(layer_site), str(REPO)]
        where = f"CPython {RUNTIME_VERSION} with the layer built above ({platform.machine()})"
    else:
        child_python, path = sys.executable, [str(FUNCTION_DIR), str(REPO)]
        where = (
            f"this venv's Python {platform.python_version()} and its packages ({platform.machine()}): no CPython"
            f" {RUNTIME_VERSION} here, so not the runtime's interpreter; its figures may differ somewhat from Lambda's"
        )

    with emulated_aws() as endpoint, ModelServer(ScriptedResponder()) as model:
        session = boto3.session.Session(region_name=REGION)
        stack = deploy_stack(session, endpoint_url=endpoint)
        env = stack.function_environment
        max_pixels, max_bytes = int(env[MAX_IMAGE_PIXELS]), int(env[MAX_OBJECT_BYTES])
        side = int(max_pixels**0.5)
        print(
            f"\n== Peak memory: one SQS batch through app.lambda_handler in a fresh process: {where}; moto and the"
            f" loopback model\nlimits from template.yaml: MAX_IMAGE_PIXELS {max_pixels:,} (images {side}×{side}),"
            f" MAX_OBJECT_BYTES {max_bytes:,} (objects ~{OBJECT_BYTES_SHARE:.0%} of it); MemorySize {memory_mb} MB"
            f" (MiB, as Lambda counts); figures in MiB"
        )
        child_env = {
            **lambda_environment(Path(path[0]), Path(path[1])),
            **env,
            "PYTHONPATH": os.pathsep.join(path),  # and the repository, for devkit.lambda_emulator
            "MODEL_BASE_URL": model.base_url,
            "MODEL_API_KEY": "bench",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
        }
        child_env.pop("LAMBDA_TASK_ROOT")
        child_env.update(
            {key: os.environ[key] for key in os.environ if key.startswith("AWS_") and key != "AWS_LAMBDA_FUNCTION_NAME"}
        )
        child_env.update(extra_env)
        if extra_env:
            print("set in the batch's process: " + " ".join(f"{key}={value}" for key, value in extra_env.items()))
        sqs, s3 = session.client("sqs"), session.client("s3")
        drain(sqs, stack.queue_url)  # the s3:TestEvent
        results: list[BatchFigures] = []
        for kind_number, kind in enumerate(kinds):
            images = largest_images(kind, side, max_bytes, 1 + records, seed=1000 * (kind_number + 1))
            for batch_number, size in enumerate((1, records)):
                prefix = f"bench/{kind.name}/{batch_number}/"
                object_bytes = 0
                for index in range(size):
                    data = next(images)
                    object_bytes = max(object_bytes, len(data))
                    suffix = "png" if kind.image_format == "PNG" else "jpg"
                    s3.put_object(Bucket=stack.bucket, Key=f"{prefix}{index}.{suffix}", Body=data)
                depth = wait_for_depth(sqs, stack.queue_url, size)
                if depth != size:
                    raise SystemExit(f"expected {size} messages on the uploads queue, found {depth}")
                figures = run_batch(child_python, child_env, stack, size)  # it deletes the batch's messages
                results.append(
                    BatchFigures(
                        kind=kind,
                        records=figures["records"],
                        object_bytes=object_bytes,
                        after_import=figures["after_import"],
                        peak=figures["peak"],
                        seconds=figures["seconds"],
                        statuses=statuses(session, stack.table, prefix),
                        retried=figures["failed_items"],
                        python=figures["python"],
                    )
                )
    report_memory(results, memory_mb)


def report_memory(results: list[BatchFigures], memory_mb: int) -> None:
    lines = []
    for result in results:
        share = (result.peak - result.after_import) / MIB
        lines.append(
            (
                result.kind.label,
                str(result.records),
                f"{result.object_bytes / MIB:.1f}",
                f"{result.after_import / MIB:.0f}",
                f"{result.peak / MIB:.0f}",
                f"{share:.0f}",
                f"{result.peak / MIB / memory_mb:.0%}",
                f"{result.seconds:.1f}",
                ", ".join(f"{count} {status}" for status, count in sorted(result.statuses.items()))
                + (f"; {result.retried} to retry" if result.retried else ""),
            )
        )
    print_table(
        (
            "images",
            "records",
            "largest object MiB",
            "RSS after import",
            "peak RSS",
            "batch's share",
            f"of {memory_mb} MiB",
            "batch s",
            "records written",
        ),
        lines,
    )
    over = [result for result in results if result.peak / MIB > memory_mb]
    for result in over:
        print(
            f"over MemorySize: {result.records} × {result.kind.label} peaks at {result.peak / MIB:.0f} MiB; on Lambda"
            " the instance would be killed mid-batch (Runtime.OutOfMemory) and the whole batch retried"
        )
    print(f"(Python {results[0].python} in the batch's process; {platform.machine()}, {os.cpu_count()} CPUs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed imports per variant after the first (default 15)")
    parser.add_argument(
        "--layer-python",
        default=os.environ.get("LAYER_PYTHON", ""),
        help="the CPython 3.13 to build and import with (default: LAYER_PYTHON, else as layers/runtime finds one)",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"images for the memory part, comma-separated (default: all of {', '.join(KINDS)})",
    )
    parser.add_argument("--records", type=int, default=10, help="records in the memory batch (default 10)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also set in the batch's process, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    parser.add_argument("--skip-import", action="store_true", help="only the memory part")
    parser.add_argument("--skip-memory", action="store_true", help="only the import part")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.kinds.split(",") if name.strip()]
    if unknown := [name for name in names if name not in KINDS]:
        parser.error(f"unknown --kinds {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    kinds = [KINDS[name] for name in names]
    extra_env = dict(item.split("=", 1) for item in args.env if "=" in item)
    if args.runs < 10:
        parser.error("--runs must be at least 10 for a median worth reading")
    if not 1 <= args.records <= 10:
        parser.error("--records must be 1 to 10: an SQS batch holds at most 10 records")

    started = time.perf_counter()
    runtime_python = find_runtime_python(args.layer_python)
    if runtime_python is None:
        print(
            f"no CPython {RUNTIME_VERSION} found (LAYER_PYTHON={args.layer_python or '(not set)'}): the import part"
            " needs the runtime's version and is skipped; give one with LAYER_PYTHON=/path/to/python3.13"
        )
    with contextlib.ExitStack() as cleanup:
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sightline-coldstart-")))
        layer_site = None
        if runtime_python and not (args.skip_import and args.skip_memory):
            if args.skip_import:  # the memory part still runs on the runtime's Python with the built layer
                layer_site = workdir / "layer-bytecode" / "python"
                build_layer(layer_site.parent, bytecode=True, runtime_python=runtime_python)
                copy_function(workdir / "function", None)
            else:
                layer_site = import_time_part(runtime_python, args.runs, workdir)
        if not args.skip_memory:
            memory_part(kinds, args.records, layer_site, runtime_python, workdir, extra_env)
    print(f"\nbenchmark time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
