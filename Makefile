# The two commands a person needs: `make demo` and `make test`. Both set up everything they use and are
# idempotent; every install step lives here or in scripts/, never in a manual README step.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HPCGW := $(VENV)/bin/hpcgw
TORCH_SPEC ?= torch==2.13.0
BUILD_DEBS := cmake g++ make libopenmpi-dev openmpi-bin
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: all venv system-deps horovod apptainer image cluster-up cluster-down postgres-up demo demo-direct test lint bench clean

all: demo

system-deps:
	@scripts/install-system-deps.sh $(BUILD_DEBS)

# The project with every extra, and the development cluster (its own distribution, never in the runtime wheel).
$(VENV)/.stamp: pyproject.toml devcluster/pyproject.toml | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test]' -e ./devcluster
	@touch $@

venv: $(VENV)/.stamp

horovod: venv
	@scripts/build-horovod.sh $(PY)

# Apptainer 1.4.5 from Debian's source package (~7 min the first time, then cached; a site's own apptainer on PATH
# is used as it is). The development cluster runs every trainer in the image below.
apptainer: system-deps
	@scripts/build-apptainer.sh >/dev/null

# The intent classifier's CPU image (.hpcgw/images/intent-classifier.sif), rebuilt only when what goes in changed.
image: horovod apptainer
	@scripts/build-image.sh $(PY) >/dev/null

# The cluster, then the example configuration's Unix users and groups (and the gateway's own user with its one
# sudoers rule), then its teams' Slurm accounts, limits and fair-share: all idempotent.
cluster-up: venv
	$(HPCGW) cluster up --partitions team-a,team-b,team-c
	$(HPCGW) cluster users --config config/example.toml
	$(HPCGW) accounts sync --config config/example.toml

cluster-down:
	@test -x $(HPCGW) && $(HPCGW) cluster down || true

demo: image cluster-up
	$(PY) -m examples.gateway_demo

# The same trainer through the launcher library alone, without the gateway.
demo-direct: image cluster-up
	$(PY) -m examples.launcher_demo

postgres-up:
	@scripts/postgres-dev.sh up .hpcgw/postgres >/dev/null

# tmux: tests/slurm/test_terminal.py drives the real `hpcgw` in a terminal of a given size.
test: image cluster-up postgres-up
	@scripts/install-system-deps.sh tmux chromium chromium-driver
	$(PY) -m pytest $(PYTEST_ARGS)

# slurmrestd (Debian's) runs beside the gateway in the comparison; PostgreSQL holds the failover case's database.
bench: image cluster-up postgres-up
	@scripts/install-system-deps.sh slurmrestd
	$(PY) -m bench.bench $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean: cluster-down
	rm -rf $(VENV) .hpcgw
