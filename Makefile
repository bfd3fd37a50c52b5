# Two commands do all set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   creates .venv, installs, runs `workbench demo` on the bundled mini K2
#   make test   creates .venv, installs with the dev extras, runs the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so nothing later pulls a multi-GB CUDA build. On this project's
# machines `torch==2.13.0` resolves to a local CPU wheel; elsewhere set TORCH_INDEX to PyTorch's CPU index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
CHROMIUM ?= /usr/bin/chromium
BWRAP ?= /usr/bin/bwrap
OUT ?= demo-out
# JavaScript the viewer tests load into Chromium (circuit-tracer's frontend needs d3, jetpack, dagre, pako;
# the Cytoscape.js test needs cytoscape), pinned, from the npm registry into a cache folder.
VIEWER_JS ?= .cache/viewer-js
VIEWER_JS_PACKAGES := d3@7.9.0 d3-collection@1.0.7 d3-jetpack@2.1.0 dagre@0.8.5 pako@2.1.0 cytoscape@3.30.2

.PHONY: demo test test-load lab lint typecheck bench chromium bubblewrap nodejs viewer-js plotly-bundles clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[model,lab,engines]" "$(TORCH_SPEC)"
	touch $@

# circuit-tracer (its frontend and local server, for the viewer test) with --no-deps: its own dependencies
# (CUDA torch, transformers 4) are not needed to serve the frontend and would clash with ours.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH_SPEC)"
	$(BIN)/pip install -q --no-deps "circuit-tracer==0.5.0"
	touch $@

# Static figure export (kaleido) and the browser test need a Chromium: Debian's package, never a download.
chromium:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: no Chromium at $(CHROMIUM); static PNG/SVG/PDF export and the browser test will be skipped"; }

# The agent's python tool runs model-written code only inside a bubblewrap sandbox: Debian's package.
bubblewrap:
	@test -x $(BWRAP) || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) || echo "warning: no bubblewrap at $(BWRAP); the agent's python tool will refuse to run and its sandbox tests will be skipped"; }

# The viewer tests load pinned npm packages; npm comes from Debian's nodejs/npm packages where missing.
nodejs:
	@command -v npm >/dev/null || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null) || echo "warning: no npm; the viewer browser tests will be skipped"; }

viewer-js: nodejs
	@test "$$(cat $(VIEWER_JS)/.packages 2>/dev/null)" = "$(VIEWER_JS_PACKAGES)" || { command -v npm >/dev/null && mkdir -p $(VIEWER_JS) && npm install --prefix $(VIEWER_JS) --no-audit --no-fund --silent $(VIEWER_JS_PACKAGES) && echo "$(VIEWER_JS_PACKAGES)" > $(VIEWER_JS)/.packages; } || echo "warning: npm install failed; the viewer browser tests will be skipped"

# Rebuild the partial plotly.js bundles the HTML pages inline (viz/assets/), after upgrading plotly.
plotly-bundles: $(VENV)/.installed nodejs
	$(BIN)/python tools/vendor_plotly.py

demo: $(VENV)/.installed chromium bubblewrap
	BROWSER_PATH=$(CHROMIUM) $(BIN)/workbench demo --out $(OUT)

test: $(VENV)/.installed-dev chromium bubblewrap viewer-js
	$(BIN)/ruff check .
	$(BIN)/mypy workbench hooks viz
	$(BIN)/python -m tools.lint_imports  # import-linter's lint-imports: the layer contracts (docs/architecture.md)
	BROWSER_PATH=$(CHROMIUM) VIEWER_JS=$(VIEWER_JS) $(BIN)/pytest -q

# The notebook and browser tests with three CPU burners beside them (stopped when the tests end, or
# after an hour at most): a loaded machine must make them slower, never stuck or failing.
test-load: $(VENV)/.installed-dev chromium bubblewrap
	BROWSER_PATH=$(CHROMIUM) $(BIN)/python tests/under_load.py --burners 3 -- \
		$(BIN)/pytest -q tests/test_notebooks.py tests/test_notebook_harness.py tests/test_browser.py

lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy workbench hooks viz

bench: $(VENV)/.installed-dev
	mkdir -p benchmarks/results
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b --out benchmarks/results || exit 1; done

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
