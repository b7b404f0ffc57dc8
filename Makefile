# Sightline: targets a newcomer can guess. `make run` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/functions/describe_image:$(CURDIR)
LAYER_DIR ?= $(CURDIR)/.build/layer

.PHONY: help venv run test unit integration lint format validate layer build deploy bench bench-prepare bench-batch bench-streaming bench-documents bench-anchors bench-estimate bench-coldstart redrive records ci clean scan scan-tools

help:
	@echo "make run        the whole pipeline locally: moto (AWS) + sample uploads + the real handler"
	@echo "make test       unit and integration tests (offline, loopback only)"
	@echo "make lint       ruff (lint + format check) and mypy"
	@echo "make validate   cfn-lint on template.yaml"
	@echo "make scan       the template's scanners, as CI runs them: sam validate --lint and checkov (own venvs)"
	@echo "make layer      build the Lambda layer for arm64 / Python 3.13 into $(LAYER_DIR) (no Docker; bytecode by a CPython 3.13: LAYER_PYTHON=...)"
	@echo "make build      sam build (needs the SAM CLI; the layer builds with the same pip command)"
	@echo "make bench      benchmarks that print figures: image preparation vs libvips and naive Pillow, batch concurrency, streaming"
	@echo "make bench-estimate  the dry-run estimate against the emulated bill on the sample corpus, bytes read per object"
	@echo "make bench-coldstart  handler import time with/without bytecode, peak memory of a batch of the largest images"
	@echo "make records   list records with their reasons (ARGS=\"--status processing\", --json, --stack-name NAME)"
	@echo "make redrive   move the dead-letter queue back to the uploads queue (ARGS=\"--dry-run\")"
	@echo "make ci         what .ci/run runs: lint, validate, scan, test"

$(VENV)/.installed: requirements-dev.txt layers/runtime/requirements.txt constraints.txt layers/runtime/constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	# The `sightline` command (an editable install: the venv runs the code in this checkout).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) -m devkit.run $(ARGS)

test: venv
	$(PY) -m pytest $(ARGS)

unit: venv
	$(PY) -m pytest -m unit $(ARGS)

integration: venv
	$(PY) -m pytest -m integration $(ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy functions/describe_image devkit benchmarks scripts sightline_cli

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

validate: venv
	$(VENV)/bin/cfn-lint template.yaml

# The scanners live in venvs of their own (their pins conflict with each other's and with the project's boto3).
SCAN_VENV ?= .venv-scan
$(SCAN_VENV)/%/.installed: requirements-%.txt
	rm -rf $(SCAN_VENV)/$*
	$(PYTHON) -m venv $(SCAN_VENV)/$*
	$(SCAN_VENV)/$*/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-$*.txt
	touch $@

scan-tools: $(SCAN_VENV)/sam/.installed $(SCAN_VENV)/checkov/.installed

# Both fail on any finding: a check that does not apply is suppressed in the template (Metadata: checkov: skip)
# with its reason, which tests/unit/test_template.py requires. --skip-download: nothing is fetched from Prisma Cloud.
scan: scan-tools
	SAM_CLI_TELEMETRY=0 $(SCAN_VENV)/sam/bin/sam validate --lint --template template.yaml --region us-east-1
	$(SCAN_VENV)/checkov/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

layer:
	$(MAKE) -C layers/runtime build ARTIFACTS_DIR=$(LAYER_DIR) PYTHON=$(PYTHON)

build:
	sam build

deploy: build
	sam deploy --guided

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c constraints.txt
	touch $@

bench: bench-prepare bench-batch bench-streaming bench-documents bench-anchors bench-estimate bench-coldstart

bench-prepare: $(VENV)/.bench-installed
	$(PY) -m benchmarks.prepare $(ARGS)

bench-batch: venv
	$(PY) -m benchmarks.batch

bench-streaming: venv
	$(PY) -m benchmarks.streaming $(ARGS)

bench-documents: venv
	$(PY) -m benchmarks.documents $(ARGS)

bench-anchors: venv
	$(PY) -m benchmarks.anchors $(ARGS)

records: venv
	$(PY) -m scripts.list_records $(ARGS)

redrive: venv
	$(PY) -m scripts.redrive_dlq $(ARGS)

ci: lint validate scan test

clean:
	rm -rf $(VENV) $(SCAN_VENV) .build .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis

bench-estimate: venv
	$(PY) -m benchmarks.estimate $(ARGS)

# Builds the layer twice in a temporary folder (pip downloads) and needs a CPython 3.13 (LAYER_PYTHON=... or found).
bench-coldstart: venv
	$(PY) -m benchmarks.coldstart $(ARGS)
