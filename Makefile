# The two commands of the README: `make lab` and `make test`. Both set up what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
NODES  ?= 2
SYSPKG := debootstrap systemd-container tinyproxy iproute2 openssh-client curl prometheus

.PHONY: lab lab-down lab-status test test-full test-fast lint venv sysdeps bench

$(VENV)/.r1deploy-installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(VENV)/.r1deploy-installed

# The lab needs root and a few Debian packages on the controller.
sysdeps:
	@missing=""; for p in $(SYSPKG); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

lab: venv sysdeps
	$(PY) -m lab up --nodes $(NODES) >/dev/null
	$(VENV)/bin/pyinfra -y lab/inventories/lab.py deploy/main.py
	$(PY) -m lab report

lab-down: venv
	$(PY) -m lab down

lab-status: venv
	$(PY) -m lab status

test: venv sysdeps
	$(VENV)/bin/pytest

# Everything, the long lab suites included (about 1.5-2 h on 2 cores).
test-full: venv sysdeps
	$(VENV)/bin/pytest -m "lab or not lab"

test-fast: venv
	$(VENV)/bin/pytest -m "not lab"

lint: venv
	$(VENV)/bin/ruff check .

bench: venv sysdeps
	$(PY) bench/converge.py
	$(PY) bench/planner_agreement.py
