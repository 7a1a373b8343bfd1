# Two commands do all the set-up: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME

.PHONY: demo test lint dev system-deps agent-cli clean images docker-engine

# The Claude Code CLI, from npm, into the project (.tools/claude); pinned so runs are repeatable.
CLAUDE_CODE_VERSION ?= 2.1.197
CLAUDE_BIN := .tools/claude/node_modules/.bin/claude

$(BIN)/orchestrator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $@

# bubblewrap isolates the local sandbox (runsc, gVisor, when a profile asks); chromium renders the UI in tests/test_ui.py; PostgreSQL's
# server runs tests/test_postgres.py; kubectl renders deploy/k8s. All are installed from Debian's packages when we are root.
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (sandbox isolation)"; \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) || echo "WARNING: could not install bubblewrap"; \
	  else echo "WARNING: bubblewrap (bwrap) is not installed: sandboxes run without isolation"; fi; }
	@command -v runsc >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing runsc (gVisor: profiles with isolation: gvisor)"; \
	    (apt-get update -qq && apt-get install -y -qq runsc >/dev/null) || echo "WARNING: could not install runsc"; \
	  else echo "WARNING: gVisor (runsc) is not installed: isolation: gvisor profiles fail their commands"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (headless browser for the UI test)"; \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "WARNING: could not install chromium"; \
	  else echo "WARNING: chromium is not installed: the UI test's browser part is skipped"; fi; }
	@command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium-driver (selenium drives chromium in tests/test_review_ui.py)"; \
	    (apt-get update -qq && apt-get install -y -qq chromium-driver >/dev/null) || echo "WARNING: could not install chromium-driver"; \
	  else echo "WARNING: chromedriver is not installed: the review UI browser tests are skipped"; fi; }
	@command -v kubectl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing kubectl (Debian's kubernetes-client: the tests render deploy/k8s with kustomize)"; \
	    (apt-get update -qq && apt-get install -y -qq kubernetes-client >/dev/null) || echo "WARNING: could not install kubectl"; \
	  else echo "WARNING: kubectl is not installed: the manifest tests are skipped"; fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (the tests run the platform on a real PostgreSQL server)"; \
	    (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) || echo "WARNING: could not install postgresql"; \
	  else echo "WARNING: PostgreSQL is not installed: the PostgreSQL storage tests are skipped"; fi; }

$(CLAUDE_BIN):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed to install the Claude Code CLI"; exit 1; }
	mkdir -p .tools/claude
	npm install --silent --no-audit --no-fund --prefix .tools/claude @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)

agent-cli: $(CLAUDE_BIN)

demo: $(BIN)/orchestrator system-deps agent-cli
	$(BIN)/python -m orchestrator_assets.demo_fleet .demo
	$(BIN)/orchestrator run --file campaigns/modernize-python.yaml
	@if [ -n "$$ANTHROPIC_API_KEY" ]; then \
	  $(BIN)/orchestrator run --file campaigns/add-docstrings.yaml; \
	else echo; echo "Set ANTHROPIC_API_KEY to also run the agentic example (campaigns/add-docstrings.yaml)."; fi
	@echo
	@echo "Pull requests are JSON records in .demo/acme/<repo>.git/pulls/."
	@echo "See the campaign in the Dagster UI: make dev, then open http://127.0.0.1:3000"
	@echo "(asset group modernize_python: partitions, verifier checks and the report)."

lint: $(BIN)/orchestrator
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest workers (pytest-xdist) by default, one per core of the CI machine; the modules that
# share the Docker engine run on one worker (tests/conftest.py). TEST_JOBS=0 runs serially.
TEST_JOBS ?= 2
test: $(BIN)/orchestrator system-deps agent-cli lint
	$(BIN)/pytest -q --durations=25 $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadgroup)

# `make dev`: the Dagster UI and the review UI (`orchestrator ui`) side by side, one port each.
DAGSTER_PORT ?= 3000
UI_PORT ?= 3001
dev: $(BIN)/orchestrator system-deps agent-cli
	$(BIN)/python -c "from orchestrator_assets.spec.settings import Settings, ensure_dagster_home; ensure_dagster_home(Settings())"
	@echo "Dagster UI: http://127.0.0.1:$(DAGSTER_PORT)   review UI: http://127.0.0.1:$(UI_PORT)"
	$(BIN)/orchestrator ui --port $(UI_PORT) & ui=$$!; trap "kill $$ui 2>/dev/null" EXIT INT TERM; \
	  $(BIN)/dagster dev -w workspace.yaml -p $(DAGSTER_PORT)

clean:
	rm -rf .demo .orchestrator .dagster_home .tools

# A Docker engine for the docker sandbox provider and the images: started when none answers
# (installed from Debian's docker.io when we are root).
docker-engine:
	scripts/docker-engine.sh

# The sandbox, example transformation and platform images, from Debian's mirror alone (no
# registry); fast when nothing changed. See images/README.md.
images: docker-engine
	CLAUDE_CODE_VERSION=$(CLAUDE_CODE_VERSION) images/build.sh all
