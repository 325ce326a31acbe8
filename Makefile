# RansomEye release pipeline.
#   make release   install what is missing, then build, sign and publish release/artifacts/
#   make test      install what is missing, then run the whole test suite
# Both are idempotent: a second run only does what is out of date.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The line coverage of release/ and governance/ that `make test` requires (branch coverage is reported).
COVERAGE_FLOOR ?= 90

.PHONY: release test golden setup python toolchain verify-js keys lint lock clean audit bench rebuild-and-compare

# BUILD_ARGS: options of build.py, e.g. --single-builder or --no-sandbox (development only).
release: setup keys
	$(PY) release/builder/build.py $(BUILD_ARGS)

# The suite under coverage (pyproject.toml's [tool.coverage]): the entry points the
# tests run in repository copies are measured too, then mapped back and combined;
# the extra `run --source` lists the modules no test ran, so they count as uncovered.
test: setup
	$(VENV)/bin/coverage erase
	COVERAGE_FILE=$(CURDIR)/.coverage $(VENV)/bin/coverage run -m pytest $(PYTEST_ARGS)
	@COVERAGE_FILE=$(CURDIR)/.coverage $(VENV)/bin/coverage run --source=release,governance -m release.errors
	@$(VENV)/bin/coverage combine --quiet
	@$(VENV)/bin/coverage report
	@$(PY) -m tests.coverage_floor $(COVERAGE_FLOOR)

# Rewrite the golden files (tests/golden/) from a fresh release; review the diff before committing.
golden: setup
	$(PY) -m pytest tests/test_golden.py --update-golden -q
	@git --no-pager diff --stat -- tests/golden/ || true

setup: python toolchain verify-js

python: $(STAMP)

# Pinned, hash-checked Python dependencies (requirements.lock) in .venv.
$(STAMP): requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	@touch $@

# Debian packages: the Windows cross toolchain, minisign, wine64 (tests).
toolchain:
	@sh release/setup_toolchain.sh

# The independent verifier of the Sigstore bundles (@sigstore/verify), as pinned by its lock file.
verify-js: release/verify-js/node_modules/.package-lock.json

release/verify-js/node_modules/.package-lock.json: release/verify-js/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm is missing: run apt-get install nodejs npm" >&2; exit 3; }
	npm ci --prefix release/verify-js --ignore-scripts --no-audit --no-fund
	@touch $@

# Development keys, generated once when none exist (loudly).
keys: $(STAMP)
	@$(PY) release/builder/signer.py dev-keys

# Audit the published release (writes audit.json and audit.html in release/).
audit: python
	$(PY) release/audit/audit.py release/artifacts --owner-key keys/owner.pub \
		--json release/audit.json --html release/audit.html

# Rebuild a published release from this checkout (its commit) and compare every archive bit for bit:
#   make rebuild-and-compare RELEASE=<the release folder> [CODESIGN_CA=<the code-signing CA certificate>]
# Writes release/rebuild-report/rebuild-compare.txt (and diffoscope's report of any difference).
rebuild-and-compare: setup
	@test -n "$(RELEASE)" || { echo "make rebuild-and-compare: say which release: RELEASE=<the release folder>" >&2; exit 2; }
	$(PY) release/builder/rebuild.py --release "$(RELEASE)" $(if $(CODESIGN_CA),--codesign-ca "$(CODESIGN_CA)")

# The benchmark against the stock-tool baseline (see bench/README.md).
bench: setup keys
	$(PY) bench/run.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check release governance layouts tests
	$(VENV)/bin/mypy

# Re-pin the Python dependencies (needs network access to PyPI).
lock:
	$(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile --generate-hashes --python-version 3.11 requirements.in -o requirements.lock

clean:
	rm -rf target release/.staging .coverage .coverage.*
