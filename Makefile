# Two entry points, both self-installing on a fresh machine:
#   make demo   creates .venv, installs torch 2.13.0 (CPU) first, then attributor, runs the demo
#   make test   same environment, runs the test suite
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
STAMP   := $(VENV)/.installed

.PHONY: demo test install sysdeps clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attributor demo --out runs/demo

# PostgreSQL (registry tests on a real server) and Chromium (dashboard screenshots):
# installed with apt when missing and we may; otherwise those tests skip (CI requires them).
sysdeps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing postgresql and chromium with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium >/dev/null; \
	else echo "note: postgresql/chromium missing and cannot apt-get install them: their tests will skip"; fi

test: $(STAMP) sysdeps
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
