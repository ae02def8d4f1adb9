# The README's two commands: `make run` (service on 127.0.0.1:8855) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint format bench trust clean nginx

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# Debian packages the tests drive as real programs, installed when missing (CI runs as root):
# logrotate for the log rotation test, nginx for the slow-client test (contrib/nginx), swaks
# as a real SMTP/LMTP client for the SMTP door.
SYSTEM_PACKAGES := logrotate nginx-light swaks
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
	$(BIN)/python -m smime_collector.serve

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
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .system-deps
