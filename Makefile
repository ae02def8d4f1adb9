# The README's two commands: `make run` (service on 127.0.0.1:8855) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every wheel the locks name, downloaded once: the venv installs from here, and the packaging
# test installs the project into a fresh venv from here without the network.
WHEELS := $(VENV)/wheels

.PHONY: run test lint format bench trust lock clean nginx

# Python 3.11 or newer, said before anything is created (pip would fail later, deep inside).
$(BIN)/.installed: requirements-dev.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "smime-collector needs Python 3.11 or newer, but $(PYTHON) is Python " + sys.version.split()[0] + ": run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip download --quiet --require-hashes --dest $(WHEELS) -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-index --find-links $(WHEELS) --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-index --no-deps --no-build-isolation --editable .
	touch $@

# Regenerate the locks (with hashes) after changing requirements*.txt.
lock: $(BIN)/.installed
	$(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	  --custom-compile-command "make lock" requirements.txt -o requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	  --custom-compile-command "make lock" requirements.txt requirements-dev.txt \
	  -c requirements.lock -o requirements-dev.lock

# Debian packages the tests drive as real programs, installed when missing (CI runs as root):
# logrotate for the log rotation test, nginx for the slow-client test (contrib/nginx), swaks
# as a real SMTP/LMTP client for the SMTP door, chromium for the operator page's browser tests,
# postgresql for the database store's tests (a throwaway cluster started by the suite).
SYSTEM_PACKAGES := logrotate nginx-light swaks chromium postgresql
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.system-deps: Makefile
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(BIN)/.installed
	$(BIN)/smime-collector serve

test: $(BIN)/.installed node_modules/.installed .system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/.installed
	$(BIN)/python -m bench.run

# Regenerate the email trust bundle from a newer certdata.txt: make trust CERTDATA=path VERSION=2.xx
trust: $(BIN)/.installed
	$(BIN)/python tools/certdata2pem.py $(CERTDATA) $(if $(VERSION),--builtins-version $(VERSION))

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .system-deps build *.egg-info
