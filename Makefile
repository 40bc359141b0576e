# The two commands: `make run` (the daemon) and `make test` (the whole test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/fallwatch.yaml
SOURCE ?=

# In a development checkout the real models and clips sit beside it in ../shared; use them unless told otherwise.
SHARED := $(abspath ../shared)
ifeq ($(FALLWATCH_MODEL_DIR),)
  ifneq ($(wildcard $(SHARED)/models),)
    export FALLWATCH_MODEL_DIR := $(SHARED)/models
  endif
endif
ifeq ($(FALLWATCH_DATA_DIR),)
  ifneq ($(wildcard $(SHARED)/data),)
    export FALLWATCH_DATA_DIR := $(SHARED)/data
  endif
endif

# systemd-python compiles against libsystemd; install that extra only where the library's headers are present.
EXTRAS := dev$(shell pkg-config --exists libsystemd 2>/dev/null && echo ,systemd)

.PHONY: run test lint install install-dev models clean pi-test ha-test docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Fetch (and verify) the models the configuration needs, unless they are already present and verified.
models: install
	@$(BIN)/fallwatch models verify --config "$(CONFIG)" >/dev/null 2>&1 || $(BIN)/fallwatch models fetch --config "$(CONFIG)"

run: models
	$(BIN)/fallwatch run --config "$(CONFIG)" $(if $(SOURCE),--source "$(SOURCE)")

# The MQTT load test: N simulated devices (the real publisher and outbox) on one local mosquitto, restarted mid-run.
.PHONY: mqtt-load
N ?= 50
mqtt-load: install-dev
	$(BIN)/python bench/mqtt_load.py --devices $(N) $(LOAD_ARGS)

# Issue 21's attacks together against a running daemon (real mosquitto, the page on, a looping fall clip).
.PHONY: abuse
MINUTES ?= 10
abuse: install-dev
	$(BIN)/python bench/abuse.py --minutes $(MINUTES) $(ABUSE_ARGS)

# ruff (lint, format) and mypy. The folders install as fallwatch.<folder>: mypy reads them through a linked
# fallwatch/ tree so that the package's own imports resolve.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@tree=$$(mktemp -d) && mkdir $$tree/fallwatch && for p in daemon pose rules config; do ln -s "$(CURDIR)/$$p" $$tree/fallwatch/$$p; done \
	  && cd $$tree && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/pyproject.toml" -p fallwatch; rc=$$?; rm -rf $$tree; exit $$rc

# JOBS pytest-xdist workers (CI has 2 cores), each taking a whole test module at a time (--dist loadscope) so a
# module's fixtures (a clip through the pipeline, a daemon) run once; then the tests marked solo (a wall-clock
# bound on a real daemon) alone, so that no other worker takes their time. JOBS=0: one process. Exit 5: none chosen.
JOBS ?= 2
XDIST = $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadscope)

test: install-dev
	$(BIN)/python -m pytest $(XDIST) -m "not solo" $(PYTEST_ARGS) || [ $$? = 5 ]
	$(BIN)/python -m pytest -m solo $(PYTEST_ARGS) || [ $$? = 5 ]

# The loop of daily work: everything but the tests marked slow (CI runs `make test`, all of them).
.PHONY: test-fast
test-fast: install-dev
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not solo" $(PYTEST_ARGS) || [ $$? = 5 ]
	$(BIN)/python -m pytest -m "solo and not slow" $(PYTEST_ARGS) || [ $$? = 5 ]

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or a page missing from nav fails.
$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# systemd/install.sh on emulated arm64 Debian 13 trixie and 12 bookworm: install, doctor, detect (root; slow: see
# docs/development/pi-test.md). PI_TEST_ARGS: --rebuild, --keep, or one release.
pi-test:
	$(if $(filter 0,$(shell id -u)),,sudo) bash tests/pi/pi_test.sh $(PI_TEST_ARGS)

# The picamera2 source against Debian trixie's libcamera: its virtual camera, fed by a dev fall clip, in a native
# trixie root filesystem with the kernel's DMA-BUF heap stood in for (root; see docs/development/picamera-test.md).
# PICAM_TEST_ARGS: --rebuild, --keep.
.PHONY: picamera-test
picamera-test:
	$(if $(filter 0,$(shell id -u)),,sudo) bash tests/pi/picamera2_test.sh $(PICAM_TEST_ARGS)

# fallwatch against a real Home Assistant (PyPI, in a Debian trixie chroot): discovery, the blueprint, the buttons
# (root; a cold run downloads Home Assistant: see docs/development/ha-test.md). HA_TEST_ARGS: --rebuild, --keep.
ha-test: install-dev
	$(if $(filter 0,$(shell id -u)),,sudo) bash tests/ha/ha_test.sh $(HA_TEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site
