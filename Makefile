# Two commands on a fresh machine with Python 3.11 and pip:
#   make run    set up .venv and run the release flow on the demo data
#   make test   set up .venv and run the tests (all tiers: what CI runs)
#   make test-fast  the unit tier only, for the edit loop (< 60 s; the first run after a change to
#                   tasks/ or serving/ trains the demo models again, a few seconds more)
#   make soak   the fault suite's soaks: 10 minutes, then 11 at the memory plateau (make test: 60 s and 70 s)
#   make lint   ruff and the architecture's import contracts
#   make docs   serve the documentation site (docs/, mkdocs.yml) on http://127.0.0.1:8001
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIPELINE_HOME ?= artifacts
export PIPELINE_HOME

.PHONY: install run stop test test-fast soak lint bench clean serve system-deps docs docs-build

# Quiet by default: pip's warnings and the build backend's (setuptools) are not shown; errors are.
# `make install VERBOSE=1` shows them.
PIP_QUIET := $(if $(VERBOSE),--quiet,--quiet --quiet)
BUILD_WARNINGS := $(if $(VERBOSE),,PYTHONWARNINGS=ignore)

# The project itself is installed editable (no dependencies: those are pinned above), so flows, tasks,
# serving and the tests' helpers (testkit) import normally from anywhere: tests, bench/, subprocesses.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) -r requirements.txt -c constraints.txt
	$(BUILD_WARNINGS) $(PY) -m pip install $(PIP_QUIET) --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m flows release --data data/demo.csv --schema configs/schema.yaml \
		--feature-list configs/feature_list.csv --json-out $(PIPELINE_HOME)/last_release.json
	@echo "summary: $(PIPELINE_HOME)/last_release.json; stop the server with: make stop"

stop: $(STAMP)
	$(PY) -m flows stop --target local

# System packages the tests use: a real OpenSSH server for the ssh transport, curl for the guide,
# PostgreSQL for the team setup (Prefect server and MLflow tracking server on it), Chromium for the
# dashboard, promtool (Debian's prometheus) for the alert rules, systemd-analyze for the server's
# unit, iproute2 (ip netns, ss) for the fleet's hosts as network namespaces, nginx for the fleet's
# load balancer. One apt-get update at most, and none when everything is already there.
system-deps:
	@pkgs=""; \
	{ test -x /usr/sbin/sshd && command -v curl >/dev/null; } || pkgs="openssh-server curl"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || pkgs="$$pkgs postgresql"; \
	command -v chromium >/dev/null || pkgs="$$pkgs chromium"; \
	command -v promtool >/dev/null || pkgs="$$pkgs prometheus"; \
	command -v systemd-analyze >/dev/null || pkgs="$$pkgs systemd"; \
	{ command -v ip && command -v ss; } >/dev/null || pkgs="$$pkgs iproute2"; \
	test -x /usr/sbin/nginx || pkgs="$$pkgs nginx"; \
	command -v faketime >/dev/null || pkgs="$$pkgs faketime"; \
	test -z "$$pkgs" || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; }

# --durations=25: CI's log ends with the slowest tests. Under CI=true a skip not listed in tests/conftest.py
# (ALLOWED_SKIPS) fails the run.
test: $(STAMP) system-deps
	$(PY) -m pytest -q --durations=25 tests

# A test in a unit module that is marked integration itself (it starts processes) is not in the edit loop.
# The unit tier runs on TEST_WORKERS processes (pytest-xdist; each builds the session's demo model once).
TEST_WORKERS ?= 2
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "unit and not integration" tests

# The fault suite's soaks at length, in one run: tests/faults/test_load_faults.py's for the issue's 10 minutes, then
# tests/faults/test_memory_plateau.py's for 11 (its stores, shortened, are full after 30 s: 10 minutes at the
# plateau, where the slope is asserted). `make test` runs the same tests for 60 s and 70 s.
SOAK_SECONDS ?= 600
PLATEAU_SECONDS ?= 660
soak: $(STAMP)
	FAULT_SOAK_SECONDS=$(SOAK_SECONDS) PLATEAU_SOAK_SECONDS=$(PLATEAU_SECONDS) $(PY) -m pytest -q \
		tests/faults/test_load_faults.py::test_a_steady_soak_of_valid_and_invalid_requests tests/faults/test_memory_plateau.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The documentation site: served with live reload (port 8000 is the model server's), or built into
# build/site with every link and anchor checked (tests/test_docs_site.py builds it the same way).
docs: $(STAMP)
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

docs-build: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) bench/bench_training.py
	$(PY) bench/bench_serving.py
	$(PY) bench/bench_monitoring.py    # add --evidently-python V/bin/python for the Evidently column (bench/README.md)

serve: $(STAMP)
	SERVING_MODEL_ROOT=$(PIPELINE_HOME)/models $(PY) -m serving --port 8000

clean:
	rm -rf $(PIPELINE_HOME)
